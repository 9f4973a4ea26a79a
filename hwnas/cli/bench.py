"""``hwnas bench cost-models``: a target's cost methods judged against its reference method on the same networks.

The methods are the ones the target declares (:class:`hwnas.targets.base.Target`):
its reference method (``reference_method``: ``measure`` on the CPU, the whole
module run with warm-up and repeats; ``emulate`` on a microcontroller, QEMU's
instruction count), the other methods that price a built module alone
(``estimate_methods``: on the CPU ``lut``, per-kernel times measured on first
sight and cached, the cache starting empty so early candidates pay for the
kernels later ones reuse, and ``analytical``, a roofline on the machine's
measured peaks; on a microcontroller ``model``), and, for a target with a
trained method (``trained_cost_methods``, the CPU's ``predictor``), that
method with an XGBoost and an MLP model trained on the first share of the
candidates, their reference figures and features, and judged on the rest.

For ``n`` sampled candidates (architecture and hardware config), each is
compiled once; the same compiled module is then priced by every method.
On the held-out candidates it reports, per method: Kendall tau and Spearman
rho against the reference latency, MAPE, the share within +-10 %, the mean
time of one estimate (the cost step alone: every method shares the compile
and the static analysis of the compiled module, :meth:`Target.analyse`)
and its speedup over the reference; then it runs the same seeded NSGA-II search
with each method and reports its wall time. Writes ``cost_models.csv``,
``cost_models.json`` and ``cost_models.png`` (estimate against reference, one
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

#: the table's name of the kernel-level predictor (``--kernel-model``, built by ``hwnas predictor build``)
KERNEL_ROW = "predictor-kernel"
#: the models trained for a target's trained cost method (named ``<method>-<kind>`` in the table)
PREDICTOR_KINDS = ("xgb", "mlp")


def bench_methods(target) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """What the bench compares on ``target``: (its reference method, the methods priced per candidate besides
    it, the trained models' table names), all from what the target declares."""
    trained = target.trained_cost_methods
    models = tuple(f"{trained[0]}-{kind}" for kind in PREDICTOR_KINDS) if trained else ()
    return target.reference_method, target.estimate_methods, models


def _cost_timed(target, built, method: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = target.cost(built, method=method)["latency_ms"]
    return float(value), time.perf_counter() - t0


def _kernel_estimate(target, candidate, hw: dict[str, Any], path: str) -> tuple[float, float, float]:
    """(kernel predictor's latency, seconds it took all told, of which the lowering)."""
    from hwnas.cost.kernel_model import KernelPredictor
    from hwnas.ir.workloads import extract
    from hwnas.pipeline.evaluate import schedule_candidate

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwnas-bench-kernels-") as tmp:
        _, mod, _ = schedule_candidate(candidate, target, hw, workdir=tmp, timings={}, shape_only=True)
    lowered = time.perf_counter()
    value = KernelPredictor.load(path).predict_network(extract(mod), hw, target.hardware_space)
    done = time.perf_counter()
    return value, done - t0, lowered - t0


def price_candidates(space, target, candidates, *, progress: Callable[[int, int], None] | None = None,
                     journal: Path | None = None, kernel_model: str | None = None):
    """Compile each candidate once and price it by the target's reference and estimate methods; keep its
    features when the target trains predictors.

    With ``journal``, each priced candidate is appended to that JSON-lines file
    as it is done, and candidates already there are not priced again (a killed
    benchmark continues where it stopped).
    """
    from hwnas.pipeline.evaluate import Candidate, compile_candidate
    from hwnas.pipeline.predictor import features_of
    from hwnas.cost.cache import MemoryCache

    reference, estimates, models = bench_methods(target)
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
    for i, cand in enumerate(candidates):
        # a candidate is (genome, hw), or (space, genome, hw) when the bench mixes spaces
        cand_space, genome, hw = cand if len(cand) == 3 else (space, *cand)
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
                _, built, _ = compile_candidate(Candidate.from_space(cand_space, genome, full), target, full,
                                                workdir=tmp, timings=timings)
            row: dict[str, Any] = {"genome": list(genome), "hw": full, "compile_s": sum(timings.values()),
                                   "space": cand_space.name,
                                   "lower_s": timings["export_s"] + timings["import_s"] + timings["passes_s"]}
            # the static analysis every method shares (memory plan, kernels), done once before timing
            t0 = time.perf_counter()
            target.analyse(built)
            if models:
                row["features"] = features_of(built, target)
            row["compile_s"] += time.perf_counter() - t0
            for method in (reference, *estimates):
                row[method], row[f"{method}_s"] = _cost_timed(target, built, method)
            if kernel_model is not None:
                # the machine's noise floor: the same candidate measured a second time
                row[f"{reference}_again"], _ = _cost_timed(target, built, reference)
                # the kernel predictor's estimate from scratch: export, import, the passes with no value
                # computed (shape_only), workload extraction and prediction; no code generation
                row[KERNEL_ROW], row[f"{KERNEL_ROW}_s"], row["kernel_lower_s"] = _kernel_estimate(
                    target, Candidate.from_space(cand_space, genome, full), full, kernel_model)
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
                search_budget: int = 24, progress=None, say=print, kernel_model: str | None = None) -> dict[str, Any]:
    from hwnas.arch import get_space
    from hwnas.pipeline.predictor import Sample, errors, sample_candidates, train
    from hwnas.targets import get_target

    target = get_target(target_spec)
    if not target.compiles:
        raise InvalidConfigError(f"target {target.spec} prices architectures without compiling them: "
                                 f"the bench compares methods on compiled networks")
    reference, estimates, model_names = bench_methods(target)
    least = 10 if model_names else 3
    if n < least:
        why = "a predictor is trained on part of them" if model_names else "a rank correlation needs them"
        raise InvalidConfigError(f"--n must be >= {least} ({why}), got {n}")
    if search_budget < 0:
        raise InvalidConfigError(f"--search-budget must be >= 0 (0: no searches), got {search_budget}")
    if kernel_model is not None:
        target.cost_method(f"predictor:{kernel_model}")  # a missing file: one line, before any work
    if not estimates and not model_names:
        raise InvalidConfigError(f"target {target.spec} has one cost method ({reference}): nothing to compare it with")
    for m in (reference, *estimates):
        target.cost_method(m)  # e.g. measure without the device, or emulate without QEMU: one line, before any work
    spaces = [get_space(name.strip()) for name in space_name.split(",")]
    space = spaces[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    journal = out / f"priced-{'+'.join(sp.name for sp in spaces)}-{target.spec.replace(':', '_')}-seed{seed}.jsonl"
    if len(spaces) == 1:
        candidates = sample_candidates(space, target, n, seed)
    else:  # n candidates in turn from each space, each space's draw seeded on its own
        per = [sample_candidates(sp, target, -(-n // len(spaces)), seed + j) for j, sp in enumerate(spaces)]
        candidates = [(spaces[i % len(spaces)], *per[i % len(spaces)][i // len(spaces)]) for i in range(n)]
    overlap = 0
    if kernel_model is not None:  # held out: none of the networks the kernel set was drawn from
        from hwnas.cost.kernel_model import KernelPredictor

        drawn = {json.dumps([sp, list(g)]) for sp, g in KernelPredictor.load(kernel_model).metadata.get("networks", [])}
        kept = [c for c in candidates
                if json.dumps([(c[0] if len(c) == 3 else space).name, [int(v) for v in c[-2]]]) not in drawn]
        overlap = len(candidates) - len(kept)
        candidates = kept
        if overlap:
            say(f"{overlap} sampled candidates are networks the kernel set was drawn from: left out")
    rows = price_candidates(space, target, candidates, progress=progress, journal=journal,
                            kernel_model=kernel_model)
    if len(rows) < least:
        raise InvalidConfigError(f"only {len(rows)} of {n} candidates could be compiled and priced by {reference}")
    order = np.random.default_rng(seed).permutation(len(rows))
    n_train = int(round(train_share * len(rows))) if model_names else 0
    train_rows = [rows[i] for i in order[:n_train]]
    test_rows = [rows[i] for i in order[n_train:]]

    # predictors trained on the training share (their reference figures), timed on the held-out share
    models = {}
    if model_names:
        samples = [Sample(genome=r["genome"], hw=r["hw"], features=r["features"], latency_ms=r[reference],
                          compile_s=r["compile_s"], measure_s=r[f"{reference}_s"]) for r in train_rows]
        for name in model_names:
            kind = name.rsplit("-", 1)[1]
            model = train(samples, kind=kind, seed=seed, target=target, space_name=space.name)
            models[name] = model.save(out / f"{name}.json")
            for r in test_rows:
                t0 = time.perf_counter()
                mean, _ = model.predict([r["features"]])
                r[name] = float(mean[0])
                r[f"{name}_s"] = time.perf_counter() - t0

    measured = [r[reference] for r in test_rows]
    t_reference = statistics.fmean(r[f"{reference}_s"] for r in test_rows)
    table = []
    extra = (KERNEL_ROW,) if kernel_model is not None else ()
    for m in (reference, *estimates, *model_names, *extra):
        est = [r[m] for r in test_rows]
        e = errors(est, measured)
        t = statistics.fmean(r[f"{m}_s"] for r in test_rows)
        table.append({"method": m, **e, "estimate_s": t, "speedup": t_reference / t if t > 0 else float("inf")})

    # the same seeded search with each method (the predictors: the models trained above)
    search_kwargs = dict(targets=(target.spec,), space=space.name, objectives=("accuracy", "latency_ms"),
                         accuracy="proxy", formulation="nsga2", budget=search_budget, seed=seed,
                         pop_size=max(4, search_budget // 4), workers=1)
    for row in table:
        method = row["method"]
        if not search_budget:
            row["search_s"], row["search_points"] = float("nan"), 0
            continue
        cost = f"{target.trained_cost_methods[0]}:{models[method]}" if method in models else method
        cost = f"predictor:{kernel_model}" if method == KERNEL_ROW else cost
        row["search_s"], row["search_points"] = run_search(search_kwargs, cost)
    noise = None
    if kernel_model is not None:
        # noise floor: the same compiled candidate measured twice; compile + measure is what the predictor saves
        again = [r[f"{reference}_again"] for r in test_rows]
        noise = {**errors(again, measured),
                 "compile_measure_s": statistics.fmean(r["compile_s"] + r[f"{reference}_s"] for r in test_rows),
                 "compile_measure_median_s": statistics.median(r["compile_s"] + r[f"{reference}_s"]
                                                               for r in test_rows)}
        for row in table:
            if row["method"] == KERNEL_ROW:
                row["speedup_vs_compile_measure"] = noise["compile_measure_s"] / row["estimate_s"]
                row["estimate_median_s"] = statistics.median(r[f"{KERNEL_ROW}_s"] for r in test_rows)
                row["lowering_median_s"] = statistics.median(r["kernel_lower_s"] for r in test_rows)
                row["compile_lowering_median_s"] = statistics.median(r["lower_s"] for r in test_rows)
    result = {"space": "+".join(sp.name for sp in spaces), "target": target.spec, "noise_floor": noise, "reference": reference, "n": len(rows),
              "left_out_kernel_set_networks": overlap,
              "train": len(train_rows),
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
    head = (f"{'method':16s} {'tau':>6s} {'rho':>6s} {'MAPE %':>7s} {'<=10 %':>7s} {'estimate ms':>12s} "
            f"{'speedup':>8s} {'search s':>9s}")
    split = (f"{result['train']} train the predictors, {result['test']} held out" if result["train"]
             else "no predictor for this target")
    lines = [f"{result['space']} x {result['target']}: {result['n']} candidates ({split}), judged against "
             f"{result['reference']}; compile + analysis {result['compile_s_mean']:.2f} s each, "
             f"shared by every method; search: NSGA-II, {result['search_budget']} points, seed {result['seed']}", head,
             "-" * len(head)]
    for r in result["table"]:
        lines.append(f"{r['method']:16s} {r['kendall_tau']:6.3f} {r['spearman_rho']:6.3f} {r['mape_pct']:7.1f} "
                     f"{100 * r['within_10pct']:6.0f}% {1e3 * r['estimate_s']:12.2f} {r['speedup']:7.1f}x "
                     f"{r['search_s']:9.1f}")
    noise = result.get("noise_floor")
    if noise:
        k = next(r for r in result["table"] if r["method"] == KERNEL_ROW)
        lines.append(f"noise floor (the same candidate measured twice): tau {noise['kendall_tau']:.3f}, "
                     f"{100 * noise['within_10pct']:.0f} % within +-10 %, MAPE {noise['mape_pct']:.1f} %")
        lines.append(f"{KERNEL_ROW}: {1e3 * k['estimate_s']:.1f} ms per estimate (median "
                     f"{1e3 * k['estimate_median_s']:.1f} ms, of which {1e3 * k['lowering_median_s']:.1f} ms export, "
                     f"import and passes without values, against {1e3 * k['compile_lowering_median_s']:.1f} ms with them; no "
                     f"codegen), {k['speedup_vs_compile_measure']:.0f}x faster "
                     f"than compile + measure ({noise['compile_measure_s']:.2f} s; median "
                     f"{noise['compile_measure_median_s']:.2f} s)")
    return "\n".join(lines)


def _plot(path: Path, rows, result) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = result["reference"]
    methods = [t["method"] for t in result["table"] if t["method"] != reference]
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 4), squeeze=False)
    measured = np.array([r[reference] for r in rows])
    lo, hi = measured.min() * 0.5, measured.max() * 2
    for ax, m in zip(axes[0], methods):
        est = np.array([r[m] for r in rows])
        row = next(t for t in result["table"] if t["method"] == m)
        ax.scatter(measured, est, s=10, alpha=0.7)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{reference} latency (ms)")
        ax.set_ylabel(f"{m} (ms)")
        ax.set_title(f"{m}: tau {row['kendall_tau']:.2f}, MAPE {row['mape_pct']:.0f} %", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"cost methods against {reference}: {result['space']} x {result['target']}, "
                 f"{result['test']} held-out networks", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
