"""Accelerator templates as targets: ``asic:<template>[@<mm2>]`` and ``fpga:<template>[@<board>]``.

The network is searched together with the accelerator that runs it (NASAIC,
FNAS, NAAS style): the HSS holds the template (its dataflow: weight- or
output-stationary systolic array, row-stationary spatial array) and its
sizes (PE rows and columns, register file bytes, global buffer size and
split, DRAM bandwidth, clock, 8- or 16-bit data); see :mod:`hwnas.targets.accel.space`.

* ``asic:<template>`` fixes the template (``ws_systolic``, ``os_systolic``,
  ``row_stationary``; ``eyeriss``, ``tpu``, ``gemmini``, ``shidiannao`` are
  aliases); ``asic`` or ``asic:any`` lets the search choose it. ``@<mm2>``
  sets the area budget (default :data:`DEFAULT_AREA_BUDGET_MM2`), e.g.
  ``asic:eyeriss@2.5``.
* ``fpga:<template>@<board>`` sizes the same templates against a board's
  DSP, BRAM36 and LUT budget (``zcu102``, the default, or ``ultra96``).
  Its energy uses the same per-access table (45 nm ASIC figures, see
  :data:`hwnas.targets.accel.model.ENERGY`): a relative figure for comparing
  designs, not a board power measurement.

The flow: no graph passes (the module stays NCHW); after fusion
:class:`~hwnas.targets.accel.map_accelerator.MapAccelerator` maps every conv and
dense kernel (per-layer tiling and loop order, a bounded search) and attaches
the mapping table; ``build`` compiles the host-side module with LLVM for this
machine (it computes the network, so numerics are checked against ONNX
Runtime); ``cost(built, method="analytical")`` sums the table: latency,
energy, area, and ``resource_use`` (share of the budget used; also > 1 when a
layer's smallest tile overflows a buffer). ``resource_use <= 1`` is a
built-in constraint of every search on these targets: a design over budget is
infeasible, not an error.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from typing import Any, ClassVar

from hwnas.errors import CompileError, InvalidConfigError
from hwnas.hss import HardwareSpace
from hwnas.targets.accel.space import (
    BOARDS,
    TEMPLATE_ALIASES,
    TEMPLATES,
    AccelConfig,
    Board,
    accelerator_space,
    architecture_description,
    board,
    template,
)
from hwnas.targets.accel.model import area_mm2, fpga_use
from hwnas.ir import analysis
from hwnas.ir.lower import build_module
from hwnas.ir.runtime import host_cpu
from hwnas.targets.base import Built, Target
from hwnas.util import filtered_native_stderr

#: area budget of ``asic:<template>`` when the spec names none (mm^2 at 45 nm; Eyeriss' default sizes take ~3.8)
DEFAULT_AREA_BUDGET_MM2 = 4.0
DEFAULT_BOARD = "zcu102"
TEMPLATE_VARIANTS = ("any",) + tuple(TEMPLATES) + tuple(TEMPLATE_ALIASES)


def _templates(name: str | None, spec: str) -> tuple[str, ...]:
    if name in (None, "", "any"):
        return tuple(TEMPLATES)
    try:
        return (template(name).name,)
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"{spec}: {exc}") from None


class AcceleratorTarget(Target):
    """What the ASIC and FPGA targets share: passes, host build, the cost sum, artifacts."""

    cost_methods: ClassVar[tuple[str, ...]] = ("analytical",)
    variants: ClassVar[tuple[str, ...]] = TEMPLATE_VARIANTS

    templates: tuple[str, ...]
    board_info: Board | None = None

    def config(self, hw: dict[str, Any]) -> AccelConfig:
        return AccelConfig.from_hw(self.hardware_space.validate(hw))

    def builtin_constraints(self) -> tuple[str, ...]:
        return ("resource_use<=1",)

    #: weights stored at fewer bits change what the accelerator computes
    deployment_knobs = ("weight_bits",)

    def weight_spec(self, hw: dict[str, Any]):
        """The weight rounding a ``weight_bits`` of 8 or 4 deploys (weight-only: activations as the float
        network's), None for ``data``."""
        from hwnas.passes.quantize import QuantSpec

        bits = self.config(hw).weight_bits
        return None if not bits else QuantSpec(weight_bits=bits, activation_bits=None)

    def deployment_key(self, hw: dict[str, Any]) -> str | None:
        spec = self.weight_spec(hw)
        return None if spec is None else spec.key()

    def deploy_network(self, model, input_shape, calibration, hw: dict[str, Any]):
        from hwnas.targets.quantized import deploy_network

        return deploy_network(model, input_shape, calibration, self.weight_spec(hw))

    def tvm_target(self, hw: dict[str, Any]):
        """The host CPU: the host-side module runs the network on this machine."""
        import tvm


        return tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()})

    def schedule_passes(self, hw: dict[str, Any]) -> list:
        from hwnas.targets.accel.map_accelerator import MapAccelerator

        return [MapAccelerator(self.config(hw))]

    def build(self, mod, hw: dict[str, Any]) -> Built:
        from hwnas.targets.accel.map_accelerator import read_mapping

        if not read_mapping(mod):
            raise CompileError(f"{self.spec}: the module carries no accelerator mapping (run MapAccelerator first)")
        return build_module(mod, self.tvm_target(hw), hw, what=f"the host-side module for {self.spec}")

    # -- cost --------------------------------------------------------------------------------
    def budget_use(self, cfg: AccelConfig) -> dict[str, float]:
        """Share of each budgeted resource ``cfg`` uses."""
        raise NotImplementedError

    def summary(self, built: Built) -> dict[str, Any]:
        """Totals of the mapping table of ``built``: cycles, energy by level, worst buffer overflow."""
        from hwnas.targets.accel.map_accelerator import read_mapping

        table = read_mapping(built.module)
        cfg = AccelConfig.from_hw(built.hw)
        cycles = sum(r["cycles"] * r["calls"] for r in table)
        energy: dict[str, float] = {}
        for r in table:
            for level, pj in r["energy_pj"].items():
                energy[level] = energy.get(level, 0.0) + pj * r["calls"]
        return {"cycles": cycles, "latency_ms": cycles / (cfg.clock_mhz * 1e3), "energy_pj": energy,
                "overflow": max((r["overflow"] for r in table), default=0.0),
                "macs": sum(r["macs"] * r["calls"] for r in table), "table": table}

    def cost(self, built: Built, *, method: str) -> dict[str, float]:
        self.cost_method(method)
        cfg = AccelConfig.from_hw(built.hw)
        s = self.summary(built)
        use = self.budget_use(cfg)
        scale = cfg.data_bits / 32  # the module's float32 tensors held at the accelerator's width
        out = {
            "latency_ms": s["latency_ms"],
            "energy_mj": sum(s["energy_pj"].values()) * 1e-9,
            # a layer whose smallest tile overflows a buffer makes the design infeasible as well
            "resource_use": max(max(use.values()), s["overflow"] if s["overflow"] > 1 else 0.0),
            "peak_memory_kb": built.fact("memory", lambda b: analysis.planned_memory(b.module))["peak"] * scale / 1024,
            # weights held at their stored width (packed two per byte at 4 bits)
            "params_kb": built.fact("param_bytes", lambda b: analysis.param_bytes(b.module))
            * (cfg.weight_word_bits / 32) / 1024,
            "macs": float(s["macs"]),
        }
        if "area_mm2" in self.metrics:
            out["area_mm2"] = sum(area_mm2(cfg).values())
        return out

    # -- artifacts ---------------------------------------------------------------------------
    def emit(self, built: Built, out_dir: Path) -> dict[str, Path]:
        out_dir = Path(out_dir)
        cfg = AccelConfig.from_hw(built.hw)
        files = {"library": out_dir / "model.so", "arch_json": out_dir / "arch.json",
                 "mapping_csv": out_dir / "mapping.csv", "mapping_json": out_dir / "mapping.json"}
        with filtered_native_stderr():
            built.executable.export_library(str(files["library"]))
        arch = architecture_description(cfg, target=self.spec, board_info=self.board_info)
        arch["architecture"]["budget_use"] = self.budget_use(cfg)
        if "area_mm2" in self.metrics:
            arch["architecture"]["area_mm2"] = area_mm2(cfg)
        files["arch_json"].write_text(json.dumps(arch, indent=2) + "\n")
        s = self.summary(built)
        files["mapping_json"].write_text(json.dumps(s["table"], indent=1) + "\n")
        write_mapping_csv(s["table"], files["mapping_csv"])
        return files

    def runtime_info(self, built: Built) -> dict[str, Any]:
        return {"device": "cpu", "num_threads": 1, "role": "host-side module (the network on the host CPU)"}


MAPPING_COLUMNS = ("func", "kind", "calls", "macs", "G", "N", "K", "C", "P", "Q", "R", "S", "stride", "rows", "cols",
                   "rf", "glb", "dram", "dram_order", "cycles", "utilization", "bound", "dram_bytes", "energy_pj",
                   "glb_bytes", "rf_bytes", "overflow")


def write_mapping_csv(table: list[dict[str, Any]], path: Path) -> None:
    """The per-layer mapping table as CSV (one row per kernel; factors as ``dim=factor`` lists)."""

    def factors(d):
        return " ".join(f"{k}={v}" for k, v in d.items()) if d else ""

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MAPPING_COLUMNS)
        for r in table:
            layer = r.get("layer") or {}
            m = r.get("mapping") or {}
            buf = r.get("buffer_bytes") or {}
            writer.writerow(
                [r["func"], r["kind"], r["calls"], r["macs"]]
                + [layer.get(d, "") for d in ("G", "N", "K", "C", "P", "Q", "R", "S", "stride")]
                + [factors(m.get(k)) for k in ("rows", "cols", "rf", "glb", "dram")]
                + [" ".join(m.get("dram_order", [])), f"{r['cycles']:.0f}",
                   "" if r["utilization"] is None else f"{r['utilization']:.3f}", r["bound"],
                   f"{r['dram_bytes']:.0f}", f"{sum(r['energy_pj'].values()):.1f}", buf.get("glb", ""),
                   buf.get("rf", ""), f"{r['overflow']:.3f}"])


class AsicTarget(AcceleratorTarget):
    """An accelerator template as an ASIC (45 nm energy and area), under an area budget."""

    name = "asic"
    description = ("accelerator template as an ASIC: asic:<template>[@<area budget mm2>] "
                   f"(templates: {', '.join(TEMPLATES)}; aliases {', '.join(TEMPLATE_ALIASES)}; any: searched; "
                   f"default budget {DEFAULT_AREA_BUDGET_MM2:g} mm2); analytical latency/energy/area, host-side module")
    metrics = ("latency_ms", "energy_mj", "area_mm2", "resource_use", "peak_memory_kb", "params_kb", "macs")

    def __init__(self, variant: str | None = None) -> None:
        super().__init__(variant)
        name, _, budget = (variant or "").partition("@")
        self.templates = _templates(name, self.spec)
        self.area_budget_mm2 = DEFAULT_AREA_BUDGET_MM2
        if budget:
            try:
                self.area_budget_mm2 = float(budget.removesuffix("mm2"))
            except ValueError:
                self.area_budget_mm2 = -1.0
            if not self.area_budget_mm2 > 0:
                raise InvalidConfigError(f"{self.spec}: the area budget after '@' must be a positive number of mm2, "
                                         f"e.g. asic:eyeriss@2.5")

    @functools.cached_property
    def hardware_space(self) -> HardwareSpace:
        return accelerator_space(self.spec, self.templates)

    def budget_use(self, cfg: AccelConfig) -> dict[str, float]:
        return {"area": sum(area_mm2(cfg).values()) / self.area_budget_mm2}


class FpgaTarget(AcceleratorTarget):
    """An accelerator template on an FPGA board: DSPs, BRAM36 and LUTs against the board's budget."""

    name = "fpga"
    description = ("accelerator template on an FPGA: fpga:<template>[@<board>] "
                   f"(templates as asic; boards: {', '.join(f'{b.name} ({b.part})' for b in BOARDS.values())}, "
                   f"default {DEFAULT_BOARD}); analytical latency/energy, DSP/BRAM/LUT use, host-side module")
    metrics = ("latency_ms", "energy_mj", "resource_use", "peak_memory_kb", "params_kb", "macs")

    def __init__(self, variant: str | None = None) -> None:
        super().__init__(variant)
        name, _, board_name = (variant or "").partition("@")
        self.templates = _templates(name, self.spec)
        try:
            self.board_info = board(board_name or DEFAULT_BOARD)
        except InvalidConfigError as exc:
            raise InvalidConfigError(f"{self.spec}: {exc}") from None

    @functools.cached_property
    def hardware_space(self) -> HardwareSpace:
        return accelerator_space(self.spec, self.templates, fpga=self.board_info)

    def budget_use(self, cfg: AccelConfig) -> dict[str, float]:
        return fpga_use(cfg, self.board_info)
