"""The default search against random search when evaluations are real: nb201 x ``cpu`` (every candidate
exported, compiled by TVM and its latency measured on this machine), NAS-Bench-201 table accuracy.

Each method runs the real :class:`hwnas.search.driver.Search` for each seed into its own folder
(``--out``; a killed run resumes there). There is no exact front here, so each run's hypervolume
(accuracy x latency, every evaluated point) is divided by that of the best front seen over all runs
of all methods; the reference point is the median accuracy and median latency of every point
evaluated by any run. Latency is measured: runs taken on a busy machine are noisy.

    python benchmarks/search_real_cost.py [--budget 40] [--seeds 3] [--workers 1] [--out runs/real-cost]

Needs the published data (``nb201/accuracy.csv``); without it the script stops with one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from pymoo.indicators.hv import HV

from hwnas.errors import HwnasError
from hwnas.search.config import SearchConfig
from hwnas.search.driver import Search

#: method -> (formulation, surrogate)
METHODS = {"hwnas": ("nsga2", "ehvi"), "random": ("random", "none")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default="runs/real-cost")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    points: dict[tuple[str, int], np.ndarray] = {}
    info = {}
    for seed in range(args.seeds):
        for method, (formulation, surrogate) in METHODS.items():
            cfg = SearchConfig(targets=("cpu",), space="nb201", accuracy="table", formulation=formulation,
                               surrogate=surrogate, budget=args.budget, seed=seed, workers=args.workers)
            started = time.perf_counter()
            try:
                search = Search(cfg, Path(args.out) / f"{method}-{seed}", resume=True)
                search.run()
            except HwnasError as exc:
                print(f"search_real_cost: {exc}", file=sys.stderr)
                return 2
            ok = [p for p in search.all_points() if p.status == "ok"]
            acc, lat = search.objectives
            points[method, seed] = np.array([[-p.value(acc), p.value(lat)] for p in ok], dtype=float)
            info[method, seed] = {"evaluated": search.evaluated, "failed": search.evaluated - len(ok),
                                  "equivalent": len(search.equivalent), "seconds": time.perf_counter() - started,
                                  "overhead_s_per_generation": search.surrogate_seconds
                                  / max(search.surrogate_generations, 1)}
            print(f"  {method} seed {seed}: {info[method, seed]}", file=sys.stderr, flush=True)
    every = np.vstack(list(points.values()))
    ref = np.median(every, axis=0)
    best = HV(ref_point=ref)(every)
    print(f"nb201 x cpu (measured on this machine) x table accuracy; budget {args.budget}; seeds {args.seeds}; "
          f"{args.workers} worker(s); {len(every)} points in all")
    print(f"reference: accuracy {-ref[0]:.3f} %, latency {ref[1]:.4f} ms; best front seen: hypervolume {best:.4f}")
    print(f"{'method':8s} {'HV / best, per seed':>30s} {'median':>7s} {'evaluated':>9s} {'equivalent':>10s} "
          f"{'overhead s/gen':>14s} {'s/run':>7s}")
    out = {}
    for method in METHODS:
        ratios = [HV(ref_point=ref)(points[method, s]) / best for s in range(args.seeds)]
        rs = [info[method, s] for s in range(args.seeds)]
        out[method] = {"ratios": ratios, "runs": rs}
        print(f"{method:8s} {' '.join(f'{r:.3f}' for r in ratios):>30s} {statistics.median(ratios):7.3f} "
              f"{statistics.median(r['evaluated'] for r in rs):9.0f} {statistics.median(r['equivalent'] for r in rs):10.0f} "
              f"{statistics.median(r['overhead_s_per_generation'] for r in rs):14.3f} "
              f"{statistics.median(r['seconds'] for r in rs):7.0f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
