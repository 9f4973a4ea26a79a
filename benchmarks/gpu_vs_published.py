"""The GPU target's analytical estimate against published NB201 GPU latencies (no GPU needed).

For a seeded sample of NB201 cells (C=16, N=5, CIFAR-10 head: the network
the published tables measured), each cell is compiled once for
``gpu:1080ti`` with the default hardware config (the 1080 Ti and the TITAN
Xp are both compute capability 6.1, so the kernels are the same) and
priced by the analytical model for both devices. Printed: Kendall tau and
Spearman rho of the estimate against ``lat_ms_1080ti_1`` and
``lat_ms_titanxp_1`` of ``nb201/latency.csv`` (HW-NAS-Bench / HELP: batch 1,
PyTorch on those GPUs), and the median ratio published / estimated.

    python benchmarks/gpu_vs_published.py [--n 200] [--workers 2] [--seed 0]

About 4 s per cell and worker on one free core (TVM build + nvcc).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEVICES = {"1080ti": "lat_ms_1080ti_1", "titanxp": "lat_ms_titanxp_1"}


def estimate_cell(index: int) -> tuple[int, dict[str, float], int]:
    """(index, device -> estimated ms, kernel launches) of NB201 cell ``index``."""
    from hwnas.arch import get_space
    from hwnas.arch.nb201 import index_to_genome
    from hwnas.pipeline.evaluate import Candidate, compile_candidate
    from hwnas.targets import get_target
    from hwnas.targets.gpu.cost import estimate
    from hwnas.targets.gpu.devices import DEVICES as GPUS
    from hwnas.ir.workloads import extract

    space = get_space("nb201")
    target = get_target("gpu:1080ti")
    hw = target.hardware_space.validate({})
    with tempfile.TemporaryDirectory() as tmp:
        _, built, _ = compile_candidate(Candidate.from_space(space, index_to_genome(index), hw), target, hw,
                                        workdir=tmp, timings={})
    workloads = extract(built.module)
    out = {}
    for name in DEVICES:
        out[name], _ = estimate(GPUS[name], workloads, built.launches, built.ptxas, precision=hw["precision"],
                                staged=hw["shared"] == "both")
    return index, out, sum(w.calls for w in workloads)


def kendall_tau(a, b) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="cells to sample (default 200)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np

    from hwnas.data import require_data_file
    from hwnas.errors import DataNotFoundError

    try:
        path = require_data_file("nb201/latency.csv")
    except DataNotFoundError as exc:
        print(f"gpu_vs_published: {exc}", file=sys.stderr)
        return 2
    published: dict[str, dict[int, float]] = {d: {} for d in DEVICES}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for d, col in DEVICES.items():
                if row.get(col):
                    published[d][int(row["nb201_index"])] = float(row[col])
    indices = sorted(np.random.default_rng(args.seed).choice(15625, size=args.n, replace=False).tolist())
    t0 = time.time()
    results = []
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for done, result in enumerate(pool.map(estimate_cell, indices), 1):
            results.append(result)
            if done % 10 == 0 or done == len(indices):
                print(f"  {done}/{len(indices)} cells, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"{len(results)} NB201 cells compiled for gpu:1080ti and estimated in {time.time() - t0:.0f} s")
    print(f"{'device':10s} {'kendall':>8s} {'spearman':>9s} {'est ms (median)':>16s} {'published ms (median)':>22s} "
          f"{'published/est':>14s}")
    for d in DEVICES:
        est = [r[1][d] for r in results]
        pub = [published[d][r[0]] for r in results]
        ratio = statistics.median(p / e for p, e in zip(pub, est))
        print(f"{d:10s} {kendall_tau(est, pub):8.3f} {spearman(est, pub):9.3f} {statistics.median(est):16.4f} "
              f"{statistics.median(pub):22.4f} {ratio:14.1f}")
    kernels = [r[2] for r in results]
    pub = [published["1080ti"][r[0]] for r in results]
    print(f"for reference, kernel-launch count alone vs 1080ti: kendall {kendall_tau(kernels, pub):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
