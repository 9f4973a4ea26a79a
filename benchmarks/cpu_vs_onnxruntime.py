"""hwnas's compiled CPU artifact against ONNX Runtime and torch eager, in one process.

For an mbv2 network at 96x96, an nb201 network and an fbnet network: the
latency of the artifact with the default hardware config and with the best
config of a small HSS sweep, ONNX Runtime and torch eager on the same ONNX /
module, all with the same number of threads; the median of >= 30 samples,
each sample the mean of enough back-to-back runs to last 20 ms.

    python benchmarks/cpu_vs_onnxruntime.py [--threads 2] [--repeats 30] [--sweep 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# the sweep's candidates must all run with the same thread pool size
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeats", type=int, default=30)
parser.add_argument("--sweep", type=int, default=12, help="random HSS configs tried per network (plus hand-picked)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--networks", default="mbv2,nb201,fbnet")
args = parser.parse_args()
os.environ["TVM_NUM_THREADS"] = str(args.threads)

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from hwnas.arch import get_space  # noqa: E402
from hwnas.pipeline.evaluate import Candidate, evaluate  # noqa: E402
from hwnas.targets import get_target  # noqa: E402

MIN_SAMPLE_S = 0.020

#: fixed benchmark networks (genomes documented in the README)
NETWORKS = {
    # mbv2: per stage (kernel, expansion, depth) indices, then width 1.0 and resolution 96
    "mbv2": ("mbv2", {}, None),
    # nb201: the best CIFAR-10 cell of NAS-Bench-201
    "nb201": ("nb201", {}, "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
    # fbnet: k3_e3 everywhere
    "fbnet": ("fbnet", {}, None),
}


def timed(fn) -> float:
    """Median over ``args.repeats`` samples of the mean time (ms) of a block of calls lasting >= 20 ms."""
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    number = max(1, int(MIN_SAMPLE_S / one))
    samples = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number * 1e3)
    return statistics.median(samples)


def genome_for(name: str, space) -> list[int]:
    if name == "nb201":
        from hwnas.arch.nb201 import arch_str_to_genome

        return list(arch_str_to_genome(NETWORKS[name][2]))
    if name == "fbnet":
        return [2] * space.size  # k3_e3 in every layer
    # mbv2: kernel 3 (index 0), expansion 6 (2), depth 2 (1) in each of the 6 stages; width 1.0; 96x96
    return [0, 2, 1] * 6 + [space.widths.index(1.0), space.resolutions.index(96)]


def hand_picked(target) -> list[dict]:
    space = target.hardware_space
    picks = []
    for layout in space.params["layout"].values:
        for tile_oc, tile_ow, lanes in ((8, 8, 8), (16, 4, 16), (32, 8, 16), (8, 32, 16)):
            picks.append({"layout": layout, "tile_oc": tile_oc, "tile_ow": tile_ow, "vector_width": lanes})
    return picks


def main() -> int:
    target = get_target("cpu")
    target.repeats = args.repeats
    threads = {"num_threads": min(args.threads, target.cores)}
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    rows = []
    for name in args.networks.split(","):
        space_name, options, _ = NETWORKS[name]
        space = get_space(space_name, **options)
        genome = genome_for(name, space)
        net = space.build(genome)
        with tempfile.TemporaryDirectory() as tmp:
            default = evaluate(Candidate.from_space(space, genome, threads), target, workdir=tmp)
            x = np.random.default_rng(0).standard_normal(space.input_shape(genome)).astype("float32")
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(default.onnx_path), so, providers=["CPUExecutionProvider"])
            ort_ms = timed(lambda: sess.run(None, {"input": x}))
            xt = torch.from_numpy(x)
            with torch.inference_mode():
                torch_ms = timed(lambda: net(xt))
            t0 = time.perf_counter()
            configs = hand_picked(target)
            for _ in range(args.sweep):
                configs.append(target.hardware_space.sample(rng))
            best = worst = default
            for hw in configs:
                hw = {**hw, **threads}
                if not target.hardware_space.is_valid(hw):
                    continue
                ev = evaluate(Candidate.from_space(space, genome, hw), target, workdir=tmp)
                if ev.metrics["latency_ms"] < best.metrics["latency_ms"]:
                    best = ev
                if ev.metrics["latency_ms"] > worst.metrics["latency_ms"]:
                    worst = ev
            sweep_s = time.perf_counter() - t0
        d = default.metrics["latency_ms"]
        b = best.metrics["latency_ms"]
        rows.append((name, space.describe(genome)[:40], ort_ms, torch_ms, d, d / ort_ms, b, b / ort_ms,
                     sweep_s, len(configs), worst.metrics["latency_ms"]))
        print(f"{name}: best config {best.hw}", file=sys.stderr)
    from hwnas.targets.cpu import host_cpu

    print(f"\nCPU {host_cpu()}, {args.threads} threads, median of {args.repeats} samples (ms)\n")
    header = ("network", "ORT ms", "torch ms", "hwnas default ms", "ratio", "hwnas best ms", "ratio",
              "sweep worst ms", "sweep s (configs)")
    print(" | ".join(header))
    print(" | ".join("-" * len(h) for h in header))
    for r in rows:
        print(f"{r[0]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.2f}x | {r[6]:.3f} | {r[7]:.2f}x | "
              f"{r[10]:.3f} | {r[8]:.0f} ({r[9]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
