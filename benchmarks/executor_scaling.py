"""Evaluations per minute against the number of workers, for the process pool and a distributed executor.

Each executor runs the search's own worker function (:class:`hwnas.search.worker.PointEvaluator`:
export, import, the target's passes, compile, cost, accuracy) on distinct random points of a space
x target, with 1, 2, ... workers. A cluster's workers journal their store writes and this process
replays them into a results store, as a search does, so that cost is counted too. Before timing,
each configuration runs one warm-up task per worker (workers import TVM and build their context
once); the figure is the timed tasks over their wall time, and the ratio is the executor's rate
over the process pool's at the same worker count (1.0: no overhead).

    python benchmarks/executor_scaling.py [--executors process,dask] [--workers 1,2,4] [--n 16]
        [--space nb201 --space-option cells_per_stage=1] [--target asic:eyeriss]

The default target prices by a model (no measurement), so parallel workers do not disturb what
they measure; the work per evaluation is compiling with TVM. On a shared machine the rates are
not speed results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.pipeline.executor import make_executor, require
from hwnas.search.config import SearchConfig
from hwnas.search.space import JointSpace, point_key
from hwnas.search.worker import PointEvaluator, WorkerSetup, _worker_init, _worker_work
from hwnas.pipeline.store import Journal, ResultStore
from hwnas.ir.runtime import host_cores

RUN_ID = "bench"


def distinct_points(joint: JointSpace, n: int, seed: int) -> list[tuple]:
    """``n`` distinct valid points of the joint space as search tasks (genome, hardware configs)."""
    from hwnas.errors import InvalidConfigError

    rng = np.random.default_rng(seed)
    tasks, seen = [], set()
    for _ in range(100 * n):
        try:
            genome, hws = joint.split(joint.sample(rng))
        except InvalidConfigError:
            continue
        key = point_key(genome, hws)
        if key not in seen:
            seen.add(key)
            tasks.append((genome, hws))
        if len(tasks) == n:
            return tasks
    raise SystemExit(f"the space has fewer than {n} distinct points")


def rate(config: SearchConfig, executor: str, workers: int, warmup: list, timed: list, folder: Path) -> dict:
    """Run ``warmup`` then ``timed`` on ``executor`` with ``workers``; evaluations per minute of ``timed``."""
    store_path = folder / f"{executor}-{workers}.db"
    store = ResultStore(store_path)
    store.open_run(RUN_ID, config.settings(), {}, resume=False)
    setup = WorkerSetup(config, str(store_path) if executor == "process" else None, RUN_ID)
    failed = []

    def done(_, outcome):
        if outcome.ok:
            Journal.replay(outcome.value.pop("journal", ()), store)
            failed.extend([outcome.value["error"]] if outcome.value.get("error") else [])
        else:
            failed.append(outcome.error)

    t0 = time.perf_counter()
    with make_executor(executor, workers=workers, init=_worker_init, init_arg=setup, work=_worker_work,
                       timeout_s=config.timeout_s) as ex:
        ex.run(warmup[:workers], done)
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        ex.run(timed, done)
        wall = time.perf_counter() - t1
    rows = store.count(RUN_ID)
    return {"executor": executor, "workers": workers, "n": len(timed), "wall_s": wall, "start_s": started,
            "per_min": 60.0 * len(timed) / wall, "failed": len(failed), "rows": rows,
            "first_error": failed[0] if failed else None}


def table(results: list[dict], executors: list[str]) -> str:
    base = {r["workers"]: r["per_min"] for r in results if r["executor"] == "process"}
    header = ["workers"] + [f"{e} evals/min" for e in executors] + [f"{e}/process" for e in executors
                                                                     if e != "process"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for w in sorted({r["workers"] for r in results}):
        by = {r["executor"]: r for r in results if r["workers"] == w}
        cells = [str(w)] + [f"{by[e]['per_min']:.1f}" if e in by else "-" for e in executors]
        cells += [f"{by[e]['per_min'] / base[w]:.2f}" if e in by and w in base else "-"
                  for e in executors if e != "process"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    cores = host_cores()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--executors", default="process,dask", help="comma-separated (default process,dask)")
    p.add_argument("--workers", default=",".join(str(w) for w in sorted({1, 2, cores})),
                   help=f"worker counts (default 1,2,{cores}: this machine's cores)")
    p.add_argument("--n", type=int, default=16, help="timed evaluations per configuration (default 16)")
    p.add_argument("--space", default="nb201")
    p.add_argument("--space-option", action="append", default=None, metavar="KEY=VALUE",
                   help="default cells_per_stage=1 for nb201")
    p.add_argument("--target", default="asic:eyeriss", help="default asic:eyeriss (analytical cost, TVM-compiled)")
    p.add_argument("--accuracy", default="proxy", help="accuracy evaluator (default proxy, synflow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    options = dict(kv.split("=", 1) for kv in (args.space_option or (["cells_per_stage=1"] if args.space == "nb201"
                                                                      else [])))
    options = {k: json.loads(v) if v.lstrip("-").isdigit() else v for k, v in options.items()}
    try:
        for e in executors:
            require(e)
        config = SearchConfig(targets=(args.target,), space=args.space, space_options=options,
                              accuracy=args.accuracy, objectives=("accuracy", "latency_ms"), workers=max(workers),
                              seed=args.seed, timeout_s=600.0)
        evaluator = PointEvaluator(WorkerSetup(config, str(Path(tempfile.mkdtemp()) / "probe.db"), RUN_ID))
        points = distinct_points(evaluator.joint, max(workers) + len(workers) * len(executors) * args.n, args.seed)
    except HwnasError as exc:
        print(f"executor_scaling: error: {exc}", file=sys.stderr)
        return 2
    warmup, rest = points[:max(workers)], points[max(workers):]
    print(f"{args.space} {options} x {args.target}, accuracy {args.accuracy}; {args.n} timed evaluations per "
          f"configuration after {max(workers)} warm-up; {cores} cores here", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory(prefix="hwnas-scaling-") as tmp:
        for w in workers:
            for e in executors:
                timed, rest = rest[:args.n], rest[args.n:]  # fresh points: no cache helps
                r = rate(config, e, w, warmup, timed, Path(tmp))
                results.append(r)
                print(f"  {e:8s} {w} worker(s): {r['per_min']:.1f} evaluations/min ({r['n']} in {r['wall_s']:.1f} s; "
                      f"start-up and warm-up {r['start_s']:.1f} s; {r['failed']} failed; {r['rows']} rows stored)",
                      file=sys.stderr)
                if r["first_error"]:
                    print(f"    first failure: {r['first_error']}", file=sys.stderr)
    print(table(results, executors))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
