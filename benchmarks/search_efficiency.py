"""How close NSGA-II (plain or surrogate-assisted) and random search get to the exact Pareto front of NAS-Bench-201.

On nb201 with the published CIFAR-10 accuracies (``accuracy="table"``) and a
published latency column (``published:raspi4`` by default), every one of the
15,625 cells is known, so the exact accuracy x latency Pareto front and its
hypervolume are computed here from the data tables. Each method runs the real
:class:`hwnas.search.driver.Search` (in-process, ``workers=0``, into a
temporary folder) for several seeds and budgets; methods: ``nsga2`` (plain NSGA-II,
``surrogate="none"``), ``nsga2-xgb`` (NSGA-II whose offspring are screened by the XGBoost
ensemble, ``surrogate="xgb"``), ``random``. From the points each run evaluated:

* the hypervolume ratio (found / exact) against the *median* reference point
  (the space's median accuracy and median latency: it discriminates, see the
  data README) and against the *loose* one (accuracy 0, the largest latency:
  nearly any sample scores ~1, shown for comparison only);
* the share of the exact front's cells that the search evaluated.

The goal (the issue's): NSGA-II reaches a hypervolume ratio >= 0.99 against
the median reference within 500 evaluations.

    python benchmarks/search_efficiency.py [--device raspi4] [--seeds 5] [--budgets 100,200,500]
        [--pop-size 16] [--methods nsga2,nsga2-xgb,random] [--json results.json]

Needs the published data (``nb201/accuracy.csv``, ``nb201/latency.csv``; see
``hwnas.data``); without it the script stops with one line.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import statistics
import sys
import tempfile
import time

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from hwnas.arch.nb201 import NUM_ARCHS, genome_to_index, index_to_genome, live_genome
from hwnas.data import require_data_file
from hwnas.errors import DataNotFoundError
from hwnas.search.config import SearchConfig
from hwnas.search.driver import Search
from hwnas.targets.published import NB201_DEVICES

#: accuracy evaluator dataset -> column of nb201/accuracy.csv
ACC_COLUMNS = {"cifar10": "cifar10_test_acc", "cifar100": "cifar100_test_acc",
               "imagenet16-120": "imagenet16_120_test_acc"}
GOAL_RATIO = 0.99
GOAL_BUDGET = 500
#: population size unless --pop-size says otherwise: SearchConfig's default (what a user gets); 8..50 all measured
#: within noise of it at 500 evaluations on raspi4
#: method -> (formulation, surrogate)
METHODS = {"nsga2": ("nsga2", "none"), "nsga2-xgb": ("nsga2", "xgb"), "random": ("random", "none")}
DEFAULT_POP_SIZE = next(f.default for f in dataclasses.fields(SearchConfig) if f.name == "pop_size")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="raspi4", choices=NB201_DEVICES, help="nb201 latency column")
    parser.add_argument("--dataset", default="cifar10", choices=tuple(ACC_COLUMNS), help="accuracy column")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per method and budget")
    parser.add_argument("--budgets", default="100,200,500", help="comma-separated evaluation budgets")
    parser.add_argument("--pop-size", type=int, default=DEFAULT_POP_SIZE,
                        help="NSGA-II population (random search: batch size)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated: nsga2 (plain), nsga2-xgb (surrogate-assisted), random")
    parser.add_argument("--json", default=None, help="also write every run's numbers to this file")
    args = parser.parse_args(argv)
    args.budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in args.methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}: {', '.join(METHODS)}")
    if args.seeds < 1 or not args.budgets or min(args.budgets) < 1 or args.pop_size < 1:
        parser.error("--seeds, --budgets and --pop-size must be positive")
    return args


def load_tables(device: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy %, latency ms), each indexed by NB201 index, read straight from the csvs."""
    acc = np.full(NUM_ARCHS, np.nan)
    lat = np.full(NUM_ARCHS, np.nan)
    with open(require_data_file("nb201/accuracy.csv"), newline="") as f:
        for row in csv.DictReader(f):
            acc[int(row["nb201_index"])] = float(row[ACC_COLUMNS[dataset]])
    with open(require_data_file("nb201/latency.csv"), newline="") as f:
        for row in csv.DictReader(f):
            lat[int(row["nb201_index"])] = float(row[f"lat_ms_{device}"])
    if np.isnan(acc).any() or np.isnan(lat).any():
        raise DataNotFoundError(f"the nb201 tables lack rows: {int(np.isnan(acc).sum())} accuracies and "
                                f"{int(np.isnan(lat).sum())} {device} latencies missing of {NUM_ARCHS}")
    return acc, lat


def hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """The area that the points ``F`` (both objectives minimised) dominate, bounded by ``ref`` (pymoo's
    hypervolume; points that do not dominate ``ref`` add nothing)."""
    return float(HV(ref_point=np.asarray(ref, dtype=float))(np.asarray(F, dtype=float).reshape(-1, 2)))


def front_indices(F: np.ndarray) -> set[int]:
    """The rows of ``F`` on its Pareto front (minimised; every copy of a non-dominated vector counts)."""
    return set(NonDominatedSorting().do(np.asarray(F, dtype=float), only_non_dominated_front=True).tolist())


class Exact:
    """The whole space's objective vectors (accuracy negated), its front and hypervolumes."""

    def __init__(self, acc: np.ndarray, lat: np.ndarray) -> None:
        self.acc, self.lat = acc, lat
        self.F = np.column_stack([-acc, lat])
        self.front_cells = front_indices(self.F)
        self.refs = {
            "median": np.array([-float(np.median(acc)), float(np.median(lat))]),
            "loose": np.array([-0.0, float(lat.max())]),
        }
        self.hv = {name: hypervolume(self.F, ref) for name, ref in self.refs.items()}


def noise_ceiling(exact: Exact, per_group=(1, 2, 5, 10), draws: int = 200) -> list[tuple[int, int, float]]:
    """What an oracle that knows which functions lie on the front still has to pay for training noise.

    Cells with the same live genome (:func:`hwnas.arch.nb201.live_genome`)
    compute the same function; their table accuracies differ by training noise
    only. For each exact front cell, its *group* is the cells of its function
    whose latency is within 5 % of its own: no model of the genome can tell
    them apart. The oracle evaluates ``k`` random members of every group;
    returns ``(k, evaluations, mean hypervolume ratio)`` per ``k``.
    """
    import random

    by_function: dict[tuple[int, ...], list[int]] = {}
    for i in range(NUM_ARCHS):
        by_function.setdefault(live_genome(index_to_genome(i)), []).append(i)
    groups = [[j for j in by_function[live_genome(index_to_genome(c))] if exact.lat[j] <= 1.05 * exact.lat[c]]
              for c in sorted(exact.front_cells)]
    out = []
    for k in per_group:
        ratios = []
        for s in range(draws):
            rng = random.Random(s)
            picked = [j for g in groups for j in rng.sample(g, min(k, len(g)))]
            ratios.append(hypervolume(exact.F[picked], exact.refs["median"]) / exact.hv["median"])
        out.append((k, sum(min(k, len(g)) for g in groups), statistics.fmean(ratios)))
    return out


def run_one(exact: Exact, args, method: str, budget: int, seed: int) -> dict:
    cfg = SearchConfig(targets=(f"published:{args.device}",), space="nb201", objectives=("accuracy", "latency_ms"),
                       accuracy="table", accuracy_options={"dataset": args.dataset}, formulation=METHODS[method][0],
                       surrogate=METHODS[method][1],
                       budget=budget, seed=seed, workers=0, pop_size=args.pop_size)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-") as out:
        search = Search(cfg, out)
        search.run()
        acc_term, lat_term = search.objectives
        rows = []
        for p in search.all_points():
            if p.status != "ok":
                raise RuntimeError(f"{method} seed {seed}: point {p.genome} failed: {p.error}")
            index = genome_to_index(p.genome)
            a, lat = p.value(acc_term), p.value(lat_term)
            # the search's values must be the tables' (same files, same index order)
            if abs(a - exact.acc[index]) > 1e-9 or abs(lat - exact.lat[index]) > 1e-9:
                raise RuntimeError(f"cell {index}: search gave ({a}, {lat}), tables ({exact.acc[index]}, "
                                   f"{exact.lat[index]})")
            rows.append((index, -a, lat))
        evaluated = search.evaluated
        surrogate_s, generations = search.surrogate_seconds, search.surrogate_generations
    seconds = time.perf_counter() - started
    cells = {r[0] for r in rows}
    F = np.array([r[1:] for r in rows], dtype=float).reshape(-1, 2)
    return {
        "method": method, "budget": budget, "seed": seed, "pop_size": args.pop_size, "evaluated": evaluated,
        "distinct_cells": len(cells),
        "hv_median": hypervolume(F, exact.refs["median"]) / exact.hv["median"],
        "hv_loose": hypervolume(F, exact.refs["loose"]) / exact.hv["loose"],
        "front_found": len(cells & exact.front_cells),
        "front_share": len(cells & exact.front_cells) / len(exact.front_cells),
        "seconds": seconds,
        "surrogate_s_per_generation": surrogate_s / generations if generations else 0.0,
    }


def mean_std(values) -> str:
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.3f} +- {s:.3f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t_total = time.perf_counter()
    try:
        acc, lat = load_tables(args.device, args.dataset)
    except DataNotFoundError as exc:
        print(f"search_efficiency: {exc}", file=sys.stderr)
        return 2
    exact = Exact(acc, lat)

    print(f"nb201 x {args.dataset} accuracy (table) x published:{args.device} latency; {NUM_ARCHS} cells; "
          f"exact Pareto front: {len(exact.front_cells)} cells")
    for name, ref in exact.refs.items():
        print(f"  reference {name:6s}: accuracy {abs(ref[0]):.4f} %, latency {ref[1]:.4f} ms; "
              f"exact hypervolume {exact.hv[name]:.4f} %*ms")
    print(f"  {args.seeds} seeds (0..{args.seeds - 1}); pop size {args.pop_size}; mean +- sample std over seeds; "
          f"workers=0")
    print()

    runs = []
    for method in args.methods:
        for budget in args.budgets:
            for seed in range(args.seeds):
                runs.append(run_one(exact, args, method, budget, seed))

    header = (f"{'method':9s} {'budget':>6s} {'HV ratio (median ref)':>22s} {'HV ratio (loose ref)':>21s} "
              f"{'front cells found':>24s} {'s/run':>6s} {'surr s/gen':>10s}")
    print(header)
    print("-" * len(header))
    for method in args.methods:
        for budget in args.budgets:
            rs = [r for r in runs if r["method"] == method and r["budget"] == budget]
            found = statistics.fmean(r["front_found"] for r in rs)
            print(f"{method:9s} {budget:6d} {mean_std([r['hv_median'] for r in rs]):>22s} "
                  f"{mean_std([r['hv_loose'] for r in rs]):>21s} "
                  f"{mean_std([r['front_share'] for r in rs]) + f' ({found:.1f}/{len(exact.front_cells)})':>24s} "
                  f"{statistics.fmean(r['seconds'] for r in rs):6.2f} "
                  f"{statistics.fmean(r['surrogate_s_per_generation'] for r in rs):10.3f}")
    print()

    goal_budgets = [b for b in args.budgets if b <= GOAL_BUDGET]
    judged = [m for m in args.methods if m.startswith("nsga2")]
    for method in judged if goal_budgets else []:
        b = max(goal_budgets)
        ratios = [r["hv_median"] for r in runs if r["method"] == method and r["budget"] == b]
        met = statistics.fmean(ratios) >= GOAL_RATIO
        print(f"goal: {method} hypervolume ratio >= {GOAL_RATIO} within {GOAL_BUDGET} evaluations, judged against "
              f"the MEDIAN reference (accuracy {-exact.refs['median'][0]:.4f} %, latency "
              f"{exact.refs['median'][1]:.4f} ms) at budget {b}: mean {statistics.fmean(ratios):.4f}, "
              f"worst seed {min(ratios):.4f} -> {'MET' if met else 'NOT MET'}"
              f"{'' if min(ratios) >= GOAL_RATIO or not met else ' (on the mean; not by every seed)'}")
    if not judged or not goal_budgets:
        print(f"goal: not judged (needs method nsga2 or nsga2-xgb and a budget <= {GOAL_BUDGET})")
    print()
    print("training-noise ceiling: an oracle that knows the front's functions evaluates k of the cells that compute")
    print("each one at a latency within 5 % (indistinguishable to any model of the genome):")
    for k, evals, ratio in noise_ceiling(exact):
        print(f"  k={k:2d}: {evals:4d} evaluations -> hypervolume ratio {ratio:.3f}")
    total = time.perf_counter() - t_total
    print(f"total run time {total:.1f} s ({len(runs)} searches)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "dataset": args.dataset, "front_cells": len(exact.front_cells),
                       "refs": {k: v.tolist() for k, v in exact.refs.items()}, "exact_hv": exact.hv,
                       "runs": runs, "total_s": total}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
