"""One candidate's path: lower, apply the target's passes, build, cost.

    evaluate(candidate, target) -> Evaluation (metrics, the built module, timings)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hwnas.arch import ArchSpace
from hwnas.errors import CompileError, HwnasError, InvalidConfigError
from hwnas.ir import graph, lower
from hwnas.ir.schedule import unscheduled_functions
from hwnas.metrics import check_values
from hwnas.pipeline.executor import NullGate
from hwnas.targets import Built, Target
from hwnas.util import error_line

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """(space, genome, hardware config) or (ONNX file, hardware config)."""

    hw: Mapping[str, Any]
    space: ArchSpace | None = None
    genome: tuple[int, ...] | None = None
    onnx_path: Path | None = None
    #: trained weights (a ``state_dict`` of ``space.build(genome)``, e.g. a supernet's subnet); None: the
    #: space's fresh initialisation. Not part of the candidate's key: the network computed is the same graph
    weights: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)
    #: an ONNX file this space candidate (fresh weights) was already exported to, read instead of exporting
    #: again when it is there (a search exports each new candidate once for its structural key)
    exported: Path | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.space is None) == (self.onnx_path is None):
            raise InvalidConfigError("a candidate names either a space and a genome, or an ONNX file")
        if self.space is not None:
            object.__setattr__(self, "genome", self.space.validate(self.genome or ()))
        else:
            object.__setattr__(self, "onnx_path", Path(self.onnx_path))
        object.__setattr__(self, "hw", dict(self.hw))

    @classmethod
    def from_space(cls, space: ArchSpace, genome: Sequence[int], hw: Mapping[str, Any] | None = None, *,
                   weights: Mapping[str, Any] | None = None, exported: str | Path | None = None) -> Candidate:
        return cls(hw=hw or {}, space=space, genome=tuple(genome), weights=weights,
                   exported=Path(exported) if exported else None)

    @classmethod
    def from_onnx(cls, path: str | Path, hw: Mapping[str, Any] | None = None) -> Candidate:
        return cls(hw=hw or {}, onnx_path=Path(path))

    def architecture(self) -> dict[str, Any]:
        """A JSON-able description of the network half of the candidate."""
        if self.space is not None:
            return {
                "space": self.space.name,
                "genome": list(self.genome),
                "description": self.space.describe(self.genome),
            }
        data = self.onnx_path.read_bytes() if self.onnx_path.is_file() else b""
        return {"onnx": str(self.onnx_path), "onnx_sha256": hashlib.sha256(data).hexdigest()}

    def key(self, hw: Mapping[str, Any] | None = None) -> str:
        """A stable id of (architecture, hardware config)."""
        arch = self.architecture()
        arch.pop("description", None)
        arch.pop("onnx", None)
        blob = json.dumps({"arch": arch, "hw": dict(hw if hw is not None else self.hw)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Evaluation:
    candidate: Candidate
    target: Target
    #: the complete hardware config that was applied
    hw: dict[str, Any]
    metrics: dict[str, float]
    #: the compiled module (None for targets that price without compiling)
    built: Built | None
    #: the ONNX file the module was imported from (None when nothing was compiled, or when a space
    #: candidate was exported to a temporary folder, which is gone once :func:`evaluate` returns)
    onnx_path: Path | None
    #: seconds spent per step: export, import, passes, compile, cost
    timings: dict[str, float]
    #: where the cost was measured when not on this machine (``rpc:KEY@HOST:PORT``), else None
    device: str | None = None
    #: kernels a schedule rule failed on, so they were compiled with a default schedule rather than the
    #: asked-for hardware config: ``[{"function", "pass", "error"}]`` (empty when every rule succeeded)
    unscheduled: list[dict[str, str]] = dataclasses.field(default_factory=list)

    @property
    def as_configured(self) -> bool:
        """True when every kernel was scheduled as the hardware config asked (no rule failed)."""
        return not self.unscheduled


def apply_passes(mod, passes: Sequence, *, tvm_target=None, stage: str):
    """Run ``passes`` in order on ``mod``; a failing pass is a :class:`CompileError` naming it."""
    ctx = tvm_target if tvm_target is not None else contextlib.nullcontext()
    for p in passes:
        try:
            with ctx:
                mod = p(mod)
        except HwnasError:
            raise
        except Exception as exc:  # TVM raises untyped errors from inside passes
            name = getattr(getattr(p, "info", None), "name", None) or getattr(p, "__name__", type(p).__name__)
            raise CompileError(f"{stage} pass {name} failed: {error_line(exc)}") from None
    return mod


def schedule_candidate(candidate: Candidate, target: Target, hw: dict[str, Any], *, workdir=None,
                       timings: dict[str, float], shape_only: bool = False):
    """Export (for a space candidate), import and apply the target's passes, without code generation:
    (onnx model, fused and scheduled Relax module, onnx path).

    With ``shape_only``, the graph passes compute no values (:func:`hwnas.passes.shape_only.shape_only`:
    constants folded to seeded fillers, quantization uncalibrated): the module has the kernels, with
    the same workload records, but its constants are not the network's (what a kernel-level estimate
    needs, several times faster).

    A space candidate is exported to ``workdir/model.onnx``; the caller owns ``workdir``.
    """
    t0 = time.perf_counter()
    if candidate.space is not None:
        if workdir is None:
            raise InvalidConfigError("compiling a space candidate needs a workdir for its ONNX export")
        folder = Path(workdir)
        folder.mkdir(parents=True, exist_ok=True)
        if candidate.exported is not None and candidate.weights is None and Path(candidate.exported).is_file():
            onnx_path = Path(candidate.exported)
            timings["export_reused"] = 1.0
        else:
            net = candidate.space.build(candidate.genome)
            if candidate.weights is not None:
                net.load_state_dict(candidate.weights, strict=True)
            onnx_path = lower.export_onnx(net, candidate.space.input_shape(candidate.genome), folder / "model.onnx")
    else:
        onnx_path = candidate.onnx_path
    timings["export_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = lower.load_onnx(onnx_path)
    mod = lower.to_relax(model)
    timings["import_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tvm_target = target.tvm_target(hw)
    graph_passes = target.graph_passes(hw)
    if shape_only:
        from hwnas.passes.shape_only import shape_only as without_values

        graph_passes = without_values(graph_passes)
    mod = apply_passes(mod, graph_passes, tvm_target=tvm_target, stage="graph")
    mod = apply_passes(mod, [lower.fuse], tvm_target=tvm_target, stage="fusion")
    mod = apply_passes(mod, target.schedule_passes(hw), tvm_target=tvm_target, stage="schedule")
    timings["passes_s"] = time.perf_counter() - t0
    return model, mod, onnx_path


def compile_candidate(candidate: Candidate, target: Target, hw: dict[str, Any], *, workdir=None,
                      timings: dict[str, float]):
    """Export (for a space candidate), import, apply the target's passes and build: (onnx model, built, path).

    A space candidate is exported to ``workdir/model.onnx``; the caller owns ``workdir``.
    """
    model, mod, onnx_path = schedule_candidate(candidate, target, hw, workdir=workdir, timings=timings)
    t0 = time.perf_counter()
    built = target.build(mod, hw)
    timings["compile_s"] = time.perf_counter() - t0
    # kernels whose schedule rule failed: not compiled as ``hw`` asked, so the evaluation says so
    built.facts["unscheduled"] = unscheduled_functions(mod)
    built.facts.setdefault("counters", {})["unscheduled_kernels"] = len(built.facts["unscheduled"])
    timings.update(built.facts["counters"])

    return model, built, onnx_path


def evaluate(
    candidate: Candidate,
    target: Target,
    *,
    cost: str | None = None,
    workdir: str | Path | None = None,
    gate=None,
) -> Evaluation:
    """Lower ``candidate``, apply ``target``'s passes for its hardware config, build and cost it.

    ``workdir`` keeps the exported ONNX file (a space candidate is exported to
    ``workdir/model.onnx``); without it the export goes to a temporary folder
    that is removed before this returns, and the evaluation's ``onnx_path`` is
    None (pass a ``workdir`` to write a bundle of it).
    ``gate`` (see :class:`hwnas.pipeline.executor.MeasureGate`) keeps the cost
    step apart from other workers' compiling, so that measurements on one
    machine are not disturbed.
    """
    timings: dict[str, float] = {}
    hw = target.hardware_space.validate(candidate.hw)
    method = target.cost_method(cost)
    if gate is None:
        gate = NullGate()
    if not target.compiles:
        t0 = time.perf_counter()
        with gate.quiet() if target.needs_quiet(method) else contextlib.nullcontext():
            values = target.cost_architecture(candidate.space, candidate.genome, hw, method=method)
        timings["cost_s"] = time.perf_counter() - t0
        return Evaluation(candidate=candidate, target=target, hw=hw, metrics=check_values(values), built=None,
                          onnx_path=None, timings=timings)

    # a space candidate's export without a workdir lives only while it is imported (the model is then in memory)
    keep = workdir is not None or candidate.space is None
    with contextlib.nullcontext(workdir) if keep else tempfile.TemporaryDirectory(prefix="hwnas-") as folder:
        with gate.busy():
            model, built, onnx_path = compile_candidate(candidate, target, hw, workdir=folder, timings=timings)

    t0 = time.perf_counter()
    with gate.quiet() if target.needs_quiet(method) else contextlib.nullcontext():
        values = dict(target.cost(built, method=method))
    values.setdefault("macs", graph.count_macs(model))
    metrics = check_values(values)
    timings["cost_s"] = time.perf_counter() - t0
    log.info("evaluated %s on %s: %s", candidate.key(hw), target.spec, metrics)
    return Evaluation(
        candidate=candidate, target=target, hw=hw, metrics=metrics, built=built,
        onnx_path=Path(onnx_path) if keep else None,
        timings=timings, device=target.measured_on(method), unscheduled=list(built.facts["unscheduled"]),
    )
