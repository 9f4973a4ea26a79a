"""Well-known architectures at 224x224: hwnas tuned and plain against ONNX Runtime and torch eager, in one process.

For each network of ``benchmarks/zoo_models.py`` (random weights, batch 1)
the script

1. exports it to ONNX and tunes it as ``hwnas tune`` does
   (:func:`hwnas.pipeline.tune.tune_model`: the layouts, packs and Winograd
   searched with the per-workload knob tuning inside) within ``--tune-minutes``
   (one tuning database per network under ``--state``, so a second run resumes it);
2. compiles it with plain ``cpu`` (the default knobs);
3. checks both artifacts' outputs against ONNX Runtime (relative 1e-4 of the largest logit);
4. times ONNX Runtime (as it comes, and with its pool threads not spinning:
   much faster on a loaded machine), torch eager and the two artifacts in ``--rounds`` rounds
   (each round: ``--per-round`` consecutive samples per runtime, the order turning
   from round to round; a sample is the mean of enough calls to last 20 ms);
   the table gives the medians, and the spread (half the interquartile range,
   relative) of the tuned/ORT ratio over the rounds;
   With ``--reuse`` nothing is tuned: each network's config from its last row in
   ``--state``/results.json is rebuilt from its tuning database (the table says when it was tuned);
5. with ``--profile``: times each kernel of the tuned artifact alone (as the
   ``lut`` cost method does) and inside the network (the VM's instrument hook
   around every call), and prints the kernels with the largest share, both ways.

Every runtime uses ``--threads`` threads. Results are appended to
``--state``/results.json as each network finishes.

    python benchmarks/cpu_model_zoo.py [--models resnet18,...] [--tune-minutes 10] [--threads 2]
                                       [--state DIR] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo_models import MODELS, build as build_net  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default all: {','.join(MODELS)})")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--tune-minutes", type=float, default=10.0, help="tuning budget per network (default 10)")
parser.add_argument("--trials", type=int, default=32, help="knob configs timed per workload (default 32)")
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--per-round", type=int, default=10, help="samples per runtime and round (default 10)")
parser.add_argument("--state", default="zoo-state", help="tuning databases, ONNX files and results.json")
parser.add_argument("--reuse", action="store_true",
                    help="tune nothing: rebuild each network's tuned config (its last row in --state/results.json) "
                         "from its tuning database, e.g. to time the same tuning after a compiler change")
parser.add_argument("--profile", action="store_true",
                    help="time the tuned artifact's kernels alone and inside the network; print the top")
args = parser.parse_args()
os.environ["TVM_NUM_THREADS"] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hwnas.errors import HwnasError  # noqa: E402
from hwnas.ir import runtime as measure  # noqa: E402
from hwnas.ir.lower import export_onnx  # noqa: E402
from hwnas.pipeline.evaluate import Candidate, evaluate  # noqa: E402
from hwnas.pipeline.tune import OrtRunner, in_rounds, label, relative_error, tune_model, vm_runner  # noqa: E402
from hwnas.targets import get_target  # noqa: E402

RTOL = 1e-4


def in_network(built, arrays: list, runs: int = 30) -> dict[str, float]:
    """Milliseconds per inference spent in each function the VM calls (kernels and the VM's builtins,
    e.g. storage allocation), timed inside the network by the VM's instrument hook: the kernels as they
    run there, after one another, with their weights and inputs wherever the previous kernels left the
    caches. Each call's figure includes a few microseconds of the hook itself."""
    import collections

    import tvm
    from tvm import relax

    dev = tvm.cpu()
    vm = relax.VirtualMachine(built.executable, dev)
    args = [tvm.runtime.tensor(a, dev) for a in arrays]
    main = vm["main"]
    main(*args)
    spent: dict[str, float] = collections.defaultdict(float)
    started = [0.0]

    def hook(func, symbol, before, ret, *rest):
        now = time.perf_counter()
        if before:
            started[0] = now
        else:
            spent[str(symbol)] += now - started[0]
        return 0

    vm.set_instrument(hook)
    main(*args)
    spent.clear()
    for _ in range(runs):
        main(*args)
    return {k: v / runs * 1e3 for k, v in spent.items()}


def profile(built, arrays: list, top: int = 8) -> tuple[list[tuple[str, int, float, float, float]], float, float]:
    """(kernel, calls, ms per call alone, share of the kernels' sum alone, ms per inference in the network)
    of the ``top`` kernels by time alone; the kernels' sum alone; the sum of every VM call in the network."""
    from hwnas.ir.workloads import extract, prim_funcs

    funcs = prim_funcs(built.module)
    rows = [(w.func, w.calls, measure.measure_kernel(funcs[w.func], built.tvm_target, repeats=5, min_repeat_ms=5))
            for w in extract(built.module)]
    total = sum(calls * ms for _, calls, ms in rows)
    inside = in_network(built, arrays)
    rows.sort(key=lambda r: -r[1] * r[2])
    return ([(f, c, ms, c * ms / total, inside.get(f, float("nan"))) for f, c, ms in rows[:top]], total,
            sum(inside.values()))


def rebuild(name: str, state: Path, onnx_path: Path) -> tuple[object, dict]:
    """The tuned build of the config in ``name``'s last row of ``state``/results.json, from its tuning
    database, tuning nothing; and that row's tuning figures."""
    kept = json.loads((state / "results.json").read_text()) if (state / "results.json").exists() else []
    earlier = [r for r in kept if r["model"] == name]
    if not earlier or not (state / f"db-{name}").is_dir():
        raise HwnasError(f"--reuse: no earlier row or tuning database for {name} in {state}")
    row = earlier[-1]
    target = get_target("cpu:tuned")
    target.tuning_root, target.tune_budget_s = state / f"db-{name}", 0.0
    hw = [c for c in target.network_configs(args.threads) if label(c) == row["layout"]]
    if not hw:
        raise HwnasError(f"--reuse: {name}'s config {row['layout']!r} is not one of cpu:tuned's")
    tuned = evaluate(Candidate.from_onnx(onnx_path, hw[0]), target, cost="measure")
    figures = {k: row[k] for k in ("tune_s", "budget_min", "stopped", "configs", "workloads_tuned")}
    return tuned, {**figures, "tuned_on": row.get("tuned_on", row["date"])}


def run_model(name: str, state: Path) -> dict:
    torch.set_num_threads(args.threads)
    net = build_net(name)
    onnx_path = state / f"{name}.onnx"
    export_onnx(net, (1, 3, 224, 224), onnx_path)
    if args.reuse:
        tuned, tuning = rebuild(name, state, onnx_path)
        print(f"{name}: rebuilt {label(tuned.hw)} from the tuning of {tuning['tuned_on']}", file=sys.stderr,
              flush=True)
    else:
        t0 = time.perf_counter()
        outcome = tune_model(onnx_path, "cpu", budget_s=args.tune_minutes * 60, threads=args.threads,
                             trials=args.trials, database=state / f"db-{name}", on_progress=lambda s: None)
        tuned = outcome.best
        tuning = {"tune_s": time.perf_counter() - t0, "budget_min": args.tune_minutes, "stopped": outcome.stopped,
                  "configs": len(outcome.steps),
                  "workloads_tuned": int(sum(s.counters.get("tuning_tuned", 0) for s in outcome.steps))}
        print(f"{name}: tuned in {tuning['tune_s']:.0f} s ({outcome.stopped}): {label(tuned.hw)}; closing rounds "
              f"{outcome.best_ms:.3f} ms vs ORT {outcome.ort_ms:.3f} ms", file=sys.stderr, flush=True)
    plain = evaluate(Candidate.from_onnx(onnx_path, {"num_threads": args.threads}), get_target("cpu"), cost="measure")

    x = measure.random_inputs(tuned.built.inputs)
    arrays = list(x.values())
    ort = OrtRunner(onnx_path, x, args.threads)
    reference = ort()[0]
    xt = torch.from_numpy(arrays[0])

    def torch_run():
        with torch.inference_mode():
            return net(xt)

    # ONNX Runtime as it comes, and with its pool threads not spinning (faster on a loaded machine)
    runtimes = {"ort": ort, "ort_nospin": OrtRunner(onnx_path, x, args.threads, spinning=False),
                "torch": torch_run}
    errors = {"torch": relative_error(torch_run().numpy(), reference)}
    for key, ev in (("plain", plain), ("tuned", tuned)):
        runtimes[key], out = vm_runner(ev.built, arrays)
        errors[key] = relative_error(out, reference)
    measure.set_num_threads(args.threads)
    samples = in_rounds(runtimes, rounds=args.rounds, per_round=args.per_round)
    ms = {k: statistics.median(v) for k, v in samples.items()}
    # the ratio per round (median of each round's samples), to show how much it moved
    per = args.per_round
    ratios = [statistics.median(samples["tuned"][r * per:(r + 1) * per])
              / statistics.median(samples["ort"][r * per:(r + 1) * per]) for r in range(args.rounds)]
    row = {"model": name, "ms": ms, "ratio": ms["tuned"] / ms["ort"], "round_ratios": ratios, "errors": errors,
           "ratio_best_ort": ms["tuned"] / min(ms["ort"], ms["ort_nospin"]),
           "samples_ms": samples,
           "layout": label(tuned.hw), **tuning,
           "workloads_untuned": int(tuned.timings.get("tuning_untuned", 0)),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": measure.host_cpu(),
           "threads": args.threads}
    bad = {k: e for k, e in errors.items() if k != "torch" and e > RTOL}
    if bad:
        row["failed_check"] = bad
        print(f"{name}: differs from ONNX Runtime: {bad}", file=sys.stderr)
    if args.profile:
        top, total, inside = profile(tuned.built, list(x.values()))
        row["profile"] = {"kernels_sum_ms": total, "in_network_ms": inside, "top": top}
        print(f"{name}: kernels alone sum to {total:.3f} ms, every VM call in the network to {inside:.3f} ms; "
              f"largest shares alone (share, ms per call alone x calls, ms per inference in the network):",
              file=sys.stderr)
        for func, calls, kms, share, net_ms in top:
            print(f"    {share * 100:5.1f}%  {kms:.4f} ms x {calls}  in network {net_ms:.4f} ms  {func}",
                  file=sys.stderr)
    return row


def print_table(rows: list[dict]) -> None:
    print(f"\nCPU {rows[0]['cpu']}, {args.threads} threads, batch 1, 224x224; median of {args.rounds} rounds x "
          f"{args.per_round} samples (ms)\n")
    header = ("model", "ORT ms", "ORT no-spin ms", "torch ms", "hwnas plain ms", "hwnas tuned ms",
              "tuned / ORT (rounds)", "tuned / faster ORT",
              "layout", "tuning s / budget", "max rel err vs ORT")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        ms = r["ms"]
        spread = f"{min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f}"
        err = max(v for k, v in r["errors"].items() if k != "torch")
        print(f"| {r['model']} | {ms['ort']:.2f} | {ms['ort_nospin']:.2f} | {ms['torch']:.2f} | {ms['plain']:.2f} | "
              f"{ms['tuned']:.2f} | {r['ratio']:.2f}x ({spread}) | {r['ratio_best_ort']:.2f}x | {r['layout']} | "
              f"{r['tune_s']:.0f} / {r['budget_min'] * 60:.0f} "
              f"({r['configs']} configs, {r['workloads_tuned']} workloads"
              f"{', tuned ' + r['tuned_on'] if 'tuned_on' in r else ''}) | {err:.1e} |")
    for key, what in (("ratio", "ORT"), ("ratio_best_ort", "the faster ORT")):
        ratios = [r[key] for r in rows]
        print(f"median tuned / {what} {statistics.median(ratios):.2f}x; worst {max(ratios):.2f}x ({len(rows)} models)")


def main() -> int:
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    results_file = state / "results.json"
    rows, failed = [], []
    for name in args.models.split(","):
        if name not in MODELS:
            print(f"unknown model {name!r}; known: {', '.join(MODELS)}", file=sys.stderr)
            return 2
        try:
            row = run_model(name, state)
        except HwnasError as exc:  # a model hwnas cannot compile is reported, the others still run
            print(f"{name}: failed: {exc}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        rows.append(row)
        kept = json.loads(results_file.read_text()) if results_file.exists() else []
        kept.append(row)
        results_file.write_text(json.dumps(kept, indent=1, default=float))
        print_table([row])
    if rows:
        print_table(rows)
    if failed:
        print(f"failed to compile: {', '.join(failed)}")
    return 1 if failed or any("failed_check" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
