"""``hwnas bench cost-models``: the four cost methods judged against measurement on the same networks.

For ``n`` sampled candidates (architecture and hardware config), each is
compiled once; the same compiled module is then priced by every method:

* ``measure`` (the reference: the whole module run with warm-up and repeats),
* ``lut`` (per-kernel times, measured on first sight and cached; the cache
  starts empty, so early candidates pay for the kernels later ones reuse),
* ``analytical`` (roofline on the machine's measured peaks),
* ``predictor-xgb`` and ``predictor-mlp`` (trained on the first share of the
  candidates, their measurements and features; judged on the rest).

On the held-out candidates it reports, per method: Kendall tau and Spearman
rho against the measured latency, MAPE, the share within +-10 %, the mean
time of one estimate (the cost step alone: every method shares the compile
and the static analysis of the compiled module)
and its speedup over measurement; then it runs the same seeded NSGA-II search
with each method and reports its wall time. Writes ``cost_models.csv``,
``cost_models.json`` and ``cost_models.png`` (estimate against measurement, one
panel per method) into ``--out``. Every priced candidate is also appended to a
journal there as it is done: a killed run, started again with the same
settings, prices only what is missing.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError

log = logging.getLogger("hwnas.bench")

METHODS = ("measure", "lut", "analytical", "predictor-xgb", "predictor-mlp")


def _cost_timed(target, built, method: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = target.cost(built, method=method)["latency_ms"]
    return float(value), time.perf_counter() - t0


def price_candidates(space, target, candidates, *, progress: Callable[[int, int], None] | None = None,
                     journal: Path | None = None):
    """Compile each candidate once and price it by measure, lut and analytical; keep its features.

    With ``journal``, each priced candidate is appended to that JSON-lines file
    as it is done, and candidates already there are not priced again (a killed
    benchmark continues where it stopped).
    """
    from hwnas.pipeline.evaluate import Candidate, compile_candidate
    from hwnas.pipeline.predictor import features_of
    from hwnas.cost.cache import MemoryCache

    target.use_cache(MemoryCache())  # the lookup table starts empty
    done: dict[str, dict[str, Any]] = {}
    if journal is not None and journal.is_file():
        for line in journal.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            done[json.dumps([row["genome"], row["hw_sampled"]], sort_keys=True)] = row
    rows = []
    for i, (genome, hw) in enumerate(candidates):
        key = json.dumps([list(genome), hw], sort_keys=True, default=str)
        if key in done:
            rows.append(done[key])
            if progress:
                progress(i + 1, len(candidates))
            continue
        timings: dict[str, float] = {}
        try:
            full = target.hardware_space.validate(hw)
            with tempfile.TemporaryDirectory(prefix="hwnas-bench-") as tmp:
                _, built, _ = compile_candidate(Candidate.from_space(space, genome, full), target, full,
                                                workdir=tmp, timings=timings)
            row: dict[str, Any] = {"genome": list(genome), "hw": full, "compile_s": sum(timings.values())}
            # the static analysis every method shares (memory plan, kernels), done once before timing
            t0 = time.perf_counter()
            target.cost(built, method="analytical")
            row["features"] = features_of(built, target)
            row["compile_s"] += time.perf_counter() - t0
            for method in ("measure", "lut", "analytical"):
                row[method], row[f"{method}_s"] = _cost_timed(target, built, method)
            rows.append(row)
            if journal is not None:
                with open(journal, "a") as f:
                    f.write(json.dumps({**row, "hw_sampled": hw}, default=str) + "\n")
        except Exception as exc:  # a candidate that fails is left out, and said
            log.warning("candidate %d failed: %s", i, exc)
        if progress:
            progress(i + 1, len(candidates))
    return rows


def run_search(config_kwargs: dict[str, Any], cost: str) -> tuple[float, int]:
    """Wall seconds and points of one seeded search priced with ``cost``."""
    from hwnas.search.config import SearchConfig
    from hwnas.search.driver import Search

    with tempfile.TemporaryDirectory(prefix="hwnas-bench-search-") as out:
        t0 = time.perf_counter()
        search = Search(SearchConfig(cost=cost, **config_kwargs), out)
        search.run()
        return time.perf_counter() - t0, search.evaluated


def cost_models(*, space_name: str, target_spec: str, n: int, seed: int, out: str | Path, train_share: float = 0.6,
                search_budget: int = 24, progress=None, say=print) -> dict[str, Any]:
    from hwnas.arch import get_space
    from hwnas.pipeline.predictor import Sample, errors, sample_candidates, train
    from hwnas.targets import get_target

    if n < 10:
        raise InvalidConfigError(f"--n must be >= 10 (a predictor is trained on part of them), got {n}")
    if search_budget < 1:
        raise InvalidConfigError(f"--search-budget must be >= 1, got {search_budget}")
    target = get_target(target_spec)
    for m in ("measure", "lut", "analytical"):
        target.cost_method(m)
    space = get_space(space_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    journal = out / f"priced-{space.name}-{target.spec.replace(':', '_')}-seed{seed}.jsonl"
    rows = price_candidates(space, target, sample_candidates(space, target, n, seed), progress=progress,
                            journal=journal)
    if len(rows) < 10:
        raise InvalidConfigError(f"only {len(rows)} of {n} candidates could be compiled and measured")
    order = np.random.default_rng(seed).permutation(len(rows))
    n_train = int(round(train_share * len(rows)))
    train_rows = [rows[i] for i in order[:n_train]]
    test_rows = [rows[i] for i in order[n_train:]]

    # predictors trained on the training share (their measurements), timed on the held-out share
    samples = [Sample(genome=r["genome"], hw=r["hw"], features=r["features"], latency_ms=r["measure"],
                      compile_s=r["compile_s"], measure_s=r["measure_s"]) for r in train_rows]
    models = {}
    for kind in ("xgb", "mlp"):
        model = train(samples, kind=kind, seed=seed, target=target, space_name=space.name)
        path = model.save(out / f"predictor-{kind}.json")
        models[f"predictor-{kind}"] = path
        for r in test_rows:
            t0 = time.perf_counter()
            mean, _ = model.predict([r["features"]])
            r[f"predictor-{kind}"] = float(mean[0])
            r[f"predictor-{kind}_s"] = time.perf_counter() - t0

    measured = [r["measure"] for r in test_rows]
    t_measure = statistics.fmean(r["measure_s"] for r in test_rows)
    table = []
    for m in METHODS:
        est = [r[m] for r in test_rows]
        e = errors(est, measured)
        t = statistics.fmean(r[f"{m}_s"] for r in test_rows)
        table.append({"method": m, **e, "estimate_s": t, "speedup": t_measure / t if t > 0 else float("inf")})

    # the same seeded search with each method (the predictors: the models trained above)
    search_kwargs = dict(targets=(target.spec,), space=space.name, objectives=("accuracy", "latency_ms"),
                         accuracy="proxy", formulation="nsga2", budget=search_budget, seed=seed,
                         pop_size=max(4, search_budget // 4), workers=1)
    for row in table:
        cost = f"predictor:{models[row['method']]}" if row["method"].startswith("predictor") else row["method"]
        row["search_s"], row["search_points"] = run_search(search_kwargs, cost)

    result = {"space": space.name, "target": target.spec, "n": len(rows), "train": len(train_rows),
              "test": len(test_rows), "seed": seed, "compile_s_mean": statistics.fmean(r["compile_s"] for r in rows),
              "search_budget": search_budget, "table": table, "wall_s": time.perf_counter() - started,
              "rows": [{k: v for k, v in r.items() if k != "features"} for r in rows]}
    (out / "cost_models.json").write_text(json.dumps(result, indent=1, default=str))
    with open(out / "cost_models.csv", "w") as f:
        keys = ["method", "kendall_tau", "spearman_rho", "mape_pct", "within_10pct", "estimate_s", "speedup",
                "search_s", "search_points", "n"]
        f.write(",".join(keys) + "\n")
        for row in table:
            f.write(",".join(str(row[k]) for k in keys) + "\n")
    _plot(out / "cost_models.png", test_rows, result)
    return result


def format_table(result: dict[str, Any]) -> str:
    head = (f"{'method':14s} {'tau':>6s} {'rho':>6s} {'MAPE %':>7s} {'<=10 %':>7s} {'estimate ms':>12s} "
            f"{'speedup':>8s} {'search s':>9s}")
    lines = [f"{result['space']} x {result['target']}: {result['n']} candidates ({result['train']} train the "
             f"predictors, {result['test']} held out); compile + analysis {result['compile_s_mean']:.2f} s each, "
             f"shared by every method; search: NSGA-II, {result['search_budget']} points, seed {result['seed']}", head,
             "-" * len(head)]
    for r in result["table"]:
        lines.append(f"{r['method']:14s} {r['kendall_tau']:6.3f} {r['spearman_rho']:6.3f} {r['mape_pct']:7.1f} "
                     f"{100 * r['within_10pct']:6.0f}% {1e3 * r['estimate_s']:12.2f} {r['speedup']:7.1f}x "
                     f"{r['search_s']:9.1f}")
    return "\n".join(lines)


def _plot(path: Path, rows, result) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if m != "measure"]
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 4), squeeze=False)
    measured = np.array([r["measure"] for r in rows])
    lo, hi = measured.min() * 0.5, measured.max() * 2
    for ax, m in zip(axes[0], methods):
        est = np.array([r[m] for r in rows])
        row = next(t for t in result["table"] if t["method"] == m)
        ax.scatter(measured, est, s=10, alpha=0.7)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel(f"{m} (ms)")
        ax.set_title(f"{m}: tau {row['kendall_tau']:.2f}, MAPE {row['mape_pct']:.0f} %", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"cost methods against measurement: {result['space']} x {result['target']}, "
                 f"{result['test']} held-out networks", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
