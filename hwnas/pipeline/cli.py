"""The ``hwnas`` command line.

Every error a user can cause ends in one line on stderr and exit status 2;
a traceback is a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hwnas.errors import HwnasError, InvalidConfigError, InvalidGenomeError

log = logging.getLogger("hwnas")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message}\n")


def _json_arg(text: str, *, what: str, kind: type, error: type[HwnasError]):
    try:
        value = json.loads(text)
    except ValueError:
        raise error(f"{what} must be JSON, got {text!r}") from None
    if not isinstance(value, kind):
        raise error(f"{what} must be a JSON {'list' if kind is list else 'object'}, got {text!r}")
    return value


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def cmd_targets(args) -> int:
    from hwnas.targets import get_target, target_names

    for name in target_names():
        t = get_target(name)
        print(f"{t.spec}: {t.description}")
        print(f"  metrics: {', '.join(t.metrics)}")
        print(f"  cost methods: {', '.join(t.cost_methods)} (default {t.cost_methods[0]})")
        rows = t.hardware_space.describe()
        print("  " + _table(rows, ("knob", "values", "default", "meaning")).replace("\n", "\n  "))
        print()
    return 0


def cmd_spaces(args) -> int:
    from hwnas.arch import get_space, space_names

    rows = []
    for name in space_names():
        s = get_space(name)
        rows.append((name, str(s.size), f"{s.num_candidates:.3g}", s.description))
    print(_table(rows, ("space", "genes", "networks", "description")))
    return 0


def _format_metric(name: str, value: float) -> str:
    if name == "macs":
        return f"{value / 1e6:.2f} M"
    return f"{value:.4g}"


def cmd_compile(args) -> int:
    import numpy as np

    from hwnas.arch import get_space
    from hwnas.pipeline.artifacts import check_out_dir, write_bundle
    from hwnas.pipeline.evaluate import Candidate, evaluate
    from hwnas.pipeline.lower import load_onnx
    from hwnas.targets import get_target

    target = get_target(args.target)
    hw = _json_arg(args.hw, what="--hw", kind=dict, error=InvalidConfigError) if args.hw else {}
    if args.onnx:
        if args.space or args.genome:
            raise InvalidConfigError("--onnx replaces --space and --genome; give one or the other")
        load_onnx(args.onnx)  # fail fast on a bad file
        candidate = Candidate.from_onnx(args.onnx, hw)
    else:
        space = get_space(args.space or "mbv2")
        if args.genome:
            genome = _json_arg(args.genome, what="--genome", kind=list, error=InvalidGenomeError)
        else:
            genome = list(space.sample(np.random.default_rng(args.seed)))
            print(f"no --genome given: sampled {json.dumps(genome)} (seed {args.seed})", file=sys.stderr)
        candidate = Candidate.from_space(space, genome, hw)
    target.hardware_space.validate(hw)  # before any slow work
    target.cost_method(args.cost)
    if args.repeats is not None:
        if args.repeats < 1:
            raise InvalidConfigError(f"--repeats must be >= 1, got {args.repeats}")
        target.repeats = args.repeats
    check_out_dir(Path(args.out).resolve(), args.overwrite)  # before any slow work
    print(f"compiling for {target.spec} ...", file=sys.stderr)
    ev = evaluate(candidate, target, cost=args.cost)
    manifest = write_bundle(ev, args.out, overwrite=args.overwrite)
    arch = candidate.architecture()
    print(f"architecture: {arch.get('description') or arch.get('onnx')}")
    print(f"hardware:     {json.dumps(ev.hw)}")
    for k, v in ev.metrics.items():
        print(f"  {k:16s} {_format_metric(k, v)}")
    print(f"bundle:       {manifest.parent}  (run: python {manifest.parent / 'run.py'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hwnas", description="hardware-aware neural architecture search through Apache TVM")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("targets", help="list the targets, their metrics and hardware knobs")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("spaces", help="list the architecture search spaces")
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("compile", help="compile one candidate, cost it, and write a deployable bundle")
    p.add_argument("--space", help="architecture space (default mbv2 unless --onnx)")
    p.add_argument("--genome", help="JSON list of ints (default: a genome sampled with --seed)")
    p.add_argument("--onnx", help="your own ONNX model instead of a space: only the hardware is searched")
    p.add_argument("--target", default="cpu", help="target (default cpu); see `hwnas targets`")
    p.add_argument("--hw", help="JSON object of hardware knobs; missing knobs take their defaults")
    p.add_argument("--cost", help="cost method (default: the target's first)")
    p.add_argument("--repeats", type=int, help="measurement repeats (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed for a sampled genome (default 0)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=cmd_compile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except HwnasError as exc:
        print(f"hwnas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
