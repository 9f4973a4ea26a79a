"""A search's report: ``pareto.csv``, ``pareto.png``, ``report.html`` and the front's artifacts.

Everything is rebuilt from the results store (``hwnas report DIR``).
"""

from __future__ import annotations

import csv
import html
import json
import logging
from pathlib import Path
from typing import Any

from hwnas.errors import HwnasError, InvalidConfigError
from hwnas.pipeline.search import (
    Bound,
    Point,
    Search,
    SearchConfig,
    Term,
    describe_numerics,
    is_feasible,
    load_plugins,
    numerics_key,
    pareto_front,
    resolve_bounds,
    resolve_terms,
)

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
    points = [Point.from_dict(v) for v in store.values(f"points/{Search.RUN_ID}")]
    return config, points, objectives, checks


def ladder_rows(points: list[Point], repriced: dict[str, dict], objectives: list[Term], method: str,
                cheap: str) -> list[dict[str, Any]]:
    """The cost ladder's comparison: one row per re-priced point, target and cost objective.

    ``rel_err``: (cheap - re-priced) / re-priced; ``disagree``: beyond
    :data:`~hwnas.pipeline.search.LADDER_TOLERANCE`, or the re-pricing failed.
    """
    from hwnas.pipeline.search import LADDER_TOLERANCE

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


def write_html(path: Path, config: SearchConfig, points: list[Point], front: list[Point], objectives: list[Term],
               artifacts: dict[str, list[str]], space=None, ladder: list[dict[str, Any]] | None = None,
               numerics: dict[str, str] | None = None) -> None:
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
        lrows = "".join(lrows)
        ladder_html = (f"<h2>Cost ladder: {e(cheap)} against {e(config.ladder)}</h2><p>Every front point of every "
                       f"generation was re-priced with {e(config.ladder)}; rows beyond +-10 % are highlighted.</p>"
                       f"<table><tr><th>architecture</th><th>target</th><th>metric</th><th>{e(cheap)}</th>"
                       f"<th>{e(config.ladder)}</th><th>difference</th><th>error</th></tr>{lrows}</table>")
    n_ok = sum(p.status == "ok" for p in points)
    n_failed = sum(p.status == "failed" for p in points)
    rows = []
    for i, p in enumerate(front):
        desc = space.describe(p.genome) if space is not None and p.genome else ""
        links = " ".join(f'<a href="{e(a)}/manifest.json">{e(Path(a).name)}</a>' for a in artifacts.get(p.key, []))
        cells = "".join(f"<td>{_fmt(p.value(t))}</td>" for t in objectives)
        bits = f"<br>bit-widths per layer: <code>{e(numerics[p.key])}</code>" if numerics.get(p.key) else ""
        rows.append(f"<tr><td>{i + 1}</td><td><code>{e(json.dumps(list(p.genome)))}</code><br>{e(desc)}</td>"
                    f"<td><code>{e(json.dumps(p.hws))}</code>{bits}</td>{cells}<td>{links}</td></tr>")
    settings = "".join(f"<tr><th>{e(k)}</th><td><code>{e(json.dumps(v))}</code></td></tr>"
                       for k, v in config.settings().items())
    failures = [p for p in points if p.status == "failed"][:20]
    fail_rows = "".join(f"<li><code>{e(json.dumps(list(p.genome)))}</code> {e(json.dumps(p.hws))}: "
                        f"{e(p.error or '')}</li>" for p in failures)
    head = "".join(f"<th>{e(t.label)}</th>" for t in objectives)
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
{ladder_html}
<h2>Settings</h2><table>{settings}</table>
<h2>Failures{' (first 20)' if n_failed > 20 else ''}</h2><ul>{fail_rows or '<li>none</li>'}</ul>
</body></html>
""")


def emit_artifacts(out_dir: Path, config: SearchConfig, front: list[Point], *, limit: int) -> dict[str, list[str]]:
    """Compile and write bundles of the first ``limit`` front points, for targets that compile."""
    from hwnas.arch import get_space
    from hwnas.pipeline.artifacts import write_bundle
    from hwnas.pipeline.evaluate import Candidate, evaluate
    from hwnas.targets import get_target

    made: dict[str, list[str]] = {}
    space = get_space(config.space, **config.space_options) if config.space else None
    targets = [get_target(t) for t in config.targets]
    for p in front[:limit]:
        for target, hw in zip(targets, p.hws):
            if not target.compiles:
                continue
            folder = out_dir / "artifacts" / f"{p.key}-{target.spec.replace(':', '_')}"
            rel = str(folder.relative_to(out_dir))
            if (folder / "manifest.json").is_file():
                made.setdefault(p.key, []).append(rel)
                continue
            cand = Candidate.from_space(space, p.genome, hw) if space else Candidate.from_onnx(config.onnx, hw)
            try:
                if config.repeats is not None and hasattr(target, "repeats"):
                    target.repeats = config.repeats
                ev = evaluate(cand, target, cost=config.cost)
                write_bundle(ev, folder, overwrite=True)
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


def write_report(out_dir: str | Path, *, artifacts: int = 0) -> dict[str, Path]:
    """Rebuild the report files of the search in ``out_dir`` from its store."""
    from hwnas.arch import get_space

    out_dir = Path(out_dir)
    config, points, objectives, checks = load_run(out_dir)
    front = pareto_front(points, objectives, checks)
    space = get_space(config.space, **config.space_options) if config.space else None
    made = emit_artifacts(out_dir, config, front, limit=artifacts) if artifacts else {}
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
    write_html(files["html"], config, points, front, objectives, made, space, ladder, numerics)
    return files
