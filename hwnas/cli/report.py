"""A search's report: ``pareto.csv``, ``pareto.png``, ``report.html`` and the front's artifacts.

Everything is rebuilt from the results store (``hwnas report DIR``).
"""

from __future__ import annotations

import csv
import html
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError, InvalidConfigError
from hwnas.search.config import (
    LADDER_TOLERANCE,
    REFERENCE_KEY,
    REFERENCE_NAMESPACE,
    Bound,
    SearchConfig,
    load_plugins,
)
from hwnas.search.driver import Search
from hwnas.search.objectives import (
    Point,
    Term,
    is_feasible,
    pareto_front,
    resolve_bounds,
    resolve_terms,
    with_references,
)
from hwnas.search.worker import PointEvaluator, WorkerSetup, describe_numerics, numerics_key

log = logging.getLogger(__name__)


def load_run(out_dir: str | Path):
    """(config, points, objectives, checks) of the search stored in ``out_dir``."""
    from hwnas.pipeline.store import ResultStore
    from hwnas.targets import get_target

    out_dir = Path(out_dir)
    db = out_dir / "results.db"
    if not db.is_file():
        raise InvalidConfigError(f"{out_dir} holds no search (no results.db)")
    store = ResultStore(db)
    run = store.get_run(Search.RUN_ID)
    if run is None:
        raise InvalidConfigError(f"{db} holds no search run")
    config = SearchConfig.from_settings(run.settings)
    load_plugins(config.plugins)
    targets = [get_target(t) for t in config.targets]
    has_acc = config.space is not None
    objectives = resolve_terms(config.objectives, targets, has_accuracy=has_acc)
    checks = resolve_bounds([Bound.parse(c) for c in config.constraints], targets, has_accuracy=has_acc)
    if any(t.aggregate for t in [*objectives, *(term for term, _ in checks)]):
        reference = store.get(REFERENCE_NAMESPACE, REFERENCE_KEY)
        if reference is None:
            raise InvalidConfigError(f"the search in {out_dir} stopped before its reference network was evaluated; "
                                     f"continue it with --resume")
        reference = {spec: reference["metrics"][spec] for spec in config.targets}  # the store sorts keys
        objectives = with_references(objectives, reference)
        terms = with_references([term for term, _ in checks], reference)
        checks = [(term, b) for term, (_, b) in zip(terms, checks)]
    points = [Point.from_dict(v) for v in store.values(f"points/{Search.RUN_ID}")]
    return config, points, objectives, checks


def ladder_rows(points: list[Point], repriced: dict[str, dict], objectives: list[Term], method: str,
                cheap: str) -> list[dict[str, Any]]:
    """The cost ladder's comparison: one row per re-priced point, target and cost objective.

    ``rel_err``: (cheap - re-priced) / re-priced; ``disagree``: beyond
    :data:`~hwnas.search.config.LADDER_TOLERANCE`, or the re-pricing failed.
    """
    rows = []
    by_key = {p.key: p for p in points}
    for key, per_target in repriced.items():
        p = by_key.get(key)
        if p is None:
            continue
        if "error" in per_target:
            rows.append({"key": key, "genome": list(p.genome), "target": "", "metric": "", cheap: None,
                         method: None, "rel_err": None, "disagree": True, "error": per_target["error"]})
            continue
        for t in objectives:
            if t.metric == "accuracy":
                continue
            for spec, metrics in per_target.items():
                if t.target not in (None, spec) or t.metric not in metrics:
                    continue
                a = p.metrics.get(spec, {}).get(t.metric)
                b = metrics[t.metric]
                rel = (a - b) / b if a is not None and b else None
                rows.append({"key": key, "genome": list(p.genome), "target": spec, "metric": t.metric, cheap: a,
                             method: b, "rel_err": rel,
                             "disagree": rel is None or abs(rel) > LADDER_TOLERANCE, "error": None})
    return rows


#: the transfer table's rule: the best architecture for a target is the feasible point with the lowest
#: value of the transfer metric on that target among those whose accuracy is within this share of the best
#: accuracy found (``accuracy >= best - share * |best|``; all feasible points when accuracy is not an objective)
TRANSFER_ACCURACY_SHARE = 0.01


def transfer_metric(objectives: list[Term], targets) -> str | None:
    """The metric the transfer table compares: the first cost objective's that every target defines
    (None: there is none)."""
    return next((t.metric for t in objectives if t.metric != "accuracy"
                 and all(t.metric in target.metrics for target in targets)), None)


def transfer_candidates(points: list[Point], objectives: list[Term], checks) -> list[Point]:
    """The points the transfer table chooses from: feasible, and accurate enough (TRANSFER_ACCURACY_SHARE)."""
    feasible = [p for p in points if is_feasible(p, checks)]
    acc = next((t for t in objectives if t.metric == "accuracy"), None)
    values = [p.value(acc) for p in feasible if acc is not None and p.value(acc) is not None]
    if not values:
        return feasible
    best = max(values)
    floor = best - TRANSFER_ACCURACY_SHARE * abs(best)
    return [p for p in feasible if p.value(acc) is not None and p.value(acc) >= floor]


def best_per_target(candidates: list[Point], specs: list[str], metric: str,
                    objectives: list[Term]) -> dict[str, Point | None]:
    """For each target, the candidate with the lowest ``metric`` on it (ties: the more accurate, then the first)."""
    acc = next((t for t in objectives if t.metric == "accuracy"), None)
    best: dict[str, Point | None] = {}
    for spec in specs:
        ranked = [(p.metrics.get(spec, {}).get(metric), -(p.value(acc) or 0.0) if acc else 0.0, i)
                  for i, p in enumerate(candidates)]
        ranked = [r for r in ranked if r[0] is not None]
        best[spec] = candidates[min(ranked)[2]] if ranked else None
    return best


def transfer_table(out_dir: Path, config: SearchConfig, points: list[Point], objectives: list[Term],
                   checks) -> dict[str, Any] | None:
    """For each target A, the architecture best for A, evaluated on every target B with the hardware config
    of B's own best point; None for a single-target run or one without a cost objective every target defines.

    A cell the search did not evaluate is evaluated now, for real, and recorded in the store under
    :data:`~hwnas.search.config.EXTRA_RUN_ID` (a rebuilt report reads it back). Each cell: ``value`` (the
    transfer metric on B), ``ratio`` (value / B's own best), ``rank`` among the ``of`` candidates on B (1:
    B's best), ``feasible`` (B's constraints), ``run`` (whose evaluation: ``search`` or ``extra``).
    """
    from hwnas.targets import get_target

    specs = list(config.targets)
    metric = transfer_metric(objectives, [get_target(spec) for spec in specs])
    if len(specs) < 2 or metric is None:
        return None
    candidates = transfer_candidates(points, objectives, checks)
    best = best_per_target(candidates, specs, metric, objectives)
    acc = next((t for t in objectives if t.metric == "accuracy"), None)
    evaluator = None
    cells = []
    for a in specs:
        pa = best[a]
        for j, b in enumerate(specs):
            pb = best[b]
            cell: dict[str, Any] = {"best_for": a, "on": b, "metric": metric, "key": pa.key if pa else None,
                                    "genome": list(pa.genome) if pa else None,
                                    "accuracy": pa.value(acc) if pa and acc else None,
                                    "hw": pb.hws[j] if pb else None, "value": None, "ratio": None, "rank": None,
                                    "of": None, "feasible": None, "run": None, "error": None}
            cells.append(cell)
            if pa is None or pb is None:
                cell["error"] = f"no feasible point with {metric} on {a if pa is None else b}"
                continue
            if tuple(pa.genome) == tuple(pb.genome):
                metrics, error, run = pb.metrics[b], None, "search"
            elif pa.hws[j] == pb.hws[j]:
                metrics, error, run = pa.metrics[b], None, "search"
            else:
                if evaluator is None:
                    evaluator = PointEvaluator(WorkerSetup(config, str(Path(out_dir) / "results.db"), Search.RUN_ID))
                metrics, error, run = evaluator.evaluate_extra(pa.genome, j, pb.hws[j])
            cell["run"], cell["error"] = run, error
            if metrics is None or metrics.get(metric) is None:
                cell["error"] = error or f"{b} gave no {metric}"
                continue
            value = cell["value"] = metrics[metric]
            own = pb.metrics[b][metric]
            cell["ratio"] = value / own if own else None
            column = [v for p in candidates if (v := p.metrics.get(b, {}).get(metric)) is not None]
            cell["rank"] = 1 + sum(v < value for v in column)
            cell["of"] = len(column)
            cell["feasible"] = all((v := metrics.get(term.metric)) is not None and bound.violation(v) <= 0
                                   for term, bound in checks if term.target == b)
    rule = (f"lowest {metric} on the target among the feasible points" +
            (f" whose {acc.label} is within {100 * TRANSFER_ACCURACY_SHARE:g} % of the best found" if acc else ""))
    return {"metric": metric, "rule": rule, "targets": specs, "cells": cells,
            "best": {spec: (p.key if p else None) for spec, p in best.items()}}


def write_transfer_csv(path: Path, transfer: dict[str, Any], space=None) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["best_for", "on", "metric", "genome", "description", "accuracy", "hw", "value", "ratio", "rank",
                    "of", "feasible", "evaluated_by", "error"])
        for c in transfer["cells"]:
            desc = space.describe(c["genome"]) if space is not None and c["genome"] else ""
            w.writerow([c["best_for"], c["on"], c["metric"], json.dumps(c["genome"]), desc, _fmt(c["accuracy"]),
                        json.dumps(c["hw"]), _fmt(c["value"]), _fmt(c["ratio"]), _fmt(c["rank"]), _fmt(c["of"]),
                        _fmt(c["feasible"]), c["run"] or "", c["error"] or ""])


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def front_numerics(store, config: SearchConfig, front: list[Point]) -> dict[str, str]:
    """Point key -> the per-layer bit-widths of its quantized targets (one line per target; empty when
    no target of the point quantized its network)."""
    out = {}
    for p in front:
        lines = []
        for spec, hw in zip(config.targets, p.hws):
            text = describe_numerics(store.get(f"numerics/{Search.RUN_ID}", numerics_key(p.genome, hw, spec)))
            if text:
                lines.append(f"{spec} {text}" if len(config.targets) > 1 else text)
        out[p.key] = "; ".join(lines)
    return out


def write_csv(path: Path, front: list[Point], objectives: list[Term], space=None,
              numerics: dict[str, str] | None = None) -> None:
    numerics = numerics or {}
    shown = {t.label for t in objectives}
    labels = sorted({f"{m}@{t}" for p in front for t, ms in p.metrics.items() for m in ms if m != "accuracy"}
                    - shown)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "key", "genome", "description", "hw", "bit_widths"] + [t.label for t in objectives]
                   + labels)
        for i, p in enumerate(front):
            desc = space.describe(p.genome) if space is not None and p.genome else ""
            row = [i + 1, p.key, json.dumps(list(p.genome)), desc, json.dumps(p.hws), numerics.get(p.key, "")]
            row += [_fmt(p.value(t)) for t in objectives]
            row += [_fmt(p.metrics.get(label.split("@", 1)[1], {}).get(label.split("@", 1)[0])) for label in labels]
            w.writerow(row)


def write_plot(path: Path, points: list[Point], front: list[Point], objectives: list[Term], checks) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_term = next((t for t in objectives if t.metric == "accuracy"), objectives[0])
    others = [t for t in objectives if t is not x_term] or [x_term]
    fig, axes = plt.subplots(1, len(others), figsize=(5.5 * len(others), 4.5), squeeze=False)
    for ax, y_term in zip(axes[0], others):
        ok = [p for p in points if p.status == "ok" and p.value(x_term) is not None and p.value(y_term) is not None]
        feas = [p for p in ok if is_feasible(p, checks)]
        infeas = [p for p in ok if not is_feasible(p, checks)]
        if infeas:
            ax.scatter([p.value(x_term) for p in infeas], [p.value(y_term) for p in infeas], s=12, c="#d9d9d9",
                       label="violates a constraint")
        ax.scatter([p.value(x_term) for p in feas], [p.value(y_term) for p in feas], s=14, c="#8fa8c8",
                   label="evaluated")
        fr = sorted(front, key=lambda p: p.value(x_term))
        ax.plot([p.value(x_term) for p in fr], [p.value(y_term) for p in fr], "o-", c="#c0392b", ms=5,
                label="Pareto front")
        ax.set_xlabel(x_term.label)
        ax.set_ylabel(y_term.label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def transfer_html(transfer: dict[str, Any] | None, space=None) -> str:
    """The transfer table: a row per target A (its best architecture), a column per target B."""
    if transfer is None:
        return ""
    e = html.escape
    specs = transfer["targets"]
    by = {(c["best_for"], c["on"]): c for c in transfer["cells"]}
    rows = []
    for a in specs:
        first = by[(a, specs[0])]
        arch = ""
        if first["genome"] is not None:
            desc = space.describe(first["genome"]) if space is not None and first["genome"] else ""
            acc = "" if first["accuracy"] is None else f"<br>accuracy {_fmt(first['accuracy'])}"
            arch = f"<code>{e(json.dumps(first['genome']))}</code><br>{e(desc)}{acc}"
        cells = []
        for b in specs:
            c = by[(a, b)]
            if c["value"] is None:
                cells.append(f"<td>{e(c['error'] or '')}</td>")
                continue
            note = "" if c["run"] == "search" else " *"
            flag = "" if c["feasible"] else "<br>violates a constraint of the target"
            style = ' style="background:#e6f4ea"' if a == b else ""
            cells.append(f"<td{style}>{_fmt(c['value'])}{note}<br>x{c['ratio']:.3g}, rank {c['rank']} of {c['of']}"
                         f"{flag}</td>")
        rows.append(f"<tr><th>best for {e(a)}</th><td>{arch}</td>{''.join(cells)}</tr>")
    head = "".join(f"<th>on {e(b)}</th>" for b in specs)
    return (f"<h2>Transfer: {e(transfer['metric'])} of each target's best architecture on every target</h2>"
            f"<p>Best for a target: the {e(transfer['rule'])}. Each architecture runs on target B with the hardware "
            f"config of B's own best point; x: the ratio to B's best, rank: among the same candidate points on B. "
            f"* : evaluated for this table (recorded in results.db, run <code>extra</code>). Data: "
            f'<a href="transfer.csv">transfer.csv</a>.</p>'
            f"<table><tr><th></th><th>architecture</th>{head}</tr>{''.join(rows)}</table>")


def reference_html(objectives: list[Term], reference: dict[str, Any] | None, space=None) -> str:
    """The reference network's values that the aggregated objectives divide by."""
    aggregated = [t for t in objectives if t.aggregate is not None]
    if not aggregated or reference is None:
        return ""
    e = html.escape
    genome = reference["genome"]
    desc = space.describe(genome) if space is not None and genome else "the ONNX model"
    rows = "".join(f"<tr><td>{e(t.label)}</td>" + "".join(f"<td>{_fmt(v)}</td>" for _, v in t.references) + "</tr>"
                   for t in aggregated)
    head = "".join(f"<th>{e(spec)}</th>" for spec, _ in aggregated[0].references)
    return (f"<h2>Aggregation over targets</h2><p>Each target's value is divided by the reference network's on that "
            f"target ({e(desc)}, <code>{e(json.dumps(genome))}</code>, each target's default hardware config); "
            f"<code>@worst</code> takes the largest quotient, <code>@geomean</code> their geometric mean.</p>"
            f"<table><tr><th>objective</th>{head}</tr>{rows}</table>")


def device_check_line(check: dict[str, Any]) -> str:
    """One line on a bundle's ``device_check``: its device build's predictions against the host's."""
    if not check.get("ran"):
        return f"not run ({check.get('reason', 'unknown reason')})"
    same = sum(a == b for a, b in zip(check["device_predictions"], check["host_predictions"]))
    verdict = "equal" if check["predictions_equal"] else "DIFFERENT"
    outputs = "bit-exact outputs" if check.get("outputs_equal") else "outputs differ"
    return f"{verdict} predictions on {same}/{check['images']} test images ({outputs}) on {check['device']}"


def bundle_accuracy_line(manifest: dict[str, Any]) -> str | None:
    """A trained bundle's accuracy beside the subnet's inherited one (when it was fine-tuned); None for an
    untrained bundle."""
    acc = manifest.get("accuracy")
    if not acc:
        return None
    if not acc.get("measured"):
        return f"accuracy not measured ({acc.get('reason')})"
    training = manifest.get("training", {})
    line = f"artifact top-1 {acc['top1']:.2f} %"
    if training.get("finetune_epochs"):
        inherited = training.get("inherited_top1")
        line += (f" after {training['finetune_epochs']} fine-tuning epochs"
                 + (f" (inherited weights: {inherited:.2f} % in torch)" if inherited is not None else ""))
    else:
        line += " with inherited weights"
    check = manifest.get("device_check")
    if check:
        line += f"; device check: {device_check_line(check)}"
    return line


def artifact_lines(out_dir: Path, artifacts: dict[str, list[str]]) -> dict[str, str]:
    """Bundle folder (relative to ``out_dir``) -> :func:`bundle_accuracy_line` of its manifest."""
    out: dict[str, str] = {}
    for rel in (r for rels in artifacts.values() for r in rels):
        try:
            manifest = json.loads((Path(out_dir) / rel / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        line = bundle_accuracy_line(manifest)
        if line:
            out[rel] = line
    return out


def write_html(path: Path, config: SearchConfig, points: list[Point], front: list[Point], objectives: list[Term],
               artifacts: dict[str, list[str]], space=None, ladder: list[dict[str, Any]] | None = None,
               transfer: dict[str, Any] | None = None, reference: dict[str, Any] | None = None,
               numerics: dict[str, str] | None = None, accuracy_lines: dict[str, str] | None = None) -> None:
    e = html.escape
    numerics = numerics or {}
    ladder_html = ""
    if config.ladder is not None:
        cheap = config.cost or "default"
        lrows = []
        for r in ladder or []:
            style = ' style="background:#fde2e2"' if r["disagree"] else ""
            diff = "" if r["rel_err"] is None else f"{100 * r['rel_err']:+.1f} %"
            lrows.append(f"<tr{style}><td><code>{e(json.dumps(r['genome']))}</code></td><td>{e(r['target'])}</td>"
                         f"<td>{e(r['metric'])}</td><td>{_fmt(r[cheap])}</td><td>{_fmt(r[config.ladder])}</td>"
                         f"<td>{diff}</td><td>{e(r['error'] or '')}</td></tr>")
        n_bad = sum(1 for r in ladder or [] if r["disagree"])
        rate = f"{n_bad} of {len(ladder or [])} ({100 * n_bad / max(len(ladder or []), 1):.0f} %)"
        lrows = "".join(lrows)
        ladder_html = (f"<h2>Cost ladder: {e(cheap)} against {e(config.ladder)}</h2><p>Every front point of every "
                       f"generation was re-priced with {e(config.ladder)}; rows beyond +-10 % are highlighted. "
                       f"Disagreement rate: {rate} beyond +-10 %.</p>"
                       f"<table><tr><th>architecture</th><th>target</th><th>metric</th><th>{e(cheap)}</th>"
                       f"<th>{e(config.ladder)}</th><th>difference</th><th>error</th></tr>{lrows}</table>")
    multi = len(config.targets) > 1
    accuracy_lines = artifact_lines(path.parent, artifacts) if accuracy_lines is None else accuracy_lines
    n_ok = sum(p.status == "ok" for p in points)
    n_failed = sum(p.status == "failed" for p in points)
    rows = []
    for i, p in enumerate(front):
        desc = space.describe(p.genome) if space is not None and p.genome else ""
        links = "<br>".join(f'<a href="{e(a)}/manifest.json">{e(Path(a).name)}</a>'
                            + (f"<br><small>{e(accuracy_lines[a])}</small>" if a in accuracy_lines else "")
                            for a in artifacts.get(p.key, []))
        cells = "".join(f"<td>{_fmt(p.value(t))}</td>" for t in objectives)
        if multi:
            cells += "".join("<td>" + "<br>".join(f"{e(m)} {_fmt(v)}" for m, v in p.metrics.get(spec, {}).items()
                                                  if m != "accuracy") + "</td>" for spec in config.targets)
        bits = f"<br>bit-widths per layer: <code>{e(numerics[p.key])}</code>" if numerics.get(p.key) else ""
        rows.append(f"<tr><td>{i + 1}</td><td><code>{e(json.dumps(list(p.genome)))}</code><br>{e(desc)}</td>"
                    f"<td><code>{e(json.dumps(p.hws))}</code>{bits}</td>{cells}<td>{links}</td></tr>")
    settings = "".join(f"<tr><th>{e(k)}</th><td><code>{e(json.dumps(v))}</code></td></tr>"
                       for k, v in config.settings().items())
    failures = [p for p in points if p.status == "failed"][:20]
    fail_rows = "".join(f"<li><code>{e(json.dumps(list(p.genome)))}</code> {e(json.dumps(p.hws))}: "
                        f"{e(p.error or '')}</li>" for p in failures)
    head = "".join(f"<th>{e(t.label)}</th>" for t in objectives)
    if multi:
        head += "".join(f"<th>metrics on {e(spec)}</th>" for spec in config.targets)
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hwnas search report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}code{{font-size:90%}}</style>
</head><body>
<h1>hwnas search report</h1>
<p>{len(points)} points evaluated ({n_ok} ok, {n_failed} failed), {len(front)} on the Pareto front.
Data: <a href="results.db">results.db</a>, <a href="pareto.csv">pareto.csv</a>.</p>
<img src="pareto.png" alt="Pareto front" style="max-width:100%">
<h2>Pareto front</h2>
<p>Bit-widths per layer, in graph order: c conv, d depthwise, f dense, then the weight bits (fp: float);
a: activation bits; sym/asym: the weight grid.</p>
<table><tr><th>#</th><th>architecture</th><th>hardware</th>{head}<th>artifacts</th></tr>
{''.join(rows)}</table>
{reference_html(objectives, reference, space)}
{transfer_html(transfer, space)}
{ladder_html}
<h2>Settings</h2><table>{settings}</table>
<h2>Failures{' (first 20)' if n_failed > 20 else ''}</h2><ul>{fail_rows or '<li>none</li>'}</ul>
</body></html>
""")


def emit_artifacts(out_dir: Path, config: SearchConfig, front: list[Point], *, limit: int,
                   finetune_epochs: int = 0) -> dict[str, list[str]]:
    """Compile and write bundles of the first ``limit`` front points, for targets that compile. With
    ``--accuracy supernet:NET``, each bundle holds the subnet's trained weights (fine-tuned alone for
    ``finetune_epochs`` first) and its manifest the compiled artifact's measured accuracy."""
    from hwnas.arch import get_space
    from hwnas.pipeline.artifacts import Trained, write_bundle
    from hwnas.pipeline.evaluate import Candidate, evaluate
    from hwnas.targets import get_target

    made: dict[str, list[str]] = {}
    space = get_space(config.space, **config.space_options) if config.space else None
    targets = [get_target(t) for t in config.targets]
    supernet = None
    if space is not None and config.accuracy.split(":", 1)[0] == "supernet":
        from hwnas.accuracy.supernet import SupernetAccuracy

        supernet = SupernetAccuracy(**{"path": config.accuracy.split(":", 1)[1], **config.accuracy_options}) \
            if ":" in config.accuracy else SupernetAccuracy(**config.accuracy_options)
    elif finetune_epochs:
        raise InvalidConfigError("--finetune-epochs fine-tunes the subnets of --accuracy supernet:NET.safetensors")
    for p in front[:limit]:
        trained = None
        if supernet is not None:
            from hwnas.accuracy.data import to_input
            from hwnas.accuracy.supernet import trained_subnet

            _, model, data, origin = trained_subnet(supernet.path, space, p.genome, finetune_epochs=finetune_epochs)
            trained = Trained(model=model, data=data, origin=origin)
            calibration = to_input(data.x_train[:supernet.calibration_images], space.input_shape(p.genome)).numpy()
        for target, hw in zip(targets, p.hws):
            if not target.compiles:
                continue
            folder = out_dir / "artifacts" / f"{p.key}-{target.spec.replace(':', '_')}"
            rel = str(folder.relative_to(out_dir))
            if (folder / "manifest.json").is_file():
                made.setdefault(p.key, []).append(rel)
                continue
            cand = Candidate.from_space(space, p.genome, hw, weights=trained.model.state_dict() if trained else None) \
                if space else Candidate.from_onnx(config.onnx, hw)
            try:
                if config.repeats is not None and target.measure_options is not None:
                    target.set_measure_options(repeats=config.repeats)
                if trained is not None:
                    target.calibrate_with(calibration)
                with tempfile.TemporaryDirectory(prefix="hwnas-artifact-") as work:  # the export, until bundled
                    ev = evaluate(cand, target, cost=config.cost, workdir=work)
                    write_bundle(ev, folder, overwrite=True, trained=trained)
                made.setdefault(p.key, []).append(rel)
            except HwnasError as exc:
                log.warning("artifact of %s on %s failed: %s", p.key, target.spec, exc)
    return made


def existing_artifacts(out_dir: Path, front: list[Point]) -> dict[str, list[str]]:
    made: dict[str, list[str]] = {}
    for p in front:
        for m in sorted((out_dir / "artifacts").glob(f"{p.key}-*/manifest.json")):
            made.setdefault(p.key, []).append(str(m.parent.relative_to(out_dir)))
    return made


def write_report(out_dir: str | Path, *, artifacts: int = 0, transfer: bool = True,
                 finetune_epochs: int = 0) -> dict[str, Any]:
    """Rebuild the report files of the search in ``out_dir`` from its store: ``csv``, ``plot``, ``html``,
    and for a multi-target search ``transfer`` (transfer.csv; its cells, as :func:`transfer_table` returns
    them, in ``transfer_table``; ``transfer=False`` leaves it out)."""
    from hwnas.arch import get_space

    out_dir = Path(out_dir)
    config, points, objectives, checks = load_run(out_dir)
    front = pareto_front(points, objectives, checks)
    space = get_space(config.space, **config.space_options) if config.space else None
    made = emit_artifacts(out_dir, config, front, limit=artifacts, finetune_epochs=finetune_epochs) if artifacts else {}
    for key, paths in existing_artifacts(out_dir, front).items():
        made.setdefault(key, [])
        made[key] = sorted(set(made[key]) | set(paths))
    files = {"csv": out_dir / "pareto.csv", "plot": out_dir / "pareto.png", "html": out_dir / "report.html"}
    from hwnas.pipeline.store import ResultStore

    numerics = front_numerics(ResultStore(out_dir / "results.db"), config, front)
    write_csv(files["csv"], front, objectives, space, numerics)
    if points:
        write_plot(files["plot"], points, front, objectives, checks)
    ladder = None
    if config.ladder is not None:
        from hwnas.pipeline.store import ResultStore

        store = ResultStore(out_dir / "results.db")
        repriced = {k: v for k, v in ((p.key, store.get(f"ladder/{Search.RUN_ID}", p.key)) for p in points)
                    if v is not None}
        ladder = ladder_rows(points, repriced, objectives, config.ladder, config.cost or "default")
    transfer = transfer_table(out_dir, config, points, objectives, checks) if transfer else None
    if transfer is not None:
        files["transfer"] = out_dir / "transfer.csv"
        write_transfer_csv(files["transfer"], transfer, space)
    from hwnas.pipeline.store import ResultStore

    reference = ResultStore(out_dir / "results.db").get(REFERENCE_NAMESPACE, REFERENCE_KEY)
    files["artifact_lines"] = artifact_lines(out_dir, made)  # read once: the page and the closing lines
    write_html(files["html"], config, points, front, objectives, made, space, ladder, transfer, reference, numerics,
               files["artifact_lines"])
    files["transfer_table"] = transfer
    return files
