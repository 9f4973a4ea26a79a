"""One point's evaluation, as the workers (and the search's own process) run it: :class:`PointEvaluator`
builds the space, the targets and the accuracy evaluator once, then evaluates points and records each
outcome in the results store."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from hwnas.search.config import EXTRA_RUN_ID, SearchConfig, load_plugins, use_remote
from hwnas.search.space import JointSpace


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
            if cfg.repeats is not None and t.measure_options is not None:
                t.set_measure_options(repeats=cfg.repeats)
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

    def candidate(self, genome, hw, exported: str | None = None):
        """``exported``: the file the search already exported the network to (read when it is there)."""
        from hwnas.pipeline.evaluate import Candidate

        if self.space is not None:
            return Candidate.from_space(self.space, genome, hw, exported=exported)
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

    def __call__(self, task: tuple) -> dict[str, Any]:
        """Evaluate one point, ``(genome, hws)`` or ``(genome, hws, exported ONNX file)``, on every target;
        each target's outcome is recorded as it ends.

        A task whose hardware part is None asks for the architecture's accuracy only.
        """
        import tempfile
        import time

        from hwnas.pipeline.evaluate import evaluate

        genome, hws = task[:2]
        exported = task[2] if len(task) > 2 else None
        if hws is None:
            return self._journaled({"accuracy": self.accuracy_of(tuple(genome))})
        started = time.time()
        result: dict[str, Any] = {"metrics": {}, "error": None}
        for target, hw in zip(self.targets, hws):
            cand = self.candidate(genome, hw, exported)
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
                timings = dict(ev.timings, device=ev.device) if ev.device else dict(ev.timings)
                if ev.unscheduled:  # kernels not compiled as ``hw`` asked: the store and the summary say which
                    timings["unscheduled"] = ev.unscheduled
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
