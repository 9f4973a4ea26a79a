"""Accelerator templates and FPGA boards as data, and the hardware search space built from them.

A *template* is a dataflow plus the default sizes of a well-known design
(the search may change every size; the template fixes how the PE array is
used). Three are built in:

* ``ws_systolic``: a weight-stationary systolic array (TPU v1, Gemmini):
  PE rows take input channels (then filter rows/columns), PE columns take
  output channels; each PE keeps one weight while the output pixels stream
  through, inputs flow along rows, partial sums accumulate down columns.
* ``os_systolic``: an output-stationary systolic array (ShiDianNao-like):
  PE rows take output columns/rows, PE columns output channels; each PE keeps
  its partial sum while the reduction (input channels, filter window)
  streams through.
* ``row_stationary``: Eyeriss' row-stationary spatial array: PE rows take
  filter rows, PE columns output rows (extra rows and columns replicate over
  input and output channels); each PE keeps filter rows in its register file
  and slides them along an input row.

A hardware config (the HSS's dict) is read as an :class:`AccelConfig`;
:func:`architecture_description` writes it as a Timeloop-like architecture
tree (DRAM -> global buffer -> PE[rows x cols] {register file, MAC}).

Boards (FPGA budgets) come from Xilinx's device data sheets and the boards'
user guides (see :data:`BOARDS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hwnas.errors import InvalidConfigError
from hwnas.hss.params import ChoiceParam, Pow2Param
from hwnas.hss.space import Constraint, HardwareSpace

DATAFLOWS = ("weight_stationary", "output_stationary", "row_stationary")


@dataclasses.dataclass(frozen=True)
class AcceleratorTemplate:
    """A dataflow and the sizes of the design it is modelled on (defaults of the search space)."""

    name: str
    dataflow: str
    doc: str
    #: the design it is modelled on and where its sizes come from
    source: str
    pe_rows: int
    pe_cols: int
    rf_bytes: int
    glb_kb: int
    data_bits: int
    clock_mhz: int
    dram_gbps: float

    def __post_init__(self) -> None:
        if self.dataflow not in DATAFLOWS:
            raise InvalidConfigError(f"template {self.name}: unknown dataflow {self.dataflow!r}; known: {DATAFLOWS}")
        for field in ("pe_rows", "pe_cols", "rf_bytes", "glb_kb", "clock_mhz"):
            if getattr(self, field) <= 0:
                raise InvalidConfigError(f"template {self.name}: {field} must be positive")
        if self.data_bits not in (8, 16):
            raise InvalidConfigError(f"template {self.name}: data_bits must be 8 or 16, got {self.data_bits}")

    def defaults(self) -> dict[str, Any]:
        return {"pe_rows": self.pe_rows, "pe_cols": self.pe_cols, "rf_bytes": self.rf_bytes,
                "glb_kb": self.glb_kb, "data_bits": self.data_bits, "clock_mhz": self.clock_mhz,
                "dram_gbps": self.dram_gbps}


TEMPLATES: dict[str, AcceleratorTemplate] = {
    t.name: t
    for t in (
        AcceleratorTemplate(
            "ws_systolic", "weight_stationary",
            "weight-stationary systolic array (TPU/Gemmini-like): rows x input channels, cols x output channels",
            "Gemmini's default configuration (Genc et al., DAC 2021): 16x16 8-bit PEs, 256 KiB scratchpad",
            pe_rows=16, pe_cols=16, rf_bytes=16, glb_kb=256, data_bits=8, clock_mhz=500, dram_gbps=8.0),
        AcceleratorTemplate(
            "os_systolic", "output_stationary",
            "output-stationary systolic array (ShiDianNao-like): rows x output pixels, cols x output channels",
            "ShiDianNao (Du et al., ISCA 2015): 8x8 16-bit PEs, 64 KiB of on-chip buffers",
            pe_rows=8, pe_cols=8, rf_bytes=64, glb_kb=64, data_bits=16, clock_mhz=1000, dram_gbps=4.0),
        AcceleratorTemplate(
            "row_stationary", "row_stationary",
            "row-stationary spatial array (Eyeriss-like): rows x filter rows, cols x output rows",
            "Eyeriss (Chen et al., ISCA 2016 / JSSC 2017): 12x14 16-bit PEs, 0.5 KiB spads, 108 KiB GLB, 200 MHz",
            pe_rows=12, pe_cols=14, rf_bytes=512, glb_kb=108, data_bits=16, clock_mhz=200, dram_gbps=4.0),
    )
}

#: other names of the templates
TEMPLATE_ALIASES = {"eyeriss": "row_stationary", "tpu": "ws_systolic", "gemmini": "ws_systolic",
                    "shidiannao": "os_systolic"}


def template(name: str) -> AcceleratorTemplate:
    """The template ``name`` (aliases accepted); a clear error naming the known ones."""
    key = TEMPLATE_ALIASES.get(name, name)
    if key not in TEMPLATES:
        raise InvalidConfigError(
            f"unknown accelerator template {name!r}; known: {', '.join(TEMPLATES)} "
            f"(aliases: {', '.join(f'{a}={t}' for a, t in TEMPLATE_ALIASES.items())})")
    return TEMPLATES[key]


@dataclasses.dataclass(frozen=True)
class Board:
    """An FPGA board's programmable-logic budget and its DRAM bandwidth."""

    name: str
    part: str
    dsp: int
    bram36: int
    lut: int
    dram_gbps: float
    source: str


#: XCZU9EG and XCZU3EG resources from Xilinx DS891 (Zynq UltraScale+ MPSoC Data Sheet: Overview, 2019);
#: DRAM: ZCU102's PS DDR4 64-bit at 2400 MT/s (Xilinx UG1182), Ultra96's LPDDR4 32-bit at 2133 MT/s
#: (Avnet Ultra96 Hardware User's Guide)
BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board("zcu102", "XCZU9EG", dsp=2520, bram36=912, lut=274_080, dram_gbps=19.2,
              source="Xilinx DS891 (XCZU9EG), UG1182 (ZCU102 PS DDR4-2400 x64)"),
        Board("ultra96", "XCZU3EG", dsp=360, bram36=216, lut=70_560, dram_gbps=8.5,
              source="Xilinx DS891 (XCZU3EG), Avnet Ultra96 HW user guide (LPDDR4-2133 x32)"),
    )
}


def board(name: str) -> Board:
    if name not in BOARDS:
        raise InvalidConfigError(f"unknown FPGA board {name!r}; known: {', '.join(BOARDS)}")
    return BOARDS[name]


#: ``glb_split`` choices: ``shared`` (one buffer for all operands) or the weights:inputs:outputs ratio
GLB_SPLITS = ("shared", "1:1:1", "2:1:1", "1:2:1", "1:1:2")
PE_SIZES = (4, 8, 12, 14, 16, 24, 32, 48, 64)
GLB_KBS = (16, 32, 64, 108, 128, 256, 512, 1024)
DRAM_GBPS = (2.0, 4.0, 8.0, 12.8, 19.2, 25.6)
ASIC_CLOCKS = (100, 200, 500, 1000)
#: fabric clocks a DSP-based PE array closes timing at on UltraScale+ (the DSP48E2 itself tops out near 890 MHz)
FPGA_CLOCKS = (100, 150, 200, 250, 300)


@dataclasses.dataclass(frozen=True)
class AccelConfig:
    """One accelerator instance: a template's dataflow with concrete sizes (a validated HSS config)."""

    template: str
    pe_rows: int
    pe_cols: int
    rf_bytes: int
    glb_kb: int
    glb_split: str
    dram_gbps: float
    clock_mhz: int
    data_bits: int
    #: bits a weight is stored and moved at (DRAM, global buffer, array network, register file), decoded to
    #: ``data_bits`` at the MAC; 0: ``data_bits``
    weight_bits: int = 0

    @classmethod
    def from_hw(cls, hw: Mapping[str, Any]) -> AccelConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        hw = {**hw, "weight_bits": _weight_bits(hw.get("weight_bits", 0))}
        missing = fields - set(hw)
        if missing:
            raise InvalidConfigError(f"accelerator config lacks {', '.join(sorted(missing))}")
        return cls(**{k: hw[k] for k in fields})

    def as_hw(self) -> dict[str, Any]:
        hw = dataclasses.asdict(self)
        hw["weight_bits"] = self.weight_bits or "data"
        return hw

    @property
    def dataflow(self) -> str:
        return template(self.template).dataflow

    @property
    def pes(self) -> int:
        return self.pe_rows * self.pe_cols

    @property
    def data_bytes(self) -> int:
        return self.data_bits // 8

    @property
    def weight_word_bits(self) -> int:
        """Bits of a stored weight (``weight_bits``, or ``data_bits`` when it is 0)."""
        return self.weight_bits or self.data_bits

    @property
    def weight_bytes(self) -> float:
        """Bytes of a stored weight (a half for 4-bit weights, packed two per byte)."""
        return self.weight_word_bits / 8

    @property
    def psum_bytes(self) -> int:
        """Partial sums are kept at 32 bits (int8 x int8 and int16 x int16 products accumulate there)."""
        return 4

    @property
    def glb_bytes(self) -> int:
        return self.glb_kb * 1024

    def glb_capacity(self) -> dict[str, int] | int:
        """Bytes of the global buffer: an int when shared, else per operand ``{"W", "I", "O"}``."""
        if self.glb_split == "shared":
            return self.glb_bytes
        parts = [int(v) for v in self.glb_split.split(":")]
        total = sum(parts)
        return {op: self.glb_bytes * p // total for op, p in zip("WIO", parts)}

    @property
    def bytes_per_cycle(self) -> float:
        """DRAM bytes per accelerator clock cycle."""
        return self.dram_gbps * 1e9 / (self.clock_mhz * 1e6)


def _weight_bits(value) -> int:
    """The ``weight_bits`` knob as an int (0: the data width)."""
    return 0 if value in ("data", None, 0) else int(value)


def accelerator_space(name: str, templates: tuple[str, ...], *, fpga: Board | None = None) -> HardwareSpace:
    """The HSS of an accelerator target: the template (dataflow) and its sizes.

    ``templates`` are the templates the search may choose (one when the
    target names it); the defaults are the first one's. On an FPGA the
    clock choices are fabric clocks and the DRAM bandwidth may not exceed the
    board's.
    """
    first = template(templates[0])
    d = first.defaults()
    clocks = FPGA_CLOCKS if fpga is not None else ASIC_CLOCKS
    clock_default = d["clock_mhz"] if d["clock_mhz"] in clocks else 200
    dram_default = d["dram_gbps"] if fpga is None or d["dram_gbps"] <= fpga.dram_gbps else 4.0
    params = {
        "template": ChoiceParam(tuple(templates), doc="accelerator template (its dataflow): "
                                + "; ".join(f"{t}: {template(t).dataflow}" for t in templates)),
        "pe_rows": ChoiceParam(PE_SIZES, default_value=d["pe_rows"], doc="PE array rows"),
        "pe_cols": ChoiceParam(PE_SIZES, default_value=d["pe_cols"], doc="PE array columns"),
        "rf_bytes": Pow2Param(16, 1024, default_value=d["rf_bytes"], doc="register file (scratchpad) bytes per PE"),
        "glb_kb": ChoiceParam(GLB_KBS, default_value=d["glb_kb"], doc="global buffer KiB"),
        "glb_split": ChoiceParam(GLB_SPLITS, doc="global buffer shared, or split weights:inputs:outputs"),
        "dram_gbps": ChoiceParam(DRAM_GBPS, default_value=dram_default, doc="DRAM bandwidth, GB/s"),
        "clock_mhz": ChoiceParam(clocks, default_value=clock_default, doc="clock, MHz"),
        "data_bits": ChoiceParam((8, 16), default_value=d["data_bits"], doc="weight/activation bits (psums 32)"),
        "weight_bits": ChoiceParam(("data", 8, 4), doc="bits weights are stored and moved at, decoded to data_bits "
                                   "at the MAC (data: data_bits)"),
    }
    constraints: tuple[Constraint, ...] = ()
    if fpga is not None:
        constraints += (Constraint(f"dram_gbps must not exceed the {fpga.name} board's {fpga.dram_gbps:g} GB/s",
                                   lambda c, bw=fpga.dram_gbps: c["dram_gbps"] <= bw),)
    return HardwareSpace(name=name, params=params, constraints=constraints)


def architecture_description(cfg: AccelConfig, *, target: str, board_info: Board | None = None) -> dict[str, Any]:
    """A Timeloop-like architecture tree of ``cfg`` (what the bundle's ``arch.json`` holds; JSON is YAML 1.2,
    so YAML readers such as Timeloop's read it as it is)."""
    capacity = cfg.glb_capacity()
    if isinstance(capacity, int):
        glb = [{"name": "GlobalBuffer", "class": "SRAM",
                "attributes": {"size_bytes": capacity, "word_bits": cfg.data_bits, "holds": ["W", "I", "O"]}}]
    else:
        glb = [{"name": f"GlobalBuffer_{op}", "class": "SRAM",
                "attributes": {"size_bytes": size, "word_bits": cfg.weight_word_bits if op == "W" else cfg.data_bits,
                               "holds": [op]}}
               for op, size in capacity.items()]
    tpl = template(cfg.template)
    system: dict[str, Any] = {
        "name": "system",
        "attributes": {"target": target, "template": tpl.name, "dataflow": tpl.dataflow,
                       "clock_mhz": cfg.clock_mhz, "technology": "45nm" if board_info is None else board_info.part},
        "local": [{"name": "DRAM", "class": "DRAM",
                   "attributes": {"bandwidth_gbps": cfg.dram_gbps, "word_bits": cfg.data_bits}}],
        "subtree": [{
            "name": "accelerator",
            "local": glb,
            "subtree": [{
                "name": f"PE[0..{cfg.pes - 1}]",
                "attributes": {"rows": cfg.pe_rows, "cols": cfg.pe_cols},
                "local": [
                    {"name": "RegisterFile", "class": "regfile",
                     "attributes": {"size_bytes": cfg.rf_bytes, "word_bits": cfg.data_bits}},
                    {"name": "MAC", "class": "intmac",
                     "attributes": {"operand_bits": cfg.data_bits, "accumulator_bits": cfg.psum_bytes * 8,
                                    "weight_storage_bits": cfg.weight_word_bits}},
                ],
            }],
        }],
    }
    if board_info is not None:
        system["attributes"]["board"] = {"name": board_info.name, "part": board_info.part, "dsp": board_info.dsp,
                                         "bram36": board_info.bram36, "lut": board_info.lut}
    return {"architecture": {"version": "0.4-hwnas", "subtree": [system]}}
