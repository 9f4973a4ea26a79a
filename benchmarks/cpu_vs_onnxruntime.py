"""hwnas's compiled CPU artifact against ONNX Runtime and torch eager, in one process.

For each benchmark network (mbv2 at 96x96, nb201, fbnet) the script

1. tunes the hwnas artifact, within ``--tune-minutes`` per network in all:
   the network is built with ``cpu:tuned`` (the schedule knobs of each conv
   and dense workload chosen by timing ``--trials`` configs of it, see
   :mod:`hwnas.targets.cpu.tuned_knobs`) for each layout of the CPU's HSS in turn
   (NCHWc with packs 16, 8, 4, each with its 3x3 convs direct or by Winograd
   (``conv_algo``), and NCHW; one fresh tuning database per network, so a
   workload two layouts share is tuned once and the tuning time is the real
   cost), and the fastest whole network is kept. A Winograd layout that
   changes no conv of the network is not kept as a separate choice;
2. checks every artifact's output against ONNX Runtime (1e-4);
3. times ONNX Runtime, torch eager and the artifacts in 3 rounds: in each
   round every runtime takes a third of its ``--repeats`` samples in a row
   (a sample is the mean of enough back-to-back calls to last 20 ms), the
   order turning from round to round; the table gives the medians.

Every runtime uses ``--threads`` threads. With ``--state DIR`` the tuning
outcome of each network (the layout, the database, the seconds spent) is kept
in DIR and reused by a later run, which then only measures: tune once
(``--tune-only``), measure on a quiet machine later. Tune on a quiet machine
too: the per-workload choice is made by timing.

    python benchmarks/cpu_vs_onnxruntime.py [--threads 2] [--repeats 30] [--tune-minutes 10] [--trials 32]
                                            [--state DIR [--tune-only]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeats", type=int, default=30, help="samples per runtime (default 30)")
parser.add_argument("--tune-minutes", type=float, default=10.0,
                    help="tuning budget per network, all layouts together (default 10)")
parser.add_argument("--trials", type=int, default=32, help="knob configs timed per workload (default 32)")
parser.add_argument("--networks", default="mbv2,nb201,fbnet")
parser.add_argument("--state", help="folder keeping each network's tuning outcome (reused when present)")
parser.add_argument("--tune-only", action="store_true", help="with --state: tune the networks not yet tuned, then stop")
args = parser.parse_args()
if args.tune_only and not args.state:
    parser.error("--tune-only needs --state")
# the artifacts and the measurements all run with the same thread pool size
os.environ["TVM_NUM_THREADS"] = str(args.threads)

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from hwnas.arch import get_space  # noqa: E402
from hwnas.pipeline.evaluate import Candidate, compile_candidate, evaluate  # noqa: E402
from hwnas.pipeline.tune import sampler as block_of  # noqa: E402  (one sample lasts tune.MIN_SAMPLE_S, 20 ms)
from hwnas.targets import get_target  # noqa: E402

#: rounds the samples of each runtime are spread over (see ``in_rounds``)
ROUNDS = 3

#: fixed benchmark networks (genomes documented in the README)
NETWORKS = {
    # mbv2: per stage (kernel, expansion, depth) indices, then width 1.0 and resolution 96
    "mbv2": ("mbv2", {}, None),
    # nb201: the best CIFAR-10 cell of NAS-Bench-201
    "nb201": ("nb201", {}, "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
    # fbnet: k3_e3 everywhere
    "fbnet": ("fbnet", {}, None),
}


def genome_for(name: str, space) -> list[int]:
    if name == "nb201":
        from hwnas.arch.nb201 import arch_str_to_genome

        return list(arch_str_to_genome(NETWORKS[name][2]))
    if name == "fbnet":
        return [2] * space.size  # k3_e3 in every layer
    # mbv2: kernel 3 (index 0), expansion 6 (2), depth 2 (1) in each of the 6 stages; width 1.0; 96x96
    return [0, 2, 1] * 6 + [space.widths.index(1.0), space.resolutions.index(96)]


#: seconds of the budget kept for timing the tuned layouts again (``choose``)
CHOOSE_S = 60

#: the network-wide layouts tried, most promising first (the CPU's ``layout`` x ``pack`` x ``conv_algo`` knobs,
#: as ``hwnas tune`` tries them)
LAYOUTS = get_target("cpu").TUNE_LAYOUTS
#: the knobs a tuning outcome keeps (the rest are cpu:tuned's per workload)
KEPT = ("layout", "pack", "conv_algo", "num_threads")


def label(hw: dict) -> str:
    """``NCHWc16``, ``NCHWc16 winograd``, ``NCHW``."""
    text = hw["layout"] + (str(hw["pack"]) if hw["layout"] == "NCHWc" else "")
    return text + (" winograd" if hw.get("conv_algo") == "winograd" else "")


def uses_winograd(built) -> bool:
    from hwnas.targets.cpu.winograd import CONV2D_NCHWC_WINOGRAD

    return any(CONV2D_NCHWC_WINOGRAD in gv.name_hint for gv, _ in built.module.functions_items())


def in_rounds(runtimes: dict[str, object]) -> dict[str, float]:
    """Median ms of each runtime over ``args.repeats`` samples taken in ``ROUNDS`` rounds.

    In each round every runtime takes a run of consecutive samples, after a
    warm-up, and the order of the runtimes turns by one from round to round:
    a drift of the machine over the minutes of the run hits them all alike,
    while no runtime is timed right after a switch, against another's thread
    pool (ONNX Runtime timed in strict alternation with the TVM artifact ran
    2-3x slower than alone here).
    """
    names = list(runtimes)
    per_round = -(-args.repeats // ROUNDS)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(ROUNDS):
        for name in names[r % len(names):] + names[: r % len(names)]:
            sample = block_of(runtimes[name])
            samples[name] += [sample() for _ in range(per_round)]
    return {name: statistics.median(values) for name, values in samples.items()}


def vm_call(built, x: np.ndarray):
    """A zero-argument callable running the artifact's ``main`` on ``x``, and its output."""
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    vm = relax.VirtualMachine(built.executable, dev)
    arg = tvm.runtime.tensor(x, dev)
    main = vm["main"]

    def run():
        return main(arg)

    out = run()
    if not hasattr(out, "numpy"):  # a tuple of outputs: the first is the logits
        out = out[0]
    return run, out.numpy()


def float_cpu(spec: str):
    """The CPU target with its quantization knobs held at float: the artifacts compute what ONNX Runtime does."""
    target = get_target(spec)
    target.hardware_space = target.hardware_space.fixed(target.deployment_knobs, "the float network is compared")
    return target


def tune(name: str, space, genome, threads: dict, budget_s: float, workdir: str, state: str | None):
    """cpu:tuned for each layout within ``budget_s``: (best layout hw, database, info).

    With ``state``, a network tuned before is not tuned again: its outcome is read back.
    """
    saved = os.path.join(state, f"{name}.json") if state else None
    if saved and os.path.exists(saved):
        with open(saved) as f:
            kept = json.load(f)
        print(f"{name}: tuning outcome read from {saved}", file=sys.stderr)
        return kept["best_hw"], kept["database"], kept["info"]
    database = tempfile.mkdtemp(prefix=f"tuning-{name}-", dir=state or workdir)
    os.environ["HWNAS_TUNING_DB"] = database
    t0 = time.perf_counter()
    tuned, tried, built = 0, [], 0
    for layout in LAYOUTS:
        elapsed = time.perf_counter() - t0
        if built and elapsed + elapsed / built > budget_s - CHOOSE_S:
            break  # the next layout would not fit (at the mean time of those so far; later ones reuse workloads)
        target = float_cpu("cpu:tuned")
        target.tune_trials, target.tune_budget_s = args.trials, budget_s - CHOOSE_S - elapsed
        target.set_measure_options(repeats=10)
        ev = evaluate(Candidate.from_space(space, genome, {**layout, **threads}), target, workdir=workdir)
        tuned += int(ev.timings.get("tuning_tuned", 0))
        built += 1
        if layout["conv_algo"] == "winograd" and not uses_winograd(ev.built):
            print(f"{name}: {label(layout)}: no conv takes Winograd; the direct layout stands for it", file=sys.stderr)
            continue
        tried.append(ev)
        print(f"{name}: {label(layout)}: {ev.metrics['latency_ms']:.3f} ms ({int(ev.timings.get('tuning_tuned', 0))} "
              f"workloads tuned, {int(ev.timings.get('tuning_reused', 0))} reused, "
              f"{int(ev.timings.get('tuning_untuned', 0))} left to the knobs)", file=sys.stderr)
    # one measurement right after minutes of tuning can be off (a busy neighbour, a slow phase of the VM):
    # the layouts' tuned builds are timed again together, in rounds, and the best median decides
    best = choose(name, tried, space, genome, workdir, database)
    untuned = int(best.timings.get("tuning_untuned", 0))
    info = {"tune_s": time.perf_counter() - t0, "layouts": len(tried), "tuned": tuned, "untuned": untuned,
            "budget_s": budget_s}
    best_hw = {k: best.hw[k] for k in KEPT}
    print(f"{name}: {len(tried)} layouts, {tuned} workloads tuned in {info['tune_s']:.0f} s, best {best_hw}",
          file=sys.stderr)
    if saved:
        with open(saved, "w") as f:
            json.dump({"best_hw": best_hw, "database": database, "info": info}, f, indent=1, default=int)
    return best_hw, database, info


def choose(name: str, tried: list, space, genome, workdir: str, database: str):
    """The evaluation of ``tried`` whose tuned build has the lowest median over ``ROUNDS`` rounds of timing."""
    from hwnas.ir import runtime as measure

    if len(tried) == 1:
        return tried[0]
    executables = [ev.built.executable for ev in tried]  # as tuned: rebuilding them all cost over a minute
    arrays = list(measure.random_inputs(tried[0].built.inputs).values())
    medians: list[list[float]] = [[] for _ in tried]
    for _ in range(ROUNDS):
        for i, executable in enumerate(executables):
            medians[i].append(measure.measure_vm(executable, arrays, repeats=10).median_ms)
    best = min(range(len(tried)), key=lambda i: statistics.median(medians[i]))
    print(f"{name}: timed again in {ROUNDS} rounds: " + ", ".join(
        f"{label(ev.hw)} {statistics.median(m):.3f} ms" for ev, m in zip(tried, medians)), file=sys.stderr)
    return tried[best]


def build(space, genome, hw: dict, workdir: str, database: str | None = None):
    """Compile the network with ``hw`` (with ``database``: cpu:tuned from its records, no new tuning)."""
    timings: dict[str, float] = {}
    if database is None:
        target = float_cpu("cpu")
    else:
        os.environ["HWNAS_TUNING_DB"] = database
        target = float_cpu("cpu:tuned")
        target.tune_budget_s = 0.0  # what the budget did not reach keeps the knobs' schedules
    hw = {**target.hardware_space.default(), **hw}
    model, built, onnx_path = compile_candidate(Candidate.from_space(space, genome, hw), target, hw, workdir=workdir,
                                                timings=timings)
    return built, onnx_path


def main() -> int:
    torch.set_num_threads(args.threads)
    threads = {"num_threads": min(args.threads, get_target("cpu").cores)}
    rows = []
    for name in args.networks.split(","):
        space_name, options, _ = NETWORKS[name]
        space = get_space(space_name, **options)
        genome = genome_for(name, space)
        net = space.build(genome)
        if args.state:
            os.makedirs(args.state, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            best_hw, database, info = tune(name, space, genome, threads, args.tune_minutes * 60, tmp, args.state)
            if args.tune_only:
                continue
            builds = {"default": build(space, genome, threads, tmp), "tuned": build(space, genome, best_hw, tmp, database)}
            x = np.random.default_rng(0).standard_normal(space.input_shape(genome)).astype("float32")
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(builds["default"][1]), so, providers=["CPUExecutionProvider"])
            reference = sess.run(None, {"input": x})[0]
            xt = torch.from_numpy(x)
            runtimes = {"ort": lambda: sess.run(None, {"input": x})}

            def torch_run():
                with torch.inference_mode():
                    return net(xt)

            runtimes["torch"] = torch_run
            errors = {}
            for key, (built, _) in builds.items():
                runtimes[key], out = vm_call(built, x)
                errors[key] = float(np.max(np.abs(out - reference)))
                if not np.allclose(out, reference, rtol=1e-4, atol=1e-4):
                    print(f"{name}: the {key} artifact differs from ONNX Runtime by {errors[key]:.2e}", file=sys.stderr)
                    return 1
            ms = in_rounds(runtimes)
        rows.append((name, ms, best_hw, info, max(errors.values())))

    if args.tune_only:
        print(f"tuned; outcome kept in {args.state}")
        return 0
    from hwnas.ir.runtime import host_cpu

    budgets = sorted({r[3]["budget_s"] / 60 for r in rows})
    print(f"\nCPU {host_cpu()}, {args.threads} threads; median of {args.repeats} samples in {ROUNDS} rounds (ms); "
          f"tuning budget {', '.join(f'{b:g}' for b in budgets)} min per network\n")
    header = ("network", "ORT ms", "torch ms", "hwnas default ms", "hwnas tuned ms", "tuned / ORT", "layout",
              "tuning s (layouts, workloads)", "max |err| vs ORT")
    print(" | ".join(header))
    print(" | ".join("-" * len(h) for h in header))
    for name, ms, hw, info, err in rows:
        layout = label(hw)
        tuning = (f"{info['tune_s']:.0f} ({info['layouts']} layouts, {info['tuned']} workloads"
                  + (f", {info['untuned']} left" if info["untuned"] else "") + ")")
        print(f"{name} | {ms['ort']:.3f} | {ms['torch']:.3f} | {ms['default']:.3f} | {ms['tuned']:.3f} | "
              f"{ms['tuned'] / ms['ort']:.2f}x | {layout} | {tuning} | {err:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
