"""Joint architecture x hardware search.

The joint genome is the architecture genes followed by each target's HSS
genes. Every point is evaluated once per run (results come from the store
when a run is resumed), in a worker pool, and written to the store as it
finishes. Formulations:

* ``nsga2``: multi-objective NSGA-II over the objectives; with ``surrogate="xgb"`` (the default)
  each generation's offspring are screened from a large candidate pool by a bootstrap XGBoost
  ensemble fitted on the points evaluated so far (``hwnas.search.surrogate``), so the budget
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

import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError, RunError
from hwnas.metrics import METRICS, canonical

log = logging.getLogger(__name__)

FORMULATIONS = ("nsga2", "constrained", "scalarized", "two-stage", "fit-first", "random")
#: nsga2's surrogate: ``xgb`` screens a large pool of candidates per generation with a bootstrap XGBoost
#: ensemble fitted on the points evaluated so far (see ``Search._surrogate_nsga2``); ``none`` is plain NSGA-II
SURROGATES = ("xgb", "none")
#: settings a resumed run may change (where evaluations run changes no result)
RESUMABLE = ("budget", "workers", "timeout_s", "ladder", "executor", "cluster", "rpc_tracker", "rpc_timeout_s")
#: settings stored only when set, so that runs stored before they existed still resume
_STORED_WHEN_SET = ("executor", "cluster", "rpc_tracker", "rpc_key", "rpc_timeout_s")
#: the cost ladder flags a front point whose cheap and re-priced values differ by more than this share
LADDER_TOLERANCE = 0.10
#: objective value given to points that failed (they are also infeasible)
FAILED = 1e12
#: generations in a row without a new point before a search stops early
MAX_STALE_GENERATIONS = 30

#: how a cost metric may be aggregated over the targets (``metric@worst``): each target's value is divided
#: by the reference network's value on that target, then the largest, or the geometric mean, is taken
AGGREGATIONS = ("worst", "geomean")
#: the evaluations made outside the search's points (the reference network, the transfer table) are
#: recorded under this run id, apart from the search's own
EXTRA_RUN_ID = "extra"
#: cache namespace and key of the reference network's metrics per target
REFERENCE_NAMESPACE, REFERENCE_KEY = "reference/search", "reference"

_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w@:.\-]*)\s*(<=|>=)\s*([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$")


@dataclasses.dataclass(frozen=True)
class Bound:
    """``metric <= value`` or ``metric >= value``; ``metric`` may name a target: ``latency_ms@cpu``."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Bound:
        m = _CONSTRAINT.match(text)
        if not m:
            raise InvalidConfigError(f"malformed constraint {text!r}: expected METRIC<=VALUE or METRIC>=VALUE, "
                                     f"e.g. latency_ms<=5")
        return cls(m.group(1), m.group(2), float(m.group(3)))

    def violation(self, value: float) -> float:
        """<= 0 when satisfied; positive and scaled by the bound when violated."""
        scale = max(abs(self.value), 1e-9)
        return (value - self.value) / scale if self.op == "<=" else (self.value - value) / scale

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a run (stored with it; a resume must match)."""

    targets: tuple[str, ...] = ("cpu",)
    space: str | None = "mbv2"
    space_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    onnx: str | None = None
    objectives: tuple[str, ...] = ("accuracy", "latency_ms")
    constraints: tuple[str, ...] = ()
    formulation: str = "nsga2"
    surrogate: str = "xgb"
    budget: int = 100
    accuracy: str = "proxy"
    accuracy_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    cost: str | None = None
    seed: int = 0
    pop_size: int = 16
    workers: int = 1
    timeout_s: float = 600.0
    repeats: int | None = None
    weights: int = 5
    top_k: int = 4
    plugins: tuple[str, ...] = ()
    #: cost ladder: re-price each generation's front with this (exact, slower) method, e.g. "measure"
    ladder: str | None = None
    #: where evaluations run: ``process`` (worker processes here), ``dask`` or ``ray`` (a cluster)
    executor: str = "process"
    #: a running Dask or Ray cluster's address; None starts a local one of ``workers`` workers
    cluster: str | None = None
    #: measure on a device of key ``rpc_key`` reached through the RPC tracker at ``HOST:PORT``
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    #: seconds to reach the tracker, and to wait for a free device
    rpc_timeout_s: float = 60.0

    @property
    def needs_accuracy(self) -> bool:
        """Whether an objective or a constraint is the accuracy."""
        return any(canonical(o.split("@")[0]) == "accuracy" for o in self.objectives) or any(
            Bound.parse(c).metric.split("@")[0] == "accuracy" for c in self.constraints
        )

    def __post_init__(self) -> None:
        if self.formulation not in FORMULATIONS:
            raise InvalidConfigError(f"unknown formulation {self.formulation!r}; known: {', '.join(FORMULATIONS)}")
        if self.surrogate not in SURROGATES:
            raise InvalidConfigError(f"unknown surrogate {self.surrogate!r}; known: {', '.join(SURROGATES)}")
        for name in ("budget", "pop_size", "weights", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.workers < 0:
            raise InvalidConfigError(f"workers must be >= 0, got {self.workers}")
        if not self.timeout_s > 0:
            raise InvalidConfigError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if (self.space is None) == (self.onnx is None):
            raise InvalidConfigError("a search needs a space or an ONNX file (--space or --onnx)")
        if not self.targets:
            raise InvalidConfigError("a search needs at least one --target")
        twice = sorted({t for t in self.targets if self.targets.count(t) > 1})
        if twice:
            raise InvalidConfigError(f"target {twice[0]} is named twice; give each --target once")
        if not self.objectives:
            raise InvalidConfigError("a search needs at least one objective")
        for c in self.constraints:
            Bound.parse(c)
        from hwnas.pipeline.executor import EXECUTORS

        if self.executor not in EXECUTORS:
            raise InvalidConfigError(f"unknown executor {self.executor!r}; known: {', '.join(EXECUTORS)}")
        if self.executor != "process" and self.workers == 0 and not self.cluster:
            raise InvalidConfigError(f"--executor {self.executor} needs --workers >= 1 (or --cluster ADDRESS); "
                                     f"--workers 0 evaluates in this process")
        if self.cluster and self.executor == "process":
            raise InvalidConfigError("--cluster names a Dask or Ray cluster; it needs --executor dask or ray")
        if (self.rpc_tracker is None) != (self.rpc_key is None):
            raise InvalidConfigError("--rpc-tracker HOST:PORT and --rpc-key KEY go together")
        if self.rpc_tracker is not None:
            self.remote_device()

    def remote_device(self):
        """The :class:`~hwnas.targets.remote.RemoteDevice` measurements run on, or None (this machine)."""
        if self.rpc_tracker is None:
            return None
        from hwnas.targets.remote import RemoteDevice

        return RemoteDevice.parse(self.rpc_tracker, self.rpc_key, timeout_s=self.rpc_timeout_s)

    def settings(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for k in _STORED_WHEN_SET:
            if d[k] == defaults[k]:
                del d[k]
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_settings(cls, d: dict[str, Any]) -> SearchConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})


def load_plugins(plugins: Sequence[str]) -> None:
    """Import plugin modules (a module name, or a path to a ``.py`` file) that register targets or spaces."""
    import importlib
    import importlib.util
    import sys

    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                path = Path(plugin).resolve()
                name = f"hwnas_plugin_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or not path.is_file():
                    raise InvalidConfigError(f"plugin file {plugin} not found")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(plugin)
        except InvalidConfigError:
            raise
        except Exception as exc:
            raise InvalidConfigError(f"plugin {plugin} could not be imported: {type(exc).__name__}: {exc}") from None


def use_remote(targets: Sequence, device) -> None:
    """Let every target that can measure on ``device`` (an RPC device, or None: nothing to do) do so;
    the others price as before. :class:`InvalidConfigError` when none can."""
    if device is None:
        return
    able = [t for t in targets if t.measures_remotely]
    if not able:
        targets[0].use_remote(device)  # the target's own one-line refusal
    for t in able:
        t.use_remote(device)


# ---------------------------------------------------------------------------------------------
# the joint genome and one point's evaluation (runs in the workers)


class JointSpace:
    """Architecture genes followed by each target's HSS genes."""

    def __init__(self, arch, targets: Sequence) -> None:
        self.arch = arch
        self.targets = list(targets)
        self.arch_size = arch.size if arch is not None else 0
        self.cardinalities = tuple(arch.cardinalities if arch is not None else ()) + tuple(
            c for t in self.targets for c in t.hardware_space.cardinalities
        )
        if not self.cardinalities:
            raise InvalidConfigError("nothing to search: the ONNX model's targets have no hardware knobs")

    @property
    def size(self) -> int:
        return len(self.cardinalities)

    def split(self, x: Sequence[int]) -> tuple[tuple[int, ...], list[dict[str, Any]]]:
        """(architecture genome, one hw config per target); InvalidConfigError if a config breaks a rule."""
        x = [int(v) for v in x]
        genome = tuple(x[: self.arch_size])
        hws, i = [], self.arch_size
        for t in self.targets:
            n = t.hardware_space.size
            hws.append(t.hardware_space.decode(x[i : i + n]))
            i += n
        return genome, hws

    def join(self, genome: Sequence[int], hws: Sequence[dict[str, Any]]) -> list[int]:
        x = list(genome)
        for t, hw in zip(self.targets, hws):
            x += t.hardware_space.encode(hw)
        return x

    def sample(self, rng: np.random.Generator) -> list[int]:
        genome = list(self.arch.sample(rng)) if self.arch is not None else []
        return self.join(genome, [t.hardware_space.sample(rng) for t in self.targets])


def point_key(genome: Sequence[int], hws: Sequence[dict[str, Any]]) -> str:
    blob = json.dumps({"genome": list(genome), "hw": list(hws)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class WorkerSetup:
    config: SearchConfig
    #: the results store; None on a cluster worker, which journals its writes for the search to replay
    store_path: str | None
    run_id: str


class PointEvaluator:
    """Builds the space, targets and accuracy evaluator once; evaluates points; records each in the store."""

    def __init__(self, setup: WorkerSetup, gate=None) -> None:
        from hwnas.arch import get_space
        from hwnas.pipeline.executor import NullGate
        from hwnas.accuracy import get_accuracy
        from hwnas.pipeline.store import Journal, ResultStore
        from hwnas.targets import get_target

        cfg = setup.config
        load_plugins(cfg.plugins)
        self.config = cfg
        self.run_id = setup.run_id
        #: keeps this worker's measurements apart from the other workers' work
        self.gate = gate if gate is not None else NullGate()
        self.space = get_space(cfg.space, **cfg.space_options) if cfg.space else None
        self.targets = [get_target(t) for t in cfg.targets]
        use_remote(self.targets, cfg.remote_device())
        for t in self.targets:
            t.cost_method(cfg.cost)
            if cfg.ladder is not None:
                t.cost_method(cfg.ladder)
            if cfg.repeats is not None and hasattr(t, "repeats"):
                t.repeats = cfg.repeats
        self.needs_accuracy = cfg.needs_accuracy
        self.accuracy = (
            get_accuracy(cfg.accuracy, **cfg.accuracy_options) if self.needs_accuracy and self.space else None
        )
        #: per target, the knobs held at their defaults: what they change (e.g. bit-widths) would look free
        #: to an accuracy evaluator that does not run the deployed network
        self.fixed_knobs: dict[str, tuple[str, ...]] = {}
        self.fixed_reason = ""
        if self.accuracy is None or not self.accuracy.uses_deployment:
            why = self.fixed_reason = (
                f"accuracy {cfg.accuracy!r} does not run the deployed network (--accuracy train does)"
                if self.accuracy is not None else "no accuracy is measured")
            for t in self.targets:
                if t.deployment_knobs:
                    t.hardware_space = t.hardware_space.fixed(t.deployment_knobs, why)
                    self.fixed_knobs[t.spec] = t.deployment_knobs
        self.joint = JointSpace(self.space, self.targets)
        self.store = ResultStore(setup.store_path) if setup.store_path is not None else Journal()
        for t in self.targets:  # per-kernel times, machine peaks: measured once, kept with the run
            t.use_cache(self.store)
        acc_settings = self.accuracy.settings() if self.accuracy else {}
        digest = hashlib.sha256(json.dumps(acc_settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.accuracy_namespace = f"accuracy/{self.space.name if self.space else 'onnx'}/{digest}"

    def candidate(self, genome, hw):
        from hwnas.pipeline.evaluate import Candidate

        if self.space is not None:
            return Candidate.from_space(self.space, genome, hw)
        return Candidate.from_onnx(self.config.onnx, hw)

    def accuracy_of(self, genome: tuple[int, ...], target=None, hw: dict[str, Any] | None = None) -> float | None:
        """The architecture's accuracy; on a ``target`` that deploys other numerics than the float
        network (:meth:`~hwnas.targets.Target.deployment_key`), the deployed network's, when the
        evaluator can measure it."""
        if self.accuracy is None:
            return None
        deployment = target.deployment_key(hw) if target is not None and self.accuracy.uses_deployment else None
        key = json.dumps(list(genome)) if deployment is None else json.dumps([list(genome), deployment])
        cached = self.store.get(self.accuracy_namespace, key)
        if cached is not None:
            return float(cached)
        deploy = None
        if deployment is not None:
            def deploy(model, shape, calibration):
                return target.deploy_network(model, shape, calibration, hw)
        with self.gate.busy():
            value = float(self.accuracy.evaluate(self.space, genome, deploy=deploy))
        self.store.put(self.accuracy_namespace, key, value)
        return value

    def __call__(self, task: tuple[tuple[int, ...], list[dict[str, Any]] | None]) -> dict[str, Any]:
        """Evaluate one point on every target; each target's outcome is recorded as it ends.

        A task whose hardware part is None asks for the architecture's accuracy only.
        """
        import tempfile
        import time

        from hwnas.pipeline.evaluate import evaluate

        genome, hws = task
        if hws is None:
            return self._journaled({"accuracy": self.accuracy_of(tuple(genome))})
        started = time.time()
        result: dict[str, Any] = {"metrics": {}, "error": None}
        for target, hw in zip(self.targets, hws):
            cand = self.candidate(genome, hw)
            key = cand.key(hw)
            if result["error"] is None:
                try:
                    acc = self.accuracy_of(tuple(genome), target, hw)
                except Exception as exc:
                    acc, result["error"] = None, f"accuracy: {exc}"
            if result["error"] is not None:
                self.record(key, genome, hw, target, {}, "failed", result["error"], {}, started)
                continue
            try:
                with tempfile.TemporaryDirectory(prefix="hwnas-eval-") as tmp:
                    ev = evaluate(cand, target, cost=self.config.cost, workdir=tmp, gate=self.gate)
                metrics = dict(ev.metrics)
                if acc is not None:
                    metrics["accuracy"] = acc
                result["metrics"][target.spec] = metrics
                timings = dict(ev.timings, device=ev.device) if ev.device else ev.timings
                self.record_numerics(genome, hw, target, ev.built)
                self.record(key, genome, hw, target, metrics, "ok", None, timings, started)
            except Exception as exc:  # one candidate's failure is recorded, never fatal
                from hwnas.pipeline.executor import describe

                result["error"] = f"{target.spec}: {describe(exc)}"
                self.record(key, genome, hw, target, {}, "failed", result["error"], {}, started)
        return self._journaled(result)

    def _journaled(self, result: dict[str, Any]) -> dict[str, Any]:
        """On a cluster worker, the task's store writes travel back with its result (``journal``)."""
        drain = getattr(self.store, "drain", None)
        if drain is not None:
            result["journal"] = drain()
        return result

    def reprice(self, genome, hws, method: str) -> dict[str, dict[str, float]]:
        """Every target's metrics of one point by another cost method (the cost ladder), in this process."""
        import tempfile

        from hwnas.pipeline.evaluate import evaluate

        out = {}
        for target, hw in zip(self.targets, hws):
            with tempfile.TemporaryDirectory(prefix="hwnas-ladder-") as tmp:
                out[target.spec] = dict(evaluate(self.candidate(genome, hw), target, cost=method, workdir=tmp,
                                                 gate=self.gate).metrics)
        return out

    def record_numerics(self, genome, hw, target, built) -> None:
        """Keep the per-layer bit-widths of a quantized module (the report shows them), by
        :func:`numerics_key`."""
        from hwnas.passes.quantize import quantization_info

        module = getattr(built, "module", None)
        try:
            info = quantization_info(module) if module is not None else None
        except Exception:  # a module without a Relax main (a plugin's own kind): nothing to show
            info = None
        if info is not None:
            self.store.put(f"numerics/{self.run_id}", numerics_key(genome, hw, target.spec),
                           {k: info.get(k) for k in ("activation_bits", "symmetric", "layer_kinds", "layer_bits")})

    def evaluate_extra(self, genome, index: int, hw: dict[str, Any]) -> tuple[dict[str, float] | None, str | None, str]:
        """(metrics, error, run id) of ``genome`` with ``hw`` on target number ``index`` alone, outside the
        search's points (the reference network, the transfer table), in this process: recorded under
        :data:`EXTRA_RUN_ID` (costs only, no accuracy), and read back from there when it was made before.
        The search's own evaluation of the same (architecture, hardware, target) is used when there is one;
        the run id says whose evaluation it is."""
        import tempfile
        import time

        from hwnas.pipeline.evaluate import evaluate
        from hwnas.pipeline.executor import describe

        target = self.targets[index]
        hw = target.hardware_space.validate(hw)
        key = self.candidate(genome, hw).key(hw)
        for run_id in (self.run_id, EXTRA_RUN_ID):
            row = self.store.lookup(run_id, key, target.spec)
            if row is not None:
                return (({k: v for k, v in row.metrics.items() if k != "accuracy"}, None, run_id) if row.ok
                        else (None, row.error or "failed", run_id))
        if self.store.get_run(EXTRA_RUN_ID) is None:
            from hwnas.pipeline.artifacts import versions

            self.store.open_run(EXTRA_RUN_ID, {"of": self.run_id}, versions(), resume=True)
        started = time.time()
        try:
            with tempfile.TemporaryDirectory(prefix="hwnas-extra-") as tmp:
                ev = evaluate(self.candidate(genome, hw), target, cost=self.config.cost, workdir=tmp, gate=self.gate)
        except Exception as exc:  # recorded like a search's failure; the caller decides what it means
            error = f"{target.spec}: {describe(exc)}"
            self.record(key, genome, hw, target, {}, "failed", error, {}, started, run_id=EXTRA_RUN_ID)
            return None, error, EXTRA_RUN_ID
        self.record(key, genome, hw, target, dict(ev.metrics), "ok", None, ev.timings, started, run_id=EXTRA_RUN_ID)
        return dict(ev.metrics), None, EXTRA_RUN_ID

    def record(self, key, genome, hw, target, metrics, status, error, timings, started, *,
               run_id: str | None = None) -> None:
        import time

        self.store.record(
            run_id or self.run_id, key, list(genome) if self.space is not None else None, hw, target.spec, metrics,
            status=status, error=error, timings=timings, started=started, finished=time.time(),
        )


def numerics_key(genome, hw: dict[str, Any], target: str) -> str:
    """The store key of one evaluation's quantization record (namespace ``numerics/<run id>``)."""
    return json.dumps([list(genome) if genome is not None else None, target, hw], sort_keys=True, default=str)


def describe_numerics(record: dict[str, Any] | None) -> str:
    """One line of per-layer bit-widths: ``a8 sym: c8 d4 c4 ... f8`` (``c`` conv, ``d`` depthwise,
    ``f`` dense; ``fp``: a float layer; ``a`` the activation bits, ``fp`` float)."""
    if not record:
        return ""
    letters = {"conv": "c", "depthwise": "d", "dense": "f"}
    act = record.get("activation_bits")
    layers = " ".join(f"{letters.get(k, '?')}{'fp' if b is None else b}"
                      for k, b in zip(record.get("layer_kinds") or [], record.get("layer_bits") or []))
    scheme = "sym" if record.get("symmetric", True) else "asym"
    return f"a{'fp' if act is None else act} {scheme}: {layers}"


def _worker_init(setup: WorkerSetup, gate) -> PointEvaluator:
    return PointEvaluator(setup, gate)


def _worker_work(evaluator: PointEvaluator, task) -> dict[str, Any]:
    return evaluator(task)


# ---------------------------------------------------------------------------------------------
# objectives and constraints


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


def pareto_front(points: Sequence[Point], objectives: Sequence[Term], checks: Sequence[tuple[Term, Bound]]) -> list[Point]:
    """The feasible, non-dominated points (objectives minimised after flipping maximised ones)."""
    feasible = [p for p in points if is_feasible(p, checks) and all(p.value(t) is not None for t in objectives)]
    if not feasible:
        return []
    F = np.array([[(-1 if t.maximize else 1) * p.value(t) for t in objectives] for p in feasible])
    front, seen = [], set()
    for i in np.lexsort(F.T[::-1]):
        if np.any(np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)):
            continue
        k = tuple(np.round(F[i], 12))
        if k not in seen:  # identical objective vectors: keep one
            seen.add(k)
            front.append(feasible[i])
    return front


# ---------------------------------------------------------------------------------------------
# surrogate screening

#: pool per generation, in multiples of pop_size: mating offspring, uniform samples, front neighbours (at most)
SURROGATE_POOL_MATING = 40
SURROGATE_POOL_RANDOM = 40
SURROGATE_POOL_NEIGHBOURS = 40
#: optimism of the acquisition: candidates are ranked on mean - KAPPA * std of the ensemble's predictions
SURROGATE_KAPPA = 1.0
#: the ensemble (see hwnas.search.surrogate.SurrogateEnsemble)
SURROGATE_MODEL = {"n_models": 5, "n_estimators": 150, "max_depth": 4, "learning_rate": 0.1}


def _quantiles(ranked: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each column of ``values`` as its mid-rank quantile in the same (sorted) column of ``ranked``."""
    values = np.asarray(values, dtype=float).reshape(-1, ranked.shape[1])
    out = np.empty_like(values)
    for j in range(ranked.shape[1]):
        lo = np.searchsorted(ranked[:, j], values[:, j], side="left")
        hi = np.searchsorted(ranked[:, j], values[:, j], side="right")
        out[:, j] = (lo + hi) / (2.0 * len(ranked))
    return out


def select_by_prediction(known: np.ndarray, predicted: np.ndarray, violation: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` most promising candidates, in the order chosen.

    ``known``: the objective vectors (minimised) of the feasible points evaluated so far;
    ``predicted``: the candidates' (optimistic) predicted objective vectors; ``violation``:
    their predicted constraint violation (<= 0: predicted feasible). Predicted-feasible
    candidates come first, by non-dominated level among the known points and the candidates
    together (a candidate on level 0 is predicted to extend the known front); within the level
    that cannot be taken whole, greedily the candidate farthest (objective space normalised by
    the range of level 0) from the known points of its level and below and from the
    candidates already chosen, so that the choice spreads along the front and fills its
    gaps. Then the least violating others.
    """
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    predicted = np.asarray(predicted, dtype=float).reshape(len(violation), -1)
    known = np.asarray(known, dtype=float).reshape(-1, predicted.shape[1])
    n = min(n, len(predicted))
    feasible = np.flatnonzero(np.asarray(violation) <= 0)
    chosen: list[int] = []
    if len(feasible) and n:
        F = np.vstack([known, predicted[feasible]])
        _, rank = NonDominatedSorting().do(F, return_rank=True)
        lo = F[rank == 0].min(axis=0)
        span = F[rank == 0].max(axis=0) - lo
        span = np.where(span > 0, span, np.maximum(np.abs(F).max(axis=0), 1.0))
        Z = (F - lo) / span
        is_known = np.arange(len(F)) < len(known)
        for r in range(int(rank.max()) + 1):
            members = np.flatnonzero((rank == r) & ~is_known)
            if len(chosen) + len(members) <= n:
                chosen += [int(feasible[m - len(known)]) for m in members]
                if len(chosen) == n:
                    break
                continue
            anchors = Z[(rank <= r) & is_known]
            dist = (np.min(np.linalg.norm(Z[members, None, :] - anchors[None], axis=2), axis=1)
                    if len(anchors) else np.full(len(members), np.inf))
            if not len(anchors):  # start from the best on the first objective
                dist[np.argmin(Z[members, 0])] = np.inf
            while len(chosen) < n:
                j = int(np.argmax(dist))
                chosen.append(int(feasible[members[j] - len(known)]))
                dist = np.minimum(dist, np.linalg.norm(Z[members] - Z[members[j]], axis=1))
                dist[j] = -1.0
            break
    if len(chosen) < n:
        others = np.flatnonzero(np.asarray(violation) > 0)
        chosen += [int(i) for i in others[np.argsort(np.asarray(violation)[others], kind="stable")][: n - len(chosen)]]
    return np.array(chosen, dtype=int)


# ---------------------------------------------------------------------------------------------
# the search loop (runs in the parent process)


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

    def evaluate(self, X: Sequence[Sequence[int]], *, limit: int | None = None) -> list[Point | None]:
        """Points of ``X`` (None where the budget ran out first); each distinct point is evaluated once."""
        limit = self.config.budget if limit is None else min(limit, self.config.budget)
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
            key = point_key(genome, hws)
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
                continue
            if self.evaluated + len(tasks) >= limit:
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

            self._workers().run([(p.genome, p.hws) for _, p in tasks], done)
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
        (:func:`select_by_prediction` on the optimistic predictions ``mean - SURROGATE_KAPPA *
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
                X = self._screen(algorithm, problem, rng, cfg.pop_size)
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

    def _candidate_pool(self, algorithm, problem, rng: np.random.Generator) -> np.ndarray:
        """Distinct, valid, not yet evaluated candidates (rows of gene values), in a seed-fixed order."""
        cfg = self.config
        cards = np.array(self.joint.cardinalities)
        off = algorithm.mating.do(problem, algorithm.pop, SURROGATE_POOL_MATING * cfg.pop_size, algorithm=algorithm,
                                  random_state=algorithm.random_state)
        rows = [tuple(x) for x in np.clip(np.rint(off.get("X")).astype(int), 0, cards - 1).tolist()] if len(off) else []
        rows += [tuple(int(v) for v in self.joint.sample(rng)) for _ in range(SURROGATE_POOL_RANDOM * cfg.pop_size)]
        # one-gene neighbours of the front (of the population while nothing is feasible)
        bases = [p.x for p in self.front()] or [tuple(int(v) for v in x) for x in np.rint(algorithm.pop.get("X"))]
        neighbours = [b[:i] + (v,) + b[i + 1:] for b in bases for i, c in enumerate(cards) for v in range(c)
                      if v != b[i]]
        cap = SURROGATE_POOL_NEIGHBOURS * cfg.pop_size
        if len(neighbours) > cap:
            neighbours = [neighbours[i] for i in np.sort(rng.choice(len(neighbours), cap, replace=False))]
        rows += neighbours
        pool, seen = [], set()
        for x in dict.fromkeys(rows):
            try:
                genome, hws = self.joint.split(x)
            except InvalidConfigError:
                continue
            key = point_key(genome, hws)
            if key in self.points or key in seen:
                continue
            seen.add(key)
            pool.append(x)
        return np.array(pool, dtype=int).reshape(-1, len(cards))

    def _screen(self, algorithm, problem, rng: np.random.Generator, n: int) -> np.ndarray:
        """The ``n`` candidates of this generation's pool most promising by the surrogate's predictions."""
        from hwnas.search.surrogate import SurrogateEnsemble

        pool = self._candidate_pool(algorithm, problem, rng)
        if len(pool) <= n:
            return pool
        done = [p for p in self.all_points() if p.status in ("ok", "failed")]
        rows = [(p.x, self.F(p) + self.G(p)[:-1]) for p in done if p.status == "ok"]
        rows = [(x, y) for x, y in rows if all(math.isfinite(v) and abs(v) < FAILED for v in y)]
        if len(rows) < max(2 * self.config.pop_size, 4):
            return pool[np.sort(rng.choice(len(pool), n, replace=False))]
        seed = int(rng.integers(2**31))
        n_obj = len(self.objectives)
        Y = np.array([y for _, y in rows], dtype=float)
        # objectives are modelled and compared as quantiles among the evaluated points: scale-free and
        # robust to outliers (a collapsed network's accuracy, a huge latency); constraints stay in their units
        ranked = np.sort(Y[:, :n_obj], axis=0)
        Y[:, :n_obj] = _quantiles(ranked, Y[:, :n_obj])
        model = SurrogateEnsemble(self.joint.cardinalities, seed=seed, **SURROGATE_MODEL)
        model.fit([x for x, _ in rows], Y)
        mean, std = model.predict(pool)
        optimistic = mean - SURROGATE_KAPPA * std
        violation = np.maximum(optimistic[:, n_obj:], 0).sum(axis=1)
        if any(p.status == "failed" for p in done):  # a candidate predicted to fail counts as infeasible
            fails = SurrogateEnsemble(self.joint.cardinalities, seed=seed + 1, **{**SURROGATE_MODEL, "n_models": 1})
            fails.fit([p.x for p in done], [float(p.status == "failed") for p in done])
            violation = violation + np.maximum(fails.predict(pool)[0] - 0.5, 0)
        known = np.array([self.F(p) for p in self.all_points() if is_feasible(p, self.checks)], dtype=float)
        known = known[(np.abs(known) < FAILED).all(axis=1)] if len(known) else known.reshape(0, n_obj)
        return pool[select_by_prediction(_quantiles(ranked, known), optimistic[:, :n_obj], violation, n)]

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
            X = [tuple(int(v) for v in x) for x in np.clip(np.rint(pop.get("X")), 0, cards - 1)]
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
            if self._pool is not None:
                self._pool.close()
                self._pool = None
        self.store.set_run_status(self.RUN_ID, "finished")
        return self.front()

    def all_points(self) -> list[Point]:
        return [self.points[k] for k in self.order]

    def front(self) -> list[Point]:
        return pareto_front(self.all_points(), self.objectives, self.checks)
