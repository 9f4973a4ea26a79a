"""The search run (:class:`Search`) and its formulations.

The joint genome is the architecture genes followed by each target's HSS
genes. Candidates are canonicalised first (:meth:`Search.canonical`; nb201: the live genome), then, on
targets that compile, keyed by their exported graph (:meth:`Search._graph_of`), so genomes that build
the same network are one point. Every point is evaluated once per run (results come from the store
when a run is resumed), in a worker pool, and written to the store as it
finishes. Formulations:

* ``nsga2``: multi-objective; with ``surrogate="ehvi"`` (the default) a surrogate over the canonical
  candidates chooses each batch by predicted hypervolume improvement (:mod:`hwnas.search.ehvi`); with
  ``surrogate="xgb"`` NSGA-II
  each generation's offspring are screened from a large candidate pool by a bootstrap XGBoost
  ensemble fitted on the points evaluated so far (:mod:`hwnas.search.screening`), so the budget
  goes to the candidates predicted to extend the front; ``surrogate="none"`` is plain NSGA-II;
* ``constrained``: maximise accuracy subject to the constraints (a GA);
* ``scalarized``: ``w * accuracy - (1 - w) * normalised cost`` for several ``w`` (a GA each);
* ``two-stage``: architectures by accuracy first, then the hardware configs of the best;
* ``random``: uniform random points.

With several targets a cost metric is an objective per target (``latency_ms``:
one objective per target; ``latency_ms@cpu``: one target), or one objective
aggregated over the targets (``latency_ms@worst``, ``latency_ms@geomean``; see
:data:`AGGREGATIONS`): each target's value is divided by the value of the
space's reference network (:meth:`~hwnas.arch.ArchSpace.reference_genome`,
each target's default hardware config) on that target, then the largest
(``worst``) or the geometric mean (``geomean``) is taken.

Constraints (``latency_ms<=5``) work with every formulation: a point that
violates one, or that failed to evaluate, is infeasible.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError, RunError
from hwnas.search.config import (FAILED, MAX_STALE_GENERATIONS, REFERENCE_KEY, REFERENCE_NAMESPACE, RESUMABLE, Bound,
                                 SearchConfig, load_plugins, use_remote)
from hwnas.search.objectives import Point, Term, pareto_front, resolve_bounds, resolve_terms, with_references
from hwnas.search.screening import screen
from hwnas.search.space import point_key
from hwnas.search.worker import PointEvaluator, WorkerSetup, _worker_init, _worker_work

log = logging.getLogger(__name__)


def _random_reset_mutation():
    """Each gene, with probability 1/n, takes a uniformly random other value (genes are categorical)."""
    from pymoo.core.mutation import Mutation

    class RandomReset(Mutation):
        def _do(self, problem, X, *args, random_state=None, **kwargs):
            X = np.array(X, dtype=float, copy=True)
            n = X.shape[1]
            hit = random_state.random(X.shape) < 1.0 / n
            # at least one gene per individual changes
            none = ~hit.any(axis=1)
            hit[none, random_state.integers(0, n, size=int(none.sum()))] = True
            high = problem.xu + 1
            shift = random_state.integers(1, np.maximum(high, 2), size=X.shape)
            X[hit] = ((X + shift) % np.maximum(high, 1))[hit]
            return X

    return RandomReset()


def _operators():
    from pymoo.operators.crossover.ux import UniformCrossover
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    return {"sampling": IntegerRandomSampling(), "crossover": UniformCrossover(),
            "mutation": _random_reset_mutation(), "eliminate_duplicates": True}


class Search:
    """One search run writing into ``out_dir`` (``results.db`` and, after it, the report)."""

    RUN_ID = "search"

    def __init__(self, config: SearchConfig, out_dir: str | Path, *, resume: bool = False,
                 progress: Callable[[Search], None] | None = None) -> None:
        from hwnas.pipeline.artifacts import versions
        from hwnas.pipeline.store import ResultStore

        self.config = config
        self.out_dir = Path(out_dir)
        load_plugins(config.plugins)
        self._precheck(config)  # bad input fails before anything is written
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.store_path = self.out_dir / "results.db"
        self.store = ResultStore(self.store_path)
        # everything is checked (and the parent's evaluator built) before the run is opened
        self.evaluator = PointEvaluator(WorkerSetup(config, str(self.store_path), self.RUN_ID))
        self.joint = self.evaluator.joint
        has_acc = self.evaluator.space is not None
        self.objectives = resolve_terms(config.objectives, self.evaluator.targets, has_accuracy=has_acc)
        self.checks = resolve_bounds([Bound.parse(c) for c in config.constraints], self.evaluator.targets,
                                     has_accuracy=has_acc)
        if config.formulation in ("constrained",) and not self.checks:
            raise InvalidConfigError(f"the {config.formulation} formulation needs at least one --constraint")
        if config.formulation in ("scalarized", "two-stage"):
            if not any(t.metric == "accuracy" for t in self.objectives) or len(self.objectives) < 2:
                raise InvalidConfigError(
                    f"the {config.formulation} formulation needs accuracy and at least one cost objective")
        self.run_info = self.store.open_run(self.RUN_ID, config.settings(), versions(), resume=resume,
                                       allowed_to_change=RESUMABLE)
        # the accuracy evaluator's settings (e.g. a supernet's fingerprint) are kept with the run; resuming with
        # others (a supernet retrained into the same file) would mix two accuracies on one front
        acc = json.loads(json.dumps(self.evaluator.accuracy.settings() if self.evaluator.accuracy else {}, default=str))
        recorded = self.store.get("accuracy-settings", self.RUN_ID)
        if recorded is not None and recorded != acc:
            changed = sorted(k for k in set(acc) | set(recorded) if acc.get(k) != recorded.get(k))
            raise InvalidConfigError(f"the run in {self.out_dir} was searched with other accuracy settings "
                                     f"({', '.join(changed)} changed); use another --out")
        self.store.put("accuracy-settings", self.RUN_ID, acc)
        #: target -> the reference network's metrics (aggregated objectives divide by them), or None
        self.reference: dict[str, dict[str, float]] | None = None
        if any(t.aggregate for t in [*self.objectives, *(term for term, _ in self.checks)]):
            self.reference = self._reference()
            self.objectives = with_references(self.objectives, self.reference)
            terms = with_references([term for term, _ in self.checks], self.reference)
            self.checks = [(term, b) for term, (_, b) in zip(terms, self.checks)]
        self.points: dict[str, Point] = {}
        self.order: list[str] = []
        self.from_store = 0
        self.progress = progress
        self.namespace = f"points/{self.RUN_ID}"
        self.ladder_namespace = f"ladder/{self.RUN_ID}"
        #: genomes met that compute the same function as another (their key -> the evaluated point's, in the store)
        self.equivalent_namespace = f"equivalent/{self.RUN_ID}"
        self.equivalent: set[str] = set()
        #: candidates (point key) whose canonical genome exports to the graph of another, evaluated, point
        #: (its key), with the same hardware configs (see :meth:`_graph_of`)
        self.aliases: dict[str, str] = {}
        #: (structural key, hardware configs) -> the point evaluated for them
        self._graph_owner: dict[tuple[str, str], str] = {}
        #: canonical genome -> its structural key, in the store (a resumed run exports nothing again)
        self.graph_namespace = f"graph/{self.RUN_ID}"
        self.by_graph = (config.equivalence == "graph" and self.evaluator.space is not None
                         and any(t.compiles for t in self.evaluator.targets))
        #: genome -> the ONNX file exported for its structural key during one :meth:`evaluate` call, handed to
        #: the workers that compile the genome (with any hardware config); removed when the call ends
        self._exports: dict[tuple[int, ...], Path] = {}
        self._export_dir: str | None = None
        self._pool = None
        #: time spent building, fitting and screening surrogate pools, and the generations it was spent on
        self.surrogate_seconds = 0.0
        self.surrogate_generations = 0

    def _reference(self) -> dict[str, dict[str, float]]:
        """Every target's metrics of the reference network (the space's :meth:`reference_genome`, or
        the ONNX model) with the target's default hardware config: evaluated once, kept in the store."""
        stored = self.store.get(REFERENCE_NAMESPACE, REFERENCE_KEY)
        specs = [t.spec for t in self.evaluator.targets]
        if stored is not None and set(stored["metrics"]) == set(specs):  # the store sorts keys: target order
            return {spec: stored["metrics"][spec] for spec in specs}
        space = self.evaluator.space
        genome = tuple(space.reference_genome()) if space is not None else ()
        hws = [t.hardware_space.default() for t in self.evaluator.targets]
        log.info("evaluating the reference network %s on every target", list(genome))
        metrics = {}
        for i, (target, hw) in enumerate(zip(self.evaluator.targets, hws)):
            values, error, _ = self.evaluator.evaluate_extra(genome, i, hw)
            if values is None:
                raise RunError(f"the reference network {list(genome)} (default hardware) failed on {target.spec}, so "
                               f"aggregated objectives cannot be normalised ({error}); name the targets one by one "
                               f"(metric@TARGET) instead")
            metrics[target.spec] = values
        self.store.put(REFERENCE_NAMESPACE, REFERENCE_KEY, {"genome": list(genome), "hws": hws, "metrics": metrics})
        return metrics

    @staticmethod
    def _precheck(config: SearchConfig) -> None:
        """Targets, cost methods, objectives and constraints: checked without touching the disk."""
        from hwnas.arch import get_space
        from hwnas.targets import get_target

        from hwnas.pipeline.executor import probe, require

        require(config.executor)
        if config.cluster:
            probe(config.executor, config.cluster)
        if config.space:
            space = get_space(config.space, **config.space_options)
            if config.needs_accuracy:
                from hwnas.accuracy import get_accuracy

                get_accuracy(config.accuracy, for_space=space, **config.accuracy_options)
        targets = [get_target(t) for t in config.targets]
        use_remote(targets, config.remote_device())  # reaches the tracker: unreachable, or no server with the key
        for t in targets:
            t.cost_method(config.cost)
            if config.ladder is not None:
                t.cost_method(config.ladder)
        resolve_terms(config.objectives, targets, has_accuracy=config.space is not None)
        resolve_bounds([Bound.parse(c) for c in config.constraints], targets, has_accuracy=config.space is not None)

    # -- evaluation ----------------------------------------------------------------------------
    @property
    def evaluated(self) -> int:
        return len(self.points)

    @property
    def remaining(self) -> int:
        return max(0, self.config.budget - self.evaluated)

    def _stored_point(self, x, genome, hws, key) -> Point | None:
        summary = self.store.get(self.namespace, key)
        if summary is not None:
            return Point.from_dict(summary)
        metrics, errors = {}, []
        for target, hw in zip(self.evaluator.targets, hws):
            row = self.store.lookup(self.RUN_ID, self.evaluator.candidate(genome, hw).key(hw), target.spec)
            if row is None:
                return None
            if row.status == "ok":
                metrics[target.spec] = dict(row.metrics)
            else:
                errors.append(row.error or "failed")
        p = Point(tuple(x), tuple(genome), hws, key, "failed" if errors else "ok", metrics,
                  errors[0] if errors else None)
        self.store.put(self.namespace, key, p.as_dict())
        return p

    def canonical(self, genome: tuple[int, ...]) -> tuple[int, ...]:
        """The genome evaluated in ``genome``'s place: the space's representative of its function
        (:meth:`~hwnas.arch.ArchSpace.canonical`; nb201: the live genome)."""
        space = self.evaluator.space
        return tuple(space.canonical(genome)) if space is not None else genome

    def _note_equivalent(self, genome, hws, canonical, key: str, *, by: str = "genome") -> None:
        """Record in the store (namespace ``equivalent/<run id>``) that ``genome`` computes the same function
        as ``canonical`` (point ``key``), found ``by`` the space's canonical genome or the exported graph's
        structural key: it takes that point's result and costs no evaluation."""
        alias = point_key(genome, hws)
        if alias in self.equivalent:
            return
        self.equivalent.add(alias)
        if self.store.get(self.equivalent_namespace, alias) is None:
            self.store.put(self.equivalent_namespace, alias, {"genome": list(genome), "hws": hws,
                                                              "canonical": list(canonical), "same_as": key, "by": by})

    def point(self, key: str) -> Point | None:
        """The point evaluated for point key ``key`` (the one whose graph it shares, for an alias), or None."""
        return self.points.get(self.aliases.get(key, key))

    def _graph_of(self, genome: tuple[int, ...], hws) -> tuple[str, str] | None:
        """The structural key of the network of (canonical) ``genome`` with its hardware configs ``hws``:
        :func:`~hwnas.ir.graph.structural_key` of the exported ONNX graph (dead code, names, node order and
        weight values do not count), kept in the store per genome, with ``hws``. The export made for it is
        kept for the workers that compile the genome in this :meth:`evaluate` call. None when the network does
        not export (its evaluation then fails and says why)."""
        hw = json.dumps(list(hws), sort_keys=True)
        stored = self.store.get(self.graph_namespace, json.dumps(list(genome)))
        if stored is not None:
            return stored, hw
        import tempfile

        import onnx

        from hwnas.ir.graph import structural_key
        from hwnas.ir.lower import export_onnx

        space = self.evaluator.space
        if self._export_dir is None:
            self._export_dir = tempfile.mkdtemp(prefix="hwnas-graph-")
        try:
            path = export_onnx(space.build(genome), space.input_shape(genome),
                               Path(self._export_dir) / f"{len(self._exports)}.onnx")
            graph = structural_key(onnx.load(str(path)))
        except Exception as exc:  # the worker's own export will fail the same way, and record why
            log.info("no structural key for %s: %s", list(genome), exc)
            return None
        self._exports[tuple(genome)] = path
        self.store.put(self.graph_namespace, json.dumps(list(genome)), graph)
        return graph, hw

    def evaluate(self, X: Sequence[Sequence[int]], *, limit: int | None = None) -> list[Point | None]:
        """Points of ``X`` (None where the budget ran out first); each distinct point is evaluated once.

        Every genome is first replaced by its canonical form (:meth:`canonical`): a genome equivalent to
        one evaluated (or being evaluated) takes that point's result, with the canonical genome in ``x``
        and ``genome``, and does not count against the budget. With ``equivalence="graph"`` on a target
        that compiles, a new canonical genome whose network exports to the graph of a point evaluated (or
        being evaluated), with the same hardware configs, takes that point
        (:attr:`aliases`) the same way (:meth:`_graph_of`)."""
        try:
            return self._evaluate(X, self.config.budget if limit is None else min(limit, self.config.budget))
        finally:
            if self._export_dir is not None:  # the batch is compiled: its exports are no longer needed
                import shutil

                shutil.rmtree(self._export_dir, ignore_errors=True)
                self._export_dir, self._exports = None, {}

    def _evaluate(self, X: Sequence[Sequence[int]], limit: int) -> list[Point | None]:
        out: list[Point | None] = [None] * len(X)
        todo: dict[str, list[int]] = {}
        tasks: list[tuple[str, Point]] = []
        for i, x in enumerate(X):
            x = tuple(int(v) for v in x)
            try:
                genome, hws = self.joint.split(x)
            except InvalidConfigError as exc:
                out[i] = Point(x, tuple(x[: self.joint.arch_size]), [], "", "invalid", error=str(exc))
                continue
            canonical = self.canonical(genome)
            key = point_key(canonical, hws)
            if canonical != genome:
                self._note_equivalent(genome, hws, canonical, key)
                genome, x = canonical, canonical + x[len(canonical):]
            key = self.aliases.get(key, key)
            if key in self.points:
                out[i] = self.points[key]
                continue
            if key in todo:
                todo[key].append(i)
                continue
            stored = self._stored_point(x, genome, hws, key)
            if stored is not None:
                self._add(stored)
                self.from_store += 1
                out[i] = stored
                if self.by_graph and (graph := self._graph_of(genome, hws)) is not None:
                    self._graph_owner.setdefault(graph, key)
                continue
            if self.evaluated + len(tasks) >= limit:
                continue
            if self.by_graph and (graph := self._graph_of(genome, hws)) is not None:
                owner = self._graph_owner.setdefault(graph, key)
                if owner != key:  # another point has this graph: take its result, evaluated or pending
                    self.aliases[key] = owner
                    first = self.points.get(owner) or next(p for k, p in tasks if k == owner)
                    self._note_equivalent(genome, hws, first.genome, owner, by="graph")
                    if owner in self.points:
                        out[i] = self.points[owner]
                    else:
                        todo[owner].append(i)
                    continue
            todo[key] = [i]
            tasks.append((key, Point(x, genome, hws, key, "pending")))
        if tasks:
            def done(j, outcome):
                key, p = tasks[j]
                if outcome.ok:
                    self._replay(outcome.value)
                    p.metrics = outcome.value["metrics"]
                    p.error = outcome.value["error"]
                    p.status = "failed" if p.error else "ok"
                else:
                    p.status, p.error = "failed", outcome.error
                    for target, hw in zip(self.evaluator.targets, p.hws):
                        self.evaluator.record(self.evaluator.candidate(p.genome, hw).key(hw), p.genome, hw, target,
                                               {}, "failed", outcome.error, {}, None)
                self.store.put(self.namespace, key, p.as_dict())
                self.points[key] = p
                if self.progress is not None:
                    self.progress(self)
                for i in todo[key]:
                    out[i] = p

            exported = {g: str(path) for g, path in self._exports.items()}
            self._workers().run([(p.genome, p.hws, exported.get(tuple(p.genome))) for _, p in tasks], done)
            self.order += [key for key, _ in tasks if key in self.points]  # task order, whatever finished first
        if self.config.ladder is not None:
            self.reprice_front()
        return out

    # -- cost ladder ---------------------------------------------------------------------------
    def repriced(self) -> dict[str, dict[str, dict[str, float]]]:
        """Point key -> target -> metrics by the ladder's method, for the points re-priced so far."""
        return {k: v for k, v in ((k, self.store.get(self.ladder_namespace, k)) for k in self.points)
                if v is not None}

    def reprice_front(self) -> int:
        """Re-price the points of the current front not yet re-priced (the workers are idle meanwhile)."""
        n = 0
        for p in self.front():
            if self.store.get(self.ladder_namespace, p.key) is not None:
                continue
            try:
                metrics = self.evaluator.reprice(p.genome, p.hws, self.config.ladder)
            except Exception as exc:  # a failed re-pricing is reported, the search goes on
                from hwnas.pipeline.executor import describe

                metrics = {"error": describe(exc)}
            self.store.put(self.ladder_namespace, p.key, metrics)
            n += 1
        return n

    def accuracies(self, genomes: Sequence[Sequence[int]]) -> list[float | None]:
        """Accuracy only (no compile), in the workers; cached in the store."""
        results: list[float | None] = [None] * len(genomes)

        def done(j, outcome):
            if outcome.ok:
                self._replay(outcome.value)
            results[j] = outcome.value["accuracy"] if outcome.ok else None

        self._workers().run([(tuple(g), None) for g in genomes], done)
        return results

    def _add(self, p: Point) -> None:
        self.points[p.key] = p
        self.order.append(p.key)
        if self.progress is not None:
            self.progress(self)

    def _replay(self, value: dict[str, Any]) -> None:
        """Write a cluster worker's journaled writes into the store (see :class:`~hwnas.pipeline.store.Journal`)."""
        from hwnas.pipeline.store import Journal

        Journal.replay(value.pop("journal", ()), self.store)

    def _workers(self):
        from hwnas.pipeline.executor import WorkerPool, make_executor

        cfg = self.config
        if self._pool is None:
            if cfg.workers == 0 and cfg.executor == "process":
                self._pool = WorkerPool(workers=0, init=lambda _arg, _gate: self.evaluator, init_arg=None,
                                        work=_worker_work, timeout_s=None)
            else:
                # process workers write the store themselves; cluster workers journal their writes to us
                store_path = str(self.store_path) if cfg.executor == "process" else None
                setup = WorkerSetup(cfg, store_path, self.RUN_ID)
                self._pool = make_executor(cfg.executor, workers=cfg.workers, init=_worker_init, init_arg=setup,
                                           work=_worker_work, timeout_s=cfg.timeout_s, address=cfg.cluster)
        return self._pool

    # -- objective vectors ---------------------------------------------------------------------
    def F(self, p: Point | None, terms: Sequence[Term] | None = None) -> list[float]:
        terms = self.objectives if terms is None else terms
        if p is None or p.status != "ok":
            return [FAILED] * len(terms)
        return [FAILED if (v := p.value(t)) is None else (-v if t.maximize else v) for t in terms]

    def G(self, p: Point | None) -> list[float]:
        """Constraint values (<= 0 feasible), the last one the evaluation itself."""
        if p is None or p.status != "ok":
            return [FAILED] * (len(self.checks) + 1)
        g = []
        for term, bound in self.checks:
            v = p.value(term)
            g.append(FAILED if v is None else bound.violation(v))
        return g + [0.0]

    # -- formulations --------------------------------------------------------------------------
    def _problem(self, cards: np.ndarray, n_obj: int, *, constrained: bool = True):
        """The pymoo problem over integer genes ``0..cards-1`` (constraints: ours plus 'evaluated')."""
        from pymoo.core.problem import Problem

        return Problem(n_var=len(cards), n_obj=n_obj, n_ieq_constr=len(self.checks) + 1 if constrained else 0,
                       xl=np.zeros(len(cards)), xu=cards - 1, vtype=int)

    def _ga(self, algorithm, fitness: Callable[[Point | None], list[float]], n_obj: int, limit: int,
            seed: int | None = None, allowed: Sequence[Sequence[int]] | None = None) -> None:
        """Run ``algorithm`` until ``limit`` points are evaluated; ``allowed``: the values each gene may
        take (all when None); the algorithm then searches indices into them."""
        from pymoo.core.termination import NoTermination

        if allowed is None:
            allowed = [list(range(c)) for c in self.joint.cardinalities]
        table = [np.asarray(a, dtype=int) for a in allowed]
        cards = np.array([len(a) for a in table])
        problem = self._problem(cards, n_obj)
        algorithm.setup(problem, termination=NoTermination(), seed=self.config.seed if seed is None else seed)
        stale = 0
        while self.evaluated < limit and stale < MAX_STALE_GENERATIONS:
            pop = algorithm.ask()
            index = np.clip(np.rint(pop.get("X")).astype(int), 0, cards - 1)
            X = np.stack([table[i][index[:, i]] for i in range(len(table))], axis=1)
            before = self.evaluated
            pts = self.evaluate(X, limit=limit)
            pop.set("F", np.array([fitness(p) for p in pts], dtype=float))
            pop.set("G", np.array([self.G(p) for p in pts], dtype=float))
            algorithm.tell(infills=pop)
            stale = stale + 1 if self.evaluated == before else 0

    def _nsga2(self) -> None:
        from pymoo.algorithms.moo.nsga2 import NSGA2

        if self.config.surrogate == "ehvi":
            return self._ehvi()
        algorithm = NSGA2(pop_size=self.config.pop_size, **_operators())
        if self.config.surrogate == "none":
            self._ga(algorithm, self.F, len(self.objectives), self.config.budget)
        else:
            self._surrogate_nsga2(algorithm)

    # -- surrogate-assisted NSGA-II -------------------------------------------------------------
    def _surrogate_nsga2(self, algorithm) -> None:
        """NSGA-II whose offspring are screened by a surrogate before they are evaluated.

        pymoo's NSGA-II keeps the population (its survival: rank and crowding). Each
        generation builds a pool of candidates - the population's mating offspring, uniform
        random samples and the one-gene neighbours of the current front - drops those already
        evaluated or invalid, predicts every objective and constraint of the rest with a
        bootstrap XGBoost ensemble fitted on all the points evaluated so far (failed points
        excluded; a second model predicts failure when some failed, and candidates predicted
        to fail count as infeasible), and evaluates only the ``pop_size`` most promising
        (:func:`~hwnas.search.screening.select_by_prediction` on the optimistic predictions ``mean - SURROGATE_KAPPA *
        std``, the objectives taken as quantiles among the evaluated points). Until
        ``2 * pop_size`` points are usable the choice from the pool is uniform. Deterministic for ``config.seed``.
        """
        import time

        from pymoo.core.population import Population
        from pymoo.core.termination import NoTermination

        cfg = self.config
        cards = np.array(self.joint.cardinalities)
        problem = self._problem(cards, len(self.objectives))
        algorithm.setup(problem, termination=NoTermination(), seed=cfg.seed)
        rng = np.random.default_rng([cfg.seed, 0x5EED])  # a stream apart from pymoo's
        stale = 0
        while self.evaluated < cfg.budget and stale < MAX_STALE_GENERATIONS:
            if not algorithm.is_initialized:
                X = np.clip(np.rint(algorithm.ask().get("X")).astype(int), 0, cards - 1)
            else:
                started = time.perf_counter()
                # always a whole generation, cut by the budget in evaluate: a resumed run with a larger
                # budget asks for the same points as the first run did, and finds them in the store
                X = screen(self, algorithm, problem, rng, cfg.pop_size)
                self.surrogate_seconds += time.perf_counter() - started
                self.surrogate_generations += 1
            before = self.evaluated
            pts = self.evaluate(X, limit=cfg.budget) if len(X) else []
            stale = stale + 1 if self.evaluated == before else 0
            if not len(X):
                continue
            pop = Population.new(X=np.asarray(X, dtype=float))
            pop.set("F", np.array([self.F(p) for p in pts], dtype=float))
            pop.set("G", np.array([self.G(p) for p in pts], dtype=float))
            algorithm.tell(infills=pop)

    def _ehvi(self) -> None:
        """The default search: a first batch of uniform random canonical points, then batches chosen by
        the expected hypervolume improvement under a bootstrap ensemble (:mod:`hwnas.search.ehvi`).
        The budget only stops it: a longer run starts with the points of a shorter one."""
        import time

        from hwnas.search import ehvi

        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 0xE4F1])
        started = time.perf_counter()
        pool = ehvi.Pool(self)
        self.surrogate_seconds += time.perf_counter() - started
        first = pool.whole if pool.whole is not None else pool.canonical_rows(
            [self.joint.sample(rng) for _ in range(4 * ehvi.INITIAL)])
        X = first[np.sort(rng.choice(len(first), min(ehvi.INITIAL, len(first)), replace=False))]
        ref = ehvi.reference_point(self, self.evaluate(X, limit=cfg.budget))
        n = ehvi.batch_size(cfg.workers)
        stale = 0
        while self.evaluated < cfg.budget and stale < MAX_STALE_GENERATIONS:
            started = time.perf_counter()
            X = ehvi.propose(self, pool, rng, n, ref)
            self.surrogate_seconds += time.perf_counter() - started
            self.surrogate_generations += 1
            if not len(X):
                break
            before = self.evaluated
            self.evaluate(X, limit=cfg.budget)
            stale = stale + 1 if self.evaluated == before else 0

    def _primary(self) -> Term:
        return next((t for t in self.objectives if t.metric == "accuracy"), self.objectives[0])

    def _constrained(self) -> None:
        from pymoo.algorithms.soo.nonconvex.ga import GA

        primary = [self._primary()]
        self._ga(GA(pop_size=self.config.pop_size, **_operators()), lambda p: self.F(p, primary), 1,
                 self.config.budget)

    def _random(self) -> None:
        rng = np.random.default_rng(self.config.seed)
        stale = 0
        while self.remaining and stale < MAX_STALE_GENERATIONS:
            before = self.evaluated
            self.evaluate([self.joint.sample(rng) for _ in range(min(self.config.pop_size, self.remaining))])
            stale = stale + 1 if self.evaluated == before else 0

    def _scalarized(self) -> None:
        from pymoo.algorithms.soo.nonconvex.ga import GA

        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        # reference scales from a first random batch (part of the budget)
        self.evaluate([self.joint.sample(rng) for _ in range(min(cfg.pop_size, cfg.budget))])
        ok = [p for p in self.points.values() if p.status == "ok"]
        ref = {t.label: float(np.median([abs(p.value(t)) for p in ok if p.value(t) is not None]) or 1.0)
               if ok else 1.0 for t in self.objectives}
        weights = np.linspace(0, 1, cfg.weights + 2)[1:-1]
        for k, w in enumerate(weights):
            share = self.evaluated + math.ceil(self.remaining / (len(weights) - k))

            def fitness(p, w=w):
                if p is None or p.status != "ok":
                    return [FAILED]
                acc = [p.value(t) / ref[t.label] for t in self.objectives if t.metric == "accuracy"]
                costs = [p.value(t) / ref[t.label] for t in self.objectives if t.metric != "accuracy"]
                return [-w * float(np.mean(acc)) + (1 - w) * float(np.mean(costs))]

            self._ga(GA(pop_size=cfg.pop_size, **_operators()), fitness, 1, share, seed=cfg.seed + k)

    def _two_stage(self) -> None:
        from pymoo.algorithms.soo.nonconvex.ga import GA
        from pymoo.core.termination import NoTermination

        cfg = self.config
        # stage 1: architectures by accuracy alone (no compile), as many as the budget
        cards = np.array(self.joint.cardinalities[: self.joint.arch_size])
        problem = self._problem(cards, 1, constrained=False)
        algorithm = GA(pop_size=cfg.pop_size, **_operators())
        algorithm.setup(problem, termination=NoTermination(), seed=cfg.seed)
        scores: dict[tuple[int, ...], float] = {}
        stale = 0
        while len(scores) < cfg.budget and stale < MAX_STALE_GENERATIONS:
            pop = algorithm.ask()
            # canonical architectures: equivalent ones are one architecture (scored once, ranked once)
            X = [self.canonical(tuple(int(v) for v in x)) for x in np.clip(np.rint(pop.get("X")), 0, cards - 1)]
            new = [x for x in dict.fromkeys(X) if x not in scores][: cfg.budget - len(scores)]
            for x, acc in zip(new, self.accuracies(new)):
                scores[x] = -1e300 if acc is None else acc
            stale = stale + 1 if not new else 0
            pop.set("F", np.array([[-scores.get(x, -1e300)] for x in X], dtype=float))
            algorithm.tell(infills=pop)
        # stage 2: hardware configs of the best architectures
        n_hw = sum(t.hardware_space.size for t in self.joint.targets)
        k = min(cfg.top_k, len(scores)) if n_hw else min(len(scores), cfg.budget)
        best = sorted(scores, key=lambda g: -scores[g])[:k]
        rng = np.random.default_rng(cfg.seed)
        for j, genome in enumerate(best):
            share = self.evaluated + math.ceil(self.remaining / (len(best) - j))
            X = [self.joint.join(genome, [t.hardware_space.default() for t in self.joint.targets])]
            for _ in range(MAX_STALE_GENERATIONS):
                self.evaluate(X, limit=share)
                if self.evaluated >= share or not n_hw:
                    break
                X = [self.joint.join(genome, [t.hardware_space.sample(rng) for t in self.joint.targets])
                     for _ in range(share - self.evaluated)]

    def _fit_first(self) -> None:
        """MCUNet-style two stages (Lin et al., "MCUNet: Tiny Deep Learning on IoT Devices", NeurIPS 2020):
        first narrow the space to what fits the constraints (memory), then search inside it.

        Stage 1 evaluates a third of the budget (at least a population) at random and keeps, for every
        architecture gene, the values that occur in points meeting every constraint (when none does, in
        the quarter with the smallest violation); stage 2 runs NSGA-II over those values only (the
        hardware genes keep all theirs). ``narrowed`` records the values kept. Without constraints
        nothing is narrowed (stage 2 is NSGA-II over the whole space).
        """
        from pymoo.algorithms.moo.nsga2 import NSGA2

        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        first = min(cfg.budget, max(cfg.pop_size, cfg.budget // 3))
        self.evaluate([self.joint.sample(rng) for _ in range(first)], limit=first)
        done = [p for p in self.all_points() if p.status == "ok"]
        fits = [p for p in done if max(self.G(p)) <= 0]
        keep = fits or sorted(done, key=lambda p: sum(max(0.0, g) for g in self.G(p)))[: max(1, len(done) // 4)]
        if not self.checks:  # nothing to fit: no narrowing
            keep = []
        n = self.joint.arch_size
        allowed = [sorted({p.x[i] for p in keep}) if keep else list(range(c))
                   for i, c in enumerate(self.joint.cardinalities[:n])]
        allowed += [list(range(c)) for c in self.joint.cardinalities[n:]]
        self.narrowed = allowed
        log.info("fit-first: %d of %d stage-1 points fit; gene values kept: %s", len(fits), len(done),
                 [len(a) for a in allowed[:n]])
        algorithm = NSGA2(pop_size=cfg.pop_size, **_operators())
        self._ga(algorithm, self.F, len(self.objectives), cfg.budget, allowed=allowed)

    # -- run -----------------------------------------------------------------------------------
    def run(self) -> list[Point]:
        """Run the formulation until the budget is spent; return the Pareto front."""
        try:
            getattr(self, "_" + self.config.formulation.replace("-", "_"))()
        finally:
            self.close()
        self.store.set_run_status(self.RUN_ID, "finished")
        return self.front()

    def close(self) -> None:
        """Stop the workers (:meth:`run` does; a caller of :meth:`evaluate` alone does it itself)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def all_points(self) -> list[Point]:
        return [self.points[k] for k in self.order]

    def front(self) -> list[Point]:
        return pareto_front(self.all_points(), self.objectives, self.checks)
