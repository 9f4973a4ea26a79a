"""An example hwnas target backend, installed as its own package.

A small DSP: ``lanes`` multiply-accumulate units working in lock-step (SIMD),
a clock, an on-chip SRAM, and a bus to external memory. The network is
compiled for the host with LLVM (so its numerics can be checked and the bundle
runs anywhere); its cost on the DSP comes from a cycle model over the kernels
of the compiled module. Everything hwnas needs to know is declared here: the
file registers itself through the ``hwnas.targets`` entry point of this
package's ``pyproject.toml``, and no file of hwnas is edited.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from hwnas.targets.api import (
    Built,
    ChoiceParam,
    CompileError,
    Constraint,
    HardwareSpace,
    InvalidConfigError,
    Pow2Param,
    Target,
    compile_module,
    extract,
    io_signature,
    param_bytes,
    planned_memory,
)

# --- the device family, as data -----------------------------------------------------------------
#: variant -> the fixed properties of one part (the knobs below are what a designer may still pick)
DEVICES = {
    "small": {"bus_bytes_per_cycle": 4, "pj_per_mac": 1.2, "pj_per_sram_byte": 0.6, "pj_per_bus_byte": 25.0},
    "large": {"bus_bytes_per_cycle": 16, "pj_per_mac": 1.0, "pj_per_sram_byte": 0.5, "pj_per_bus_byte": 20.0},
}


# --- the target ---------------------------------------------------------------------------------
class DspTarget(Target):
    name = "exdsp"
    description = "example plugin: a SIMD DSP (cycle model over the compiled kernels, host-built code)"
    metrics = ("latency_ms", "energy_mj", "peak_memory_kb", "params_kb", "macs")
    cost_methods = ("analytical",)
    variants = tuple(DEVICES)

    def __init__(self, variant: str | None = None) -> None:
        if variant not in DEVICES:
            raise InvalidConfigError(f"target exdsp needs a device: exdsp:<{'|'.join(DEVICES)}>, got {variant!r}")
        super().__init__(variant)
        self.device = DEVICES[variant]

    # --- the hardware search space, as data ---
    @functools.cached_property
    def hardware_space(self) -> HardwareSpace:
        return HardwareSpace(
            name=f"exdsp:{self.variant}",
            params={
                "lanes": Pow2Param(1, 32, default_value=8, doc="SIMD multiply-accumulate lanes"),
                "clock_mhz": ChoiceParam((100, 200, 400), default_value=200, doc="core clock"),
                "sram_kb": ChoiceParam((64, 128, 256, 512), default_value=256, doc="on-chip activation SRAM"),
            },
            constraints=(
                Constraint("400 MHz is only reachable with at most 16 lanes",
                           lambda c: c["clock_mhz"] < 400 or c["lanes"] <= 16),
            ),
        )

    # --- compile: the host's LLVM, default TVM schedules ---
    def tvm_target(self, hw):
        import tvm

        return tvm.target.Target({"kind": "llvm"})

    def build(self, mod, hw) -> Built:
        tgt = self.tvm_target(hw)
        try:
            with tgt:
                ex = compile_module(mod, tgt)
        except Exception as exc:
            raise CompileError(f"compiling for {self.spec} failed: {exc}") from None
        inputs, outputs = io_signature(mod)
        return Built(module=mod, executable=ex, tvm_target=tgt, hw=dict(hw), inputs=inputs, outputs=outputs)

    # --- cost: a cycle model over the compiled kernels ---
    def cost(self, built: Built, *, method: str) -> dict[str, float]:
        self.cost_method(method)
        hw, dev = built.hw, self.device
        memory = planned_memory(built.module)
        spills = memory["peak"] > hw["sram_kb"] * 1024  # activations that do not fit go over the bus
        cycles = energy_pj = macs = 0.0
        for w in extract(built.module):
            compute = math.ceil(w.macs / hw["lanes"]) if w.macs else math.ceil(w.flops / hw["lanes"])
            bus_bytes = w.weight_bytes + (w.input_bytes + w.output_bytes if spills else 0)
            transfer = bus_bytes / dev["bus_bytes_per_cycle"]
            cycles += w.calls * max(compute, transfer)
            energy_pj += w.calls * (w.macs * dev["pj_per_mac"] + bus_bytes * dev["pj_per_bus_byte"]
                                    + (w.input_bytes + w.output_bytes) * dev["pj_per_sram_byte"])
            macs += w.calls * w.macs
        return {
            "latency_ms": cycles / (hw["clock_mhz"] * 1e3),
            "energy_mj": energy_pj * 1e-9,
            "peak_memory_kb": memory["peak"] / 1024,
            "params_kb": param_bytes(built.module) / 1024,
            "macs": macs,
        }

    # --- the deployable artifact ---
    def emit(self, built: Built, out_dir: Path) -> dict[str, Path]:
        path = Path(out_dir) / "model.so"
        built.executable.export_library(str(path))
        return {"library": path}
