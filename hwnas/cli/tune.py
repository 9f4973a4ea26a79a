"""``hwnas tune``: a user's ONNX model tuned for this CPU within a time budget, the fastest bundle written."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hwnas.cli.progress import StatusLine


class TuneBar(StatusLine):
    """``tune  [#####     ] 2m31s/10m  config 3/14 NCHWc8 winograd  best 12.41 ms  ONNX Runtime 10.22 ms``."""

    def __call__(self, state) -> None:
        now = time.monotonic()
        bar = "#" * int(24 * min(state.elapsed_s / state.budget_s, 1.0))
        elapsed = f"{int(state.elapsed_s // 60)}m{int(state.elapsed_s % 60):02d}s/{state.budget_s / 60:g}m"
        doing = f"config {state.index + 1}/{state.total} {state.current}" if state.current else \
            f"configs {state.index}/{state.total}"
        best = "-" if state.best_ms is None else f"{state.best_ms:.3f} ms ({state.best})"
        ort = "-" if state.ort_ms != state.ort_ms else f"{state.ort_ms:.3f} ms"
        line = (f"tune  [{bar:<24}] {elapsed}  {doing}  {state.workloads_tuned} workloads tuned  "
                f"best {best}  ONNX Runtime {ort}")
        # in a log: the first line and one per config measured (and every 30 s)
        self.show(line, now, edge=state.best_ms is None and state.index == 0 or not state.current)


def cmd_tune(args) -> int:
    from hwnas.pipeline.artifacts import check_out_dir, write_bundle
    from hwnas.pipeline.tune import check_options, label, tune_model

    # before any slow work: the budget, the target, the threads, the model
    check_options(args.onnx, args.target, budget_s=args.minutes * 60, threads=args.threads, trials=args.trials)
    out = Path(args.out).resolve()
    check_out_dir(out, args.overwrite)
    bar = TuneBar()
    print(f"tuning {args.onnx} for {args.target} within {args.minutes:g} min ...", file=sys.stderr)
    try:
        outcome = tune_model(args.onnx, args.target, budget_s=args.minutes * 60, threads=args.threads,
                             trials=args.trials, database=args.db, on_progress=bar)
    finally:
        bar.close()
    manifest = write_bundle(outcome.best, out, overwrite=args.overwrite)
    (manifest.parent / "tuning.json").write_text(json.dumps(outcome.record(), indent=1, default=str) + "\n")
    tried = sum(1 for s in outcome.steps if s.latency_ms is not None)
    failed = sum(1 for s in outcome.steps if s.latency_ms is None)
    print(f"configs:  {tried} measured" + (f", {failed} failed" if failed else "")
          + f"; stopped: {outcome.stopped}; {outcome.seconds:.0f} s")
    print(f"best:     {label(outcome.best.hw)}  {json.dumps(outcome.best.hw)}")
    print(f"bundle:   {manifest.parent}  (run: python {manifest.parent / 'run.py'})")
    print(f"hwnas {outcome.best_ms:.3f} ms, ONNX Runtime {outcome.ort_ms:.3f} ms: {outcome.ratio:.2f}x ONNX Runtime "
          f"(medians of alternating rounds in this process; output within {outcome.rel_error:.1e} of ONNX Runtime's)")
    return 0


def add_parser(sub) -> None:
    """Register ``hwnas tune`` in the command line's subparsers."""
    p = sub.add_parser("tune", help="tune your ONNX model for this CPU within a time budget; write the fastest "
                                    "bundle")
    p.add_argument("--onnx", required=True, help="the ONNX model (static shapes)")
    p.add_argument("--target", default="cpu", help="target with a tuned variant (default cpu)")
    p.add_argument("--minutes", type=float, required=True, help="tuning budget in minutes, all configs together")
    p.add_argument("--threads", type=int, help="runtime threads (default: each count from all the cores down)")
    p.add_argument("--trials", type=int, default=32, help="knob configs timed per new workload (default 32)")
    p.add_argument("--db", help="tuning database folder (default ~/.cache/hwnas/tuning or $HWNAS_TUNING_DB); "
                                "a second run with the same folder resumes")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=cmd_tune)
