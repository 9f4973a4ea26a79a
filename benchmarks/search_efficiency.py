"""Sample efficiency of the default search against its peers, on the exact Pareto fronts of NAS-Bench-201.

On nb201 with the published CIFAR-10 accuracies and a published latency column every one of the
15,625 cells is known, so every search here is judged against the exact front, on the same budgets
and seeds, in one run (no compile: the tables are read in this process).

**The judge.** Cells with the same live genome (:func:`hwnas.arch.nb201.live_genome`) compute the
same function; NAS-Bench-201 trained them separately, so their table accuracies differ by training
noise alone. A cell is judged at its *function's* accuracy (the mean over the function's cells)
and its own latency: a search earns nothing for finding the luckiest seed. The reference point is
the space's median judged accuracy and median latency. Every evaluated point counts (not only the
front a run reports). Per run:

* ``HV``: hypervolume of the evaluated points / hypervolume of the whole space;
* ``front``: the share of the exact front's functions (the functions of the cells on the judged
  front) of which the run evaluated a cell;
* beside them, on the raw per-cell table accuracies (the earlier judge): ``HV raw`` and the share of
  the exact raw front's cells evaluated.

**Methods** (``--methods``):

* ``random``: uniform random cells, without repeats;
* ``pymoo-nsga2``: pymoo's NSGA-II as its documentation sets it up for integer variables (random
  integer sampling, SBX and polynomial mutation rounded to integers, duplicates eliminated), every
  evaluation counted;
* ``hwnas``: the default :class:`hwnas.search.driver.Search` (``nsga2`` with ``surrogate="ehvi"``:
  canonical candidates, hypervolume-improvement acquisition over a Gaussian process for the accuracy
  and an ensemble for the latency; ``published:<device>`` target, ``table`` accuracy,
  ``workers=0``), whose equivalent candidates cost nothing;
* ``hwnas-xgb``: the previous default (NSGA-II screened by the XGBoost ensemble), for comparison;
* ``optuna-tpe``: Optuna's multi-objective TPE sampler; ``optuna-nsga2``: Optuna's NSGA-II sampler;
  each trial is an evaluation (a repeated cell counts again, as it would cost again).

Every method stops at the largest budget; the figures at a smaller budget are those of its first
evaluations. No method looks at the budget before it stops (hwnas's default included: a run of 200
evaluations is the first 200 of a run of 500; ``--check-prefix`` runs it again at each budget and
compares), so this is what a run of that budget does.

The goals (issue 22): on the median over devices and seeds, ``hwnas`` reaches HV >= 0.97 and >= 60 %
of the front functions at 500 evaluations, HV >= 0.93 at 200, and is ahead of every peer at every
budget.

    python benchmarks/search_efficiency.py [--devices raspi4,pixel3,eyeriss,fpga,1080ti_1] [--seeds 5]
        [--budgets 100,200,500] [--methods random,pymoo-nsga2,hwnas,optuna-tpe,optuna-nsga2]
        [--check-prefix] [--json results.json]

Needs the published data (``nb201/accuracy.csv``, ``nb201/latency.csv``; see ``hwnas.data``) and,
for the Optuna peers, ``pip install 'hwnas[bench]'``; without them the script stops with one line.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
import tempfile
import time

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from hwnas.arch.nb201 import NUM_ARCHS, OPS, genome_to_index, index_to_genome, live_genome
from hwnas.data import require_data_file
from hwnas.errors import DataNotFoundError
from hwnas.search.config import SearchConfig
from hwnas.search.driver import Search

#: accuracy evaluator dataset -> column of nb201/accuracy.csv
ACC_COLUMNS = {"cifar10": "cifar10_test_acc", "cifar100": "cifar100_test_acc",
               "imagenet16-120": "imagenet16_120_test_acc"}
DEVICES = ("raspi4", "pixel3", "eyeriss", "fpga", "1080ti_1")
METHODS = ("random", "pymoo-nsga2", "hwnas", "optuna-tpe", "optuna-nsga2", "hwnas-xgb")
DEFAULT_METHODS = ("random", "pymoo-nsga2", "hwnas", "optuna-tpe", "optuna-nsga2")
OURS = "hwnas"
#: (budget, HV ratio, share of front functions) the default must reach on the median over devices and seeds
GOALS = ((500, 0.97, 0.60), (200, 0.93, None))
#: the population of the NSGA-II peers (hwnas's own default, SearchConfig.pop_size)
POP_SIZE = 16


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default=",".join(DEVICES), help="nb201 latency columns, comma-separated")
    parser.add_argument("--dataset", default="cifar10", choices=tuple(ACC_COLUMNS), help="accuracy column")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per method and device")
    parser.add_argument("--budgets", default="100,200,500", help="comma-separated evaluation budgets")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated: {', '.join(METHODS)}")
    parser.add_argument("--check-prefix", action="store_true",
                        help="also run hwnas at every smaller budget (seed 0) and check it is the prefix")
    parser.add_argument("--json", default=None, help="also write every run's numbers to this file")
    parser.add_argument("--merge", default=None,
                        help="comma-separated --json files of earlier runs (e.g. one per device): print their "
                             "tables together instead of searching")
    args = parser.parse_args(argv)
    args.devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    args.budgets = sorted(int(b) for b in args.budgets.split(",") if b.strip())
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in args.methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}: {', '.join(METHODS)}")
    if args.seeds < 1 or not args.budgets or min(args.budgets) < 1:
        parser.error("--seeds and --budgets must be positive")
    return args


def load_tables(devices, dataset: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(accuracy %, {device: latency ms}), indexed by NB201 index, read straight from the csvs."""
    acc = np.full(NUM_ARCHS, np.nan)
    lat = {d: np.full(NUM_ARCHS, np.nan) for d in devices}
    with open(require_data_file("nb201/accuracy.csv"), newline="") as f:
        for row in csv.DictReader(f):
            acc[int(row["nb201_index"])] = float(row[ACC_COLUMNS[dataset]])
    with open(require_data_file("nb201/latency.csv"), newline="") as f:
        reader = csv.DictReader(f)
        missing = [d for d in devices if f"lat_ms_{d}" not in (reader.fieldnames or ())]
        if missing:
            raise DataNotFoundError(f"nb201/latency.csv has no column for {', '.join(missing)}")
        for row in reader:
            for d in devices:
                lat[d][int(row["nb201_index"])] = float(row[f"lat_ms_{d}"])
    if np.isnan(acc).any() or any(np.isnan(v).any() for v in lat.values()):
        raise DataNotFoundError("the nb201 tables lack rows")
    return acc, lat


def hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """The area the points ``F`` (minimised) dominate, bounded by ``ref``."""
    return float(HV(ref_point=np.asarray(ref, dtype=float))(np.asarray(F, dtype=float).reshape(-1, 2)))


def front_rows(F: np.ndarray) -> set[int]:
    """The rows of ``F`` on its Pareto front (minimised; every copy of a non-dominated vector counts)."""
    return set(NonDominatedSorting().do(np.asarray(F, dtype=float), only_non_dominated_front=True).tolist())


#: cell -> function id (its live genome's number), the same for every device
FUNCTION = np.empty(NUM_ARCHS, dtype=int)
_ids: dict[tuple[int, ...], int] = {}
for _i in range(NUM_ARCHS):
    FUNCTION[_i] = _ids.setdefault(live_genome(index_to_genome(_i)), len(_ids))
NUM_FUNCTIONS = len(_ids)


class Judge:
    """One device's exact fronts: judged (function-mean accuracy) and raw (per-cell accuracy)."""

    def __init__(self, acc: np.ndarray, lat: np.ndarray) -> None:
        sums = np.bincount(FUNCTION, weights=acc, minlength=NUM_FUNCTIONS)
        counts = np.bincount(FUNCTION, minlength=NUM_FUNCTIONS)
        self.acc_raw, self.lat = acc, lat
        self.acc = (sums / counts)[FUNCTION]
        self.F = np.column_stack([-self.acc, lat])
        self.F_raw = np.column_stack([-acc, lat])
        self.ref = np.array([-float(np.median(self.acc)), float(np.median(lat))])
        self.ref_raw = np.array([-float(np.median(acc)), float(np.median(lat))])
        self.hv = hypervolume(self.F, self.ref)
        self.hv_raw = hypervolume(self.F_raw, self.ref_raw)
        self.front_functions = {int(FUNCTION[c]) for c in front_rows(self.F)}
        self.front_cells = front_rows(self.F_raw)

    def score(self, cells: list[int]) -> dict:
        cells = list(cells)
        distinct = set(cells)
        found = {int(FUNCTION[c]) for c in distinct} & self.front_functions
        return {"evaluations": len(cells),
                "hv": hypervolume(self.F[cells], self.ref) / self.hv,
                "front": len(found) / len(self.front_functions),
                "hv_raw": hypervolume(self.F_raw[cells], self.ref_raw) / self.hv_raw,
                "front_raw": len(distinct & self.front_cells) / len(self.front_cells)}


# -- the methods: each returns the cells it evaluated, in order, and its overhead --------------------
def run_random(judge: Judge, device: str, budget: int, seed: int) -> tuple[list[int], dict]:
    return [int(c) for c in np.random.default_rng(seed).permutation(NUM_ARCHS)[:budget]], {}


def run_pymoo_nsga2(judge: Judge, device: str, budget: int, seed: int) -> tuple[list[int], dict]:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    cells: list[int] = []

    class Nb201(Problem):
        def __init__(self):
            super().__init__(n_var=6, n_obj=2, xl=0, xu=len(OPS) - 1, vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            idx = [genome_to_index([int(v) for v in x]) for x in np.rint(X)]
            cells.extend(idx)
            out["F"] = judge.F_raw[idx]  # what the search sees: the table's accuracy of the cell

    algorithm = NSGA2(pop_size=POP_SIZE, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                      mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                      eliminate_duplicates=True)
    minimize(Nb201(), algorithm, ("n_evals", budget), seed=seed, verbose=False)
    return cells[:budget], {}


def _optuna(sampler, judge: Judge, budget: int) -> list[int]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cells: list[int] = []

    def objective(trial):
        genome = [trial.suggest_categorical(f"e{i}", list(range(len(OPS)))) for i in range(6)]
        c = genome_to_index(genome)
        cells.append(c)
        return float(judge.acc_raw[c]), float(judge.lat[c])

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=budget)
    return cells


def run_optuna_tpe(judge: Judge, device: str, budget: int, seed: int) -> tuple[list[int], dict]:
    import optuna

    return _optuna(optuna.samplers.TPESampler(seed=seed), judge, budget), {}


def run_optuna_nsga2(judge: Judge, device: str, budget: int, seed: int) -> tuple[list[int], dict]:
    import optuna

    return _optuna(optuna.samplers.NSGAIISampler(seed=seed, population_size=POP_SIZE), judge, budget), {}


def _hwnas(judge: Judge, device: str, budget: int, seed: int, surrogate: str) -> tuple[list[int], dict]:
    cfg = SearchConfig(targets=(f"published:{device}",), space="nb201", objectives=("accuracy", "latency_ms"),
                       accuracy="table", formulation="nsga2", surrogate=surrogate, budget=budget, seed=seed,
                       workers=0, pop_size=POP_SIZE)
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-") as out:
        search = Search(cfg, out)
        search.run()
        acc_term, lat_term = search.objectives
        cells = []
        for p in search.all_points():
            c = genome_to_index(p.genome)
            a, lat = p.value(acc_term), p.value(lat_term)
            if p.status != "ok" or abs(a - judge.acc_raw[c]) > 1e-9 or abs(lat - judge.lat[c]) > 1e-9:
                raise RuntimeError(f"cell {c}: the search gave ({a}, {lat}, {p.status}), the tables "
                                   f"({judge.acc_raw[c]}, {judge.lat[c]})")
            cells.append(c)
        info = {"equivalent": len(search.equivalent), "generations": search.surrogate_generations,
                "overhead_s_per_generation": search.surrogate_seconds / max(search.surrogate_generations, 1)}
    return cells, info


def run_hwnas(judge, device, budget, seed):
    return _hwnas(judge, device, budget, seed, "ehvi")


def run_hwnas_xgb(judge, device, budget, seed):
    return _hwnas(judge, device, budget, seed, "xgb")


RUNNERS = {"random": run_random, "pymoo-nsga2": run_pymoo_nsga2, "hwnas": run_hwnas, "hwnas-xgb": run_hwnas_xgb,
           "optuna-tpe": run_optuna_tpe, "optuna-nsga2": run_optuna_nsga2}


def median(values) -> float:
    return float(statistics.median(values))


def spread(values) -> str:
    return f"{median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t_total = time.perf_counter()
    try:
        if any(m.startswith("optuna") for m in args.methods):
            try:
                import optuna  # noqa: F401
            except ImportError:
                raise DataNotFoundError("the Optuna peers need optuna: pip install 'hwnas[bench]'") from None
        acc, lats = load_tables(args.devices, args.dataset)
    except DataNotFoundError as exc:
        print(f"search_efficiency: {exc}", file=sys.stderr)
        return 2
    judges = {d: Judge(acc, lats[d]) for d in args.devices}
    top = max(args.budgets)
    print(f"nb201 x {args.dataset} table accuracy x published latency; {NUM_ARCHS} cells = {NUM_FUNCTIONS} functions; "
          f"{args.seeds} seeds; budgets {args.budgets}; judged at each function's mean accuracy, reference = "
          f"the space's median accuracy and latency, every evaluated point counts")
    for d, j in judges.items():
        print(f"  {d:9s}: reference {-j.ref[0]:.3f} %, {j.ref[1]:.4f} ms; front: {len(j.front_functions)} functions "
              f"(raw: {len(j.front_cells)} cells)")
    print()

    runs = []
    if args.merge:
        for path in args.merge.split(","):
            with open(path) as f:
                runs += json.load(f)["runs"]
        args.devices = list(dict.fromkeys(r["device"] for r in runs))
        args.methods = list(dict.fromkeys(r["method"] for r in runs))
        args.budgets = sorted({r["budget"] for r in runs})
    for device in [] if args.merge else args.devices:
        for method in args.methods:
            for seed in range(args.seeds):
                started = time.perf_counter()
                cells, info = RUNNERS[method](judges[device], device, top, seed)
                seconds = time.perf_counter() - started
                for b in args.budgets:
                    runs.append({"device": device, "method": method, "seed": seed, "budget": b, "seconds": seconds,
                                 **judges[device].score(cells[:b]), **info})
            print(f"  {device} {method}: {statistics.fmean(r['seconds'] for r in runs if r['device'] == device and r['method'] == method):.1f} s/run",
                  file=sys.stderr)
    if args.check_prefix and OURS in args.methods:
        for device in args.devices:
            full, _ = run_hwnas(judges[device], device, top, 0)
            for b in args.budgets[:-1]:
                cells, _ = run_hwnas(judges[device], device, b, 0)
                status = "is" if cells == full[:b] else "is NOT"
                print(f"prefix check {device}: the run of budget {b} {status} the first {b} of the run of {top}")
        print()

    def cell(rs, key):
        return median([r[key] for r in rs])

    header = (f"{'device':9s} {'method':12s} {'budget':>6s} {'HV ratio':>21s} {'front fns':>8s} "
              f"{'HV raw':>7s} {'front raw':>9s} {'s/run':>6s} {'overhead s/gen':>14s}")
    print("per device: median [min-max] over seeds")
    print(header)
    print("-" * len(header))
    for device in args.devices:
        for method in args.methods:
            for b in args.budgets:
                rs = [r for r in runs if r["device"] == device and r["method"] == method and r["budget"] == b]
                over = f"{cell(rs, 'overhead_s_per_generation'):.3f}" if "overhead_s_per_generation" in rs[0] else "-"
                print(f"{device:9s} {method:12s} {b:6d} {spread([r['hv'] for r in rs]):>21s} "
                      f"{cell(rs, 'front'):8.2f} {cell(rs, 'hv_raw'):7.3f} {cell(rs, 'front_raw'):9.2f} "
                      f"{cell(rs, 'seconds'):6.1f} {over:>14s}")
    print()
    print("median over devices and seeds (the goals' figures):")
    print(f"{'method':12s} " + " ".join(f"{'HV@' + str(b):>8s} {'front@' + str(b):>9s}" for b in args.budgets)
          + " " + " ".join(f"{'raw HV@' + str(b):>10s}" for b in args.budgets))
    summary = {}
    for method in args.methods:
        row = []
        for b in args.budgets:
            rs = [r for r in runs if r["method"] == method and r["budget"] == b]
            summary[method, b] = (cell(rs, "hv"), cell(rs, "front"), cell(rs, "hv_raw"))
            row.append(f"{summary[method, b][0]:8.3f} {summary[method, b][1]:9.2f}")
        print(f"{method:12s} " + " ".join(row) + " " +
              " ".join(f"{summary[method, b][2]:10.3f}" for b in args.budgets))
    print()
    if OURS in args.methods:
        for b, hv, front in GOALS:
            if b not in args.budgets:
                print(f"goal at {b} evaluations: not judged (budget not run)")
                continue
            got_hv, got_front, _ = summary[OURS, b]
            met = got_hv >= hv and (front is None or got_front >= front)
            print(f"goal at {b}: HV >= {hv}" + (f" and front >= {front:.0%}" if front else "") +
                  f": {got_hv:.3f}" + (f", {got_front:.0%}" if front else "") + f" -> {'MET' if met else 'NOT MET'}")
        for b in args.budgets:
            peers = [m for m in args.methods if m != OURS and not m.startswith("hwnas")]
            behind = [m for m in peers if summary[m, b][0] >= summary[OURS, b][0]]
            print(f"ahead of every peer at {b}: " + ("yes" if not behind else f"NO (not ahead of {', '.join(behind)})"))
    total = time.perf_counter() - t_total
    print(f"total run time {total:.0f} s ({len(runs) // len(args.budgets)} searches)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"devices": args.devices, "dataset": args.dataset, "runs": runs, "total_s": total}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
