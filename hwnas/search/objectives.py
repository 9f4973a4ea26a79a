"""Objectives and constraints: metric names resolved to terms per target (or aggregated over the
targets), the evaluated :class:`Point`, feasibility and the Pareto front."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError, RunError
from hwnas.metrics import METRICS, canonical
from hwnas.search.config import Bound

#: how a cost metric may be aggregated over the targets (``metric@worst``): each target's value is divided
#: by the reference network's value on that target, then the largest, or the geometric mean, is taken
AGGREGATIONS = ("worst", "geomean")


@dataclasses.dataclass(frozen=True)
class Term:
    """One objective or constraint metric, resolved to a target (None: accuracy, target-independent),
    or aggregated over every target (``aggregate``, one of :data:`AGGREGATIONS`; ``target`` is None)."""

    metric: str
    target: str | None
    maximize: bool
    aggregate: str | None = None
    #: an aggregated term's ``(target, reference value)`` pairs, one per target (attached by
    #: :func:`with_references` once the reference network is evaluated)
    references: tuple[tuple[str, float], ...] | None = None

    @property
    def label(self) -> str:
        if self.aggregate is not None:
            return f"{self.metric}@{self.aggregate}"
        return self.metric if self.target is None else f"{self.metric}@{self.target}"

    def combine(self, values: dict[str, float | None]) -> float | None:
        """An aggregated term's value from each target's value (None when one is missing)."""
        if self.references is None:
            raise RuntimeError(f"{self.label}: the reference values are not attached")
        normalised = []
        for spec, ref in self.references:
            v = values.get(spec)
            if v is None:
                return None
            normalised.append(v / ref)
        if self.aggregate == "worst":
            return max(normalised)
        if min(normalised) <= 0:
            return 0.0
        return math.exp(sum(math.log(v) for v in normalised) / len(normalised))


def apply_aggregate(objectives: Sequence[str], aggregate: str) -> tuple[str, ...]:
    """``--aggregate``: every cost objective named without ``@`` becomes ``metric@aggregate``
    (``none``: objectives unchanged, one per target)."""
    known = ("none", *AGGREGATIONS)
    if aggregate not in known:
        raise InvalidConfigError(f"unknown --aggregate {aggregate!r}; known: {', '.join(known)}")
    if aggregate == "none":
        return tuple(objectives)
    out, changed = [], False
    for name in objectives:
        metric = name.strip()
        if "@" not in metric and canonical(metric) != "accuracy":
            metric, changed = f"{metric}@{aggregate}", True
        out.append(metric)
    if not changed:
        raise InvalidConfigError(f"--aggregate {aggregate} has no objective to aggregate: name a cost metric without "
                                 f"@target in --objectives (e.g. accuracy,latency_ms)")
    return tuple(out)


def resolve_terms(names: Sequence[str], targets: Sequence, *, has_accuracy: bool) -> list[Term]:
    """Objective names -> terms; a cost metric without ``@target`` means every target,
    ``metric@worst`` or ``metric@geomean`` one term aggregated over the targets."""
    terms: list[Term] = []
    specs = [t.spec for t in targets]
    for raw in names:
        metric, _, where = raw.strip().partition("@")
        metric = canonical(metric)
        if where and where not in specs and where not in AGGREGATIONS:
            raise InvalidConfigError(
                f"{raw.strip()!r} names {where!r}, which is neither a searched target ({', '.join(specs)}) nor an "
                f"aggregation over the targets ({', '.join(AGGREGATIONS)}); write {metric}@TARGET or "
                f"{metric}@{AGGREGATIONS[0]}")
        if where in AGGREGATIONS and where not in specs:
            if metric == "accuracy" or METRICS[metric].maximize:
                raise InvalidConfigError(
                    f"{raw.strip()!r}: {metric} is not a cost and cannot be aggregated over targets; only cost "
                    f"metrics (latency_ms, energy_mj, ...) can; write {metric}")
            if len(targets) < 2:
                raise InvalidConfigError(
                    f"{raw.strip()!r} aggregates over targets but only {specs[0]} is searched; add another "
                    f"--target or write {metric}")
            lacking = [t.spec for t in targets if metric not in t.metrics]
            if lacking:
                raise InvalidConfigError(
                    f"{raw.strip()!r} cannot be aggregated: target(s) {', '.join(lacking)} do not define {metric}; "
                    f"name the targets that do one by one ({metric}@TARGET) or choose another metric")
            terms.append(Term(metric, None, False, aggregate=where))
            continue
        if metric == "accuracy":
            if not has_accuracy:
                raise InvalidConfigError("accuracy needs an architecture space (an ONNX model has no accuracy here)")
            terms.append(Term("accuracy", None, True))
            continue
        chosen = [t for t in targets if t.spec == where] if where else list(targets)
        lacking = [t.spec for t in chosen if metric not in t.metrics]
        if lacking:
            raise InvalidConfigError(f"metric {metric} is not defined by target(s) {', '.join(lacking)}")
        terms += [Term(metric, t.spec, METRICS[metric].maximize) for t in chosen]
    labels = [t.label for t in terms]
    twice = next((label for label in labels if labels.count(label) > 1), None)
    if twice is not None:
        raise InvalidConfigError(f"objective {twice} is named twice (a metric without @target means every target)")
    return terms


def with_references(terms: Sequence[Term], reference: dict[str, dict[str, float]]) -> list[Term]:
    """``terms`` with the reference network's values (``reference[target][metric]``) attached to the
    aggregated ones; a reference value that is missing or not positive cannot normalise: RunError."""
    out = []
    for t in terms:
        if t.aggregate is not None:
            refs = []
            for spec, metrics in reference.items():
                ref = metrics.get(t.metric)
                if ref is None or not ref > 0:
                    raise RunError(f"{t.label}: the reference network's {t.metric} on {spec} is {ref}, which cannot "
                                   f"normalise; aggregate another metric or name the targets one by one")
                refs.append((spec, float(ref)))
            t = dataclasses.replace(t, references=tuple(refs))
        out.append(t)
    return out


@dataclasses.dataclass
class Point:
    """One evaluated (or refused) point of the joint space."""

    x: tuple[int, ...]
    genome: tuple[int, ...]
    hws: list[dict[str, Any]]
    key: str
    #: ok, failed, or invalid (a hardware config that breaks a rule: not evaluated)
    status: str
    metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    error: str | None = None

    def value(self, term: Term) -> float | None:
        if term.aggregate is not None:
            return term.combine({spec: m.get(term.metric) for spec, m in self.metrics.items()})
        if term.target is None:
            for m in self.metrics.values():
                if term.metric in m:
                    return m[term.metric]
            return None
        return self.metrics.get(term.target, {}).get(term.metric)

    def as_dict(self) -> dict[str, Any]:
        return {"x": list(self.x), "genome": list(self.genome), "hws": self.hws, "key": self.key,
                "status": self.status, "metrics": self.metrics, "error": self.error}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Point:
        return cls(x=tuple(d["x"]), genome=tuple(d["genome"]), hws=d["hws"], key=d["key"], status=d["status"],
                   metrics=d["metrics"], error=d.get("error"))


def resolve_bounds(bounds: Sequence[Bound], targets: Sequence, *, has_accuracy: bool) -> list[tuple[Term, Bound]]:
    """Each constraint on each target it concerns (a metric without ``@target``: every target), then each
    target's built-in constraints (:meth:`~hwnas.targets.Target.builtin_constraints`, e.g. its budget)."""
    checks = [(term, b) for b in bounds for term in resolve_terms([b.metric], targets, has_accuracy=has_accuracy)]
    for t in targets:
        for text in t.builtin_constraints():
            b = Bound.parse(text)
            b = Bound(f"{b.metric}@{t.spec}", b.op, b.value)
            checks += [(term, b) for term in resolve_terms([b.metric], [t], has_accuracy=has_accuracy)]
    return checks


def is_feasible(point: Point, checks: Sequence[tuple[Term, Bound]]) -> bool:
    if point.status != "ok":
        return False
    for term, bound in checks:
        v = point.value(term)
        if v is None or bound.violation(v) > 0:
            return False
    return True


def pareto_front(points: Sequence[Point], objectives: Sequence[Term],
                 checks: Sequence[tuple[Term, Bound]]) -> list[Point]:
    """The feasible, non-dominated points (objectives minimised after flipping maximised ones), in
    lexicographic order of their objective vectors; of identical vectors, the first point is kept."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    feasible = [p for p in points if is_feasible(p, checks) and all(p.value(t) is not None for t in objectives)]
    if not feasible:
        return []
    F = np.array([[(-1 if t.maximize else 1) * p.value(t) for t in objectives] for p in feasible])
    nondominated = np.sort(NonDominatedSorting().do(F, only_non_dominated_front=True))
    front, seen = [], set()
    for i in nondominated[np.lexsort(F[nondominated].T[::-1])]:  # lexsort is stable: ties keep point order
        k = tuple(np.round(F[i], 12))
        if k not in seen:  # identical objective vectors: keep one
            seen.add(k)
            front.append(feasible[i])
    return front
