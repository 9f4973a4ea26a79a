"""NVIDIA GPUs through TVM's CUDA code generation: ``gpu:<device>`` (h100, h200, a100, rtx4090, orin, 1080ti, titanxp).

HSS knobs (see :class:`~hwnas.targets.gpu.tile_conv2d.GpuScheduleConfig`):
threads per block along output channels / rows / columns, the per-thread
register tile, the reduction step staged in shared memory, shared-memory
staging on or off, vector width of the staged loads, unroll, and fp32/fp16
precision. Conv and dense/matmul kernels get the hwnas schedules; every
other kernel dlight's defaults.

Build: TVM generates the CUDA source and the host code; nvcc (when on PATH)
compiles the kernels here for the device's architecture, and its ``ptxas
-v`` report gives each kernel's registers. Configs over the device's limits
(threads or shared memory per block) are refused before the build
(:func:`~hwnas.targets.gpu.kernels.check_limits`).

Cost: ``measure`` runs the module on ``tvm.cuda(0)`` and needs a CUDA device;
``analytical`` (:mod:`hwnas.targets.gpu.cost`) is a roofline estimate with
occupancy, and the default when no device is present.

Artifact: built where TVM's CUDA runtime is loaded (a GPU machine), the
library holds the kernels compiled for the device's architecture. Built
elsewhere, or for an architecture the local CUDA compiler lacks (CUDA 13 has
no Pascal), it holds the CUDA source, which the stock TVM runtime compiles
when it loads the library on a CUDA machine (NVRTC through ``cuda-bindings``,
or nvcc with ``TVM_CUDA_COMPILE_MODE=nvcc``). The manifest says which. The
nvcc-compiled kernels are written beside it (``kernels.fatbin``) with the
source (``kernels.cu``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from hwnas.errors import CompileError, InvalidConfigError
from hwnas.hss import ChoiceParam, Constraint, HardwareSpace, Pow2Param
from hwnas.ir import analysis
from hwnas.ir import runtime as measure
from hwnas.targets.base import Built, MeasureOptions, Target
from hwnas.targets.gpu.devices import DEVICES, device_named, get_device
from hwnas.util import error_line, filtered_native_stderr

log = logging.getLogger(__name__)
#: TVM's switch that keeps CUDA source in the built library even when a CUDA runtime is loaded
FORCE_SOURCE = "TVM_COMPILE_FORCE_FALLBACK"


@functools.lru_cache(maxsize=1)
def cuda_present() -> bool:
    """Whether this process sees a CUDA device (``tvm.cuda(0).exist``)."""
    import tvm

    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # no CUDA runtime at all
        return False


@functools.lru_cache(maxsize=1)
def present_gpu() -> str:
    """The model name the driver reports for ``tvm.cuda(0)`` ("" without a device)."""
    import tvm

    return str(tvm.cuda(0).device_name) if cuda_present() else ""


def cuda_compile_mode() -> str | None:
    """How the TVM runtime will compile CUDA when a module is loaded on a GPU: ``"nvrtc"``, ``"nvcc"`` or None.

    TVM's ``tvm_callback_cuda_compile`` uses NVRTC (the ``cuda-bindings``
    package) unless ``TVM_CUDA_COMPILE_MODE=nvcc``. Without ``cuda-bindings``
    and with nvcc on PATH, this sets that variable for this process (a value
    the user set is kept).
    """
    if os.environ.get("TVM_CUDA_COMPILE_MODE"):
        return os.environ["TVM_CUDA_COMPILE_MODE"].lower()
    try:
        import cuda.bindings  # noqa: F401

        return "nvrtc"
    except ImportError:
        pass
    if shutil.which("nvcc"):
        os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
        return "nvcc"
    return None


@dataclasses.dataclass
class GpuBuilt(Built):
    """A CUDA build: the kernels' launch figures and nvcc's report travel with it."""

    launches: list = dataclasses.field(default_factory=list)
    #: kernel name -> ptxas figures (empty without nvcc)
    ptxas: dict = dataclasses.field(default_factory=dict)
    #: the architecture nvcc compiled for (None without nvcc)
    nvcc_arch: str | None = None
    cuda_source: str = ""
    #: why the library holds CUDA source instead of machine code (None: compiled here, or source only
    #: because no CUDA runtime is in this process, the usual case without a GPU)
    jit_failed: str | None = None
    #: whether the library holds machine code (compiled during the build) rather than CUDA source
    machine_code: bool = False
    #: the cost method last applied (the manifest says whether latency was measured)
    cost_method: str | None = None


class GpuTarget(Target):
    """One NVIDIA GPU model, from :data:`hwnas.targets.gpu.devices.DEVICES`."""

    name = "gpu"
    description = "NVIDIA GPU via TVM CUDA codegen + nvcc: thread-block/tile/shared-memory HSS; measured or analytical"
    metrics = ("latency_ms", "latency_std_ms", "peak_memory_kb", "params_kb", "macs")
    cost_methods = ("analytical", "measure")
    #: the analytical estimate is judged against a measurement on the device (which needs its GPU)
    reference_cost_method = "measure"
    variants = tuple(DEVICES)
    #: measurement settings (:meth:`~hwnas.targets.base.Target.set_measure_options` changes them per instance)
    default_measure_options = MeasureOptions(warmup=10, repeats=20, min_repeat_ms=20.0)

    def __init__(self, variant: str | None = None) -> None:
        self.device = get_device(variant)
        self._warned_other_gpu = False
        super().__init__(variant)
        if self.on_device():  # the first listed method is the default one (``hwnas targets`` shows it)
            self.cost_methods = ("measure", "analytical")

    def on_device(self) -> bool:
        """Whether this machine's GPU is the target's device (``tvm.cuda(0)`` reports its model)."""
        return cuda_present() and device_named(present_gpu()) == self.device.name

    def cost_method(self, method: str | None) -> str:
        """``measure`` on the target's own GPU, else ``analytical``; ``measure`` without a GPU is an error.

        ``measure`` asked for on another GPU model is done, with a warning: the latency is that GPU's.
        """
        if method is None:
            return "measure" if self.on_device() else "analytical"
        method = super().cost_method(method)
        if method == "measure" and cuda_present() and not self.on_device() and not self._warned_other_gpu:
            self._warned_other_gpu = True
            log.warning("%s: measuring on this machine's %s, not on a %s", self.spec, present_gpu(),
                        self.device.title)
        if method == "measure" and not cuda_present():
            raise InvalidConfigError(
                f"{self.spec}: cost method 'measure' needs a CUDA device and this machine has none; "
                "use --cost analytical (an estimate)"
            )
        return method

    def needs_quiet(self, method: str) -> bool:
        return method == "measure"

    @functools.cached_property
    def hardware_space(self) -> HardwareSpace:
        from hwnas.targets.gpu.tile_conv2d import SHARED_MODES

        limit = self.device.max_threads_per_block
        return HardwareSpace(
            name=self.spec,
            params={
                "threads_oc": Pow2Param(1, 64, default_value=8, doc="threads per block along output channels"),
                "threads_oh": Pow2Param(1, 32, default_value=4, doc="threads per block along output rows"),
                "threads_ow": Pow2Param(1, 32, default_value=8, doc="threads per block along output columns"),
                "tile_oc": Pow2Param(1, 8, default_value=2, doc="output channels per thread (register tile)"),
                "tile_ow": Pow2Param(1, 4, default_value=2, doc="output columns per thread (register tile)"),
                "tile_rc": Pow2Param(1, 64, default_value=8, doc="input channels per shared-memory stage"),
                "shared": ChoiceParam(SHARED_MODES, doc="stage inputs and weights in shared memory"),
                "vector_load": ChoiceParam((1, 2, 4), default_value=4, doc="lanes of the staged loads (where aligned)"),
                "unroll": ChoiceParam((0, 16, 64, 512), default_value=64, doc="max auto-unroll steps"),
                "precision": ChoiceParam(("fp32", "fp16"), doc="compute precision (fp16: fp32 accumulation)"),
            },
            constraints=(
                Constraint(
                    f"threads per block (threads_oc*threads_oh*threads_ow) must not exceed the device limit "
                    f"max_threads_per_block={limit}",
                    lambda c: c["threads_oc"] * c["threads_oh"] * c["threads_ow"] <= limit,
                ),
            ),
        )

    def tvm_target(self, hw: dict[str, Any]):
        import tvm

        return tvm.target.Target(self.device.tvm_target_dict())

    def graph_passes(self, hw: dict[str, Any]) -> list:
        if hw.get("precision") == "fp16":
            from hwnas.passes.to_float16 import ToFloat16

            return [ToFloat16()]
        return []

    def schedule_passes(self, hw: dict[str, Any]) -> list:
        from hwnas.targets.gpu.default_schedule import GpuDefaultSchedule
        from hwnas.targets.gpu.tile_conv2d import GpuTileConv2d
        from hwnas.targets.gpu.tile_dense import GpuTileDense

        return [GpuTileConv2d(hw), GpuTileDense(hw), GpuDefaultSchedule()]

    def build(self, mod, hw: dict[str, Any]) -> GpuBuilt:
        from hwnas.targets.gpu import kernels as gpu_kernels

        tgt = self.tvm_target(hw)
        launches = gpu_kernels.kernel_launches(mod)
        gpu_kernels.check_limits(launches, device=self.spec,
                                 max_threads_per_block=self.device.max_threads_per_block,
                                 max_shared_memory_per_block=self.device.smem_per_block_kb * 1024)
        ex, jit_failed = self._compile(mod, tgt)
        source = gpu_kernels.cuda_source(ex)
        machine_code = jit_failed is None and gpu_kernels.cuda_runtime_loaded()
        arch = gpu_kernels.nvcc_arch_for(self.device.arch)
        ptxas = gpu_kernels.ptxas_info(source, arch) if arch is not None else {}
        if arch is None:
            log.info("%s: no nvcc for %s here; registers are assumed", self.spec, self.device.arch)
        inputs, outputs = analysis.io_signature(mod)
        return GpuBuilt(module=mod, executable=ex, tvm_target=tgt, hw=dict(hw), inputs=inputs, outputs=outputs,
                        launches=launches, ptxas=ptxas, nvcc_arch=arch, cuda_source=source, jit_failed=jit_failed,
                        machine_code=machine_code)

    def _compile(self, mod, tgt):
        """(executable, None), or (executable holding CUDA source, why) when this machine cannot compile the kernels.

        With a CUDA runtime in the process, TVM compiles the kernels for the
        device's architecture during the build (NVRTC or nvcc); without one the
        library carries the source, compiled where it is loaded. A local
        compiler that lacks the architecture (CUDA 13 has no Pascal, sm_61)
        fails that step: the build is then redone carrying the source, like a
        build on a machine without a GPU.
        """
        from hwnas.ir.lower import compile_module
        from hwnas.targets.gpu import kernels as gpu_kernels

        try:
            with tgt:
                return compile_module(mod, tgt), None
        except Exception as exc:  # TVM's errors are not typed usefully
            first = error_line(exc, with_type=True)
        user_value = os.environ.get(FORCE_SOURCE)
        if user_value not in (None, "", "0") or not gpu_kernels.cuda_runtime_loaded():
            raise CompileError(f"compiling for {self.spec} failed: {first}")
        os.environ[FORCE_SOURCE] = "1"
        try:
            with tgt:
                ex = compile_module(mod, tgt)
        except Exception as exc:
            raise CompileError(f"compiling for {self.spec} failed: {error_line(exc)}") from None
        finally:  # the user's own setting, if any, is kept
            if user_value is None:
                del os.environ[FORCE_SOURCE]
            else:
                os.environ[FORCE_SOURCE] = user_value
        why = f"this machine's CUDA compiler could not compile for {self.device.arch}: {first}"
        log.warning("%s: %s; the library carries the CUDA source", self.spec, why)
        return ex, why

    def estimate(self, built: GpuBuilt):
        """(latency ms, per-kernel :class:`~hwnas.targets.gpu.cost.KernelEstimate` rows) of ``built``."""
        from hwnas.targets.gpu import cost as gpu_cost
        from hwnas.ir.workloads import extract

        return gpu_cost.estimate(self.device, extract(built.module), built.launches, built.ptxas,
                                 precision=built.hw["precision"], staged=built.hw["shared"] == "both")

    def cost(self, built: GpuBuilt, *, method: str) -> dict[str, float]:
        method = self.cost_method(method)
        memory = analysis.planned_memory(built.module)
        out = {"peak_memory_kb": memory["peak"] / 1024, "params_kb": analysis.param_bytes(built.module) / 1024}
        if method == "measure":
            import tvm

            if built.jit_failed:
                raise InvalidConfigError(f"{self.spec}: cannot measure here: {built.jit_failed}")
            if cuda_compile_mode() is None:
                raise InvalidConfigError(
                    f"{self.spec}: the TVM runtime compiles CUDA when it loads a module and needs the "
                    "cuda-bindings package (NVRTC) or nvcc on PATH; neither is here"
                )

            arrays = list(measure.random_inputs(built.inputs).values())
            opts = self.measure_options
            timing = measure.measure_vm(built.executable, arrays, device=tvm.cuda(0), warmup=opts.warmup,
                                        repeats=opts.repeats, min_repeat_ms=opts.min_repeat_ms)
            out.update(latency_ms=timing.median_ms, latency_std_ms=timing.std_ms)
        else:
            out["latency_ms"], _ = self.estimate(built)
        built.cost_method = method
        return out

    def emit(self, built: GpuBuilt, out_dir: Path) -> dict[str, Path]:
        from hwnas.targets.gpu import kernels as gpu_kernels

        out_dir = Path(out_dir)
        files = {"library": out_dir / "model.so", "cuda_source": out_dir / "kernels.cu"}
        with filtered_native_stderr():
            built.executable.export_library(str(files["library"]))
        files["cuda_source"].write_text(built.cuda_source)
        if built.nvcc_arch is not None and built.nvcc_arch == self.device.arch and shutil.which("nvcc"):
            gpu_kernels.ptxas_info(built.cuda_source, built.nvcc_arch, out_dir)
            files["fatbin"] = out_dir / "kernels.fatbin"
        return files

    def runtime_info(self, built: GpuBuilt) -> dict[str, Any]:
        measured = getattr(built, "cost_method", None) == "measure"
        return {
            "device": "cuda",
            "gpu": self.device.title,
            "arch": self.device.arch,
            "latency": "measured on a CUDA device" if measured else "analytical estimate (no CUDA device was used)",
            "verified_run": measured,
            "note": (f"the library holds the kernels compiled for {self.device.arch}" if built.machine_code else
                     "the library holds CUDA source that the TVM runtime compiles when it is loaded on a CUDA "
                     "machine: install cuda-bindings (NVRTC) or set TVM_CUDA_COMPILE_MODE=nvcc with nvcc on PATH"
                     + (f"; {built.jit_failed}" if built.jit_failed else "")),
        }
