"""The analytical model of an accelerator template: mapping search, cycles, accesses, energy, area, FPGA use.

A layer (a conv or dense kernel of the compiled module) is the loop nest
``G N K C P Q R S`` (groups, batch, output channels per group, input
channels per group, output rows, output columns, filter rows, filter
columns). A :class:`Mapping` splits every dimension over four levels, as
Timeloop does:

    DRAM temporal loops (order searched)
      -> global buffer (GLB) temporal loops (order fixed by the dataflow)
        -> spatial: PE rows x PE columns (the dataflow's dimensions; which first is searched)
          -> register file (RF) temporal loops (row-stationary: K, C, S)
            -> MAC

Access counts follow from reuse: the tile an inner level holds of an operand
(weights W, inputs I, outputs/partial sums O) is refilled each time a loop
*relevant* to that operand advances above it; loops irrelevant to it that sit
inside the innermost relevant one reuse the tile for free. Spatial loops
irrelevant to an operand multicast it (one GLB read serves a row or column
of PEs) or, for outputs, reduce it inside the array. Inputs moving along
output rows or columns share the overlapping window (sliding-window reuse).

Cycles: every PE does one MAC per cycle; the temporal loop count is the
compute cycles (padding of partial tiles lowers utilization), plus a fill
and drain of ``rows + cols`` cycles each time the array's stationary
operand changes; DRAM transfers overlap compute (the GLB prefetches the next
tile), so a layer takes ``max(compute, memory) + one tile's load``.

Energy is the sum of access counts times energy per access (:data:`ENERGY`),
area the sum of PE, register-file and SRAM areas (:data:`AREA`), FPGA use
DSPs, BRAM36 and LUTs (:data:`FPGA`). Every constant names its source.

Weights may be stored at fewer bits than the data (``weight_bits`` 8 or 4,
packed): their DRAM bytes, buffer footprints (global buffer and register
file) and the energy of their accesses at every level scale with their bits
(per-access energy is proportional to the word's bits, as for the data
widths: :data:`ENERGY`); they are decoded to the data width at the MAC, whose
energy and area stay those of the data width (a narrower multiplier would
cost less: not modelled, so the saving is a lower bound).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping as MappingABC
from typing import Any

from hwnas.targets.accel.space import AccelConfig, Board

DIMS = ("G", "N", "K", "C", "P", "Q", "R", "S")
#: the dimensions each operand's index depends on
RELEVANT = {"W": frozenset("GKCRS"), "I": frozenset("GNCPQRS"), "O": frozenset("GNKPQ")}

# --------------------------------------------------------------------------------------------- constants

#: Energy per access. MAC: Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm: 8-bit integer multiply
#: 0.2 pJ + 8-bit add 0.03 pJ; 16-bit: the multiply interpolated quadratically in width between Horowitz's 8-bit
#: (0.2 pJ) and 32-bit (3.1 pJ) points (0.8 pJ) + 16-bit add 0.05 pJ. Storage levels: Chen, Emer, Sze, "Eyeriss:
#: a spatial architecture for energy-efficient dataflow", ISCA 2016, Table IV normalized energy per 16-bit access
#: relative to a 16-bit MAC: RF (0.5 KB) 1x, inter-PE array 2x, global buffer (>100 KB) 6x, DRAM 200x; a word
#: of other width scales with its bits. RF and GLB energy scale with the square root of their size relative to
#: Eyeriss' (0.5 KB, 108 KB), the trend of Horowitz's SRAM figures (8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ per 64 bits).
ENERGY: dict[str, Any] = {
    "mac_pj": {8: 0.23, 16: 0.85},
    "ratio": {"rf": 1.0, "noc": 2.0, "glb": 6.0, "dram": 200.0},
    "reference_bits": 16,
    "rf_reference_bytes": 512,
    "glb_reference_bytes": 108 * 1024,
    "source": "Horowitz ISSCC 2014 (45 nm MAC pJ); Chen et al. ISCA 2016 Table IV (RF 1x, array 2x, GLB 6x, DRAM 200x)",
}

#: Area at 45 nm. MAC: Horowitz ISSCC 2014 area table: 8-bit multiply 282 um^2 + 8-bit add 36 um^2; 16-bit: the
#: multiply interpolated quadratically (1128 um^2) + 16-bit add 67 um^2. Register files are flip-flops: Nangate
#: FreePDK45 Open Cell Library DFF_X1, 4.522 um^2 per bit (read muxes excluded: a lower bound). SRAM: the 45 nm
#: 6T bit cell of Mistry et al., IEDM 2007 (0.346 um^2) over an array efficiency of 0.7 (periphery; assumed).
AREA: dict[str, Any] = {
    "mac_um2": {8: 282.0 + 36.0, 16: 1128.0 + 67.0},
    "rf_um2_per_byte": 8 * 4.522,
    "sram_um2_per_byte": 8 * 0.346 / 0.7,
    "source": "Horowitz ISSCC 2014 (MAC area); Nangate FreePDK45 DFF_X1 (RF); Mistry et al. IEDM 2007 (SRAM cell)",
}

#: FPGA mapping of the template. DSP48E2: one 16-bit MAC (27x18 multiplier, 48-bit accumulator) per DSP, two
#: 8-bit MACs sharing one DSP (Xilinx WP486, "Deep Learning with INT8 Optimization on Xilinx Devices", 2017).
#: BRAM36: 36 Kb, used as 4 KiB of 8/16-bit data, at most 72 bits per port (Xilinx UG573, UltraScale memory
#: resources). LUTRAM: a LUT6 is a 64x1-bit RAM (Xilinx UG574, UltraScale CLB). Per-PE control LUTs and the
#: fixed DMA/control LUTs are modelling assumptions (an AXI DMA is 1.5-4k LUTs in Xilinx PG021).
FPGA: dict[str, Any] = {
    "macs_per_dsp": {8: 2, 16: 1},
    "bram_bytes": 4096,
    "bram_port_bits": 72,
    "lutram_bits_per_lut": 64,
    "ff_rf_max_bytes": 32,
    "lut_per_pe": 24,
    "lut_fixed": 5000,
    "source": "Xilinx WP486 (int8 on DSP48E2), UG573 (BRAM36), UG574 (LUTRAM), PG021 (AXI DMA); "
              "per-PE and fixed LUTs assumed",
}

#: bound on the mappings evaluated per layer (the per-dimension tile choices are thinned to fit)
MAX_MAPPINGS = 1024
#: tile choices per dimension before thinning
MAX_TILE_CHOICES = 5

#: spatial dimensions of each dataflow (PE rows, PE columns), filled greedily in this order
SPATIAL = {
    "weight_stationary": (("C", "R", "S"), ("K", "G")),
    "output_stationary": (("Q", "P"), ("K", "G")),
    "row_stationary": (("R", "C"), ("P", "K", "G")),
}
#: global-buffer temporal loop order of each dataflow, outermost first (the stationary operand's
#: irrelevant loops innermost)
GLB_ORDER = {
    "weight_stationary": ("G", "N", "K", "C", "R", "S", "P", "Q"),
    "output_stationary": ("G", "N", "K", "P", "Q", "C", "R", "S"),
    "row_stationary": ("G", "N", "K", "C", "R", "S", "P", "Q"),
}
#: the operand the PE array keeps while it streams the others (a new one costs a fill and drain)
STATIONARY = {"weight_stationary": "W", "output_stationary": "O", "row_stationary": "W"}
#: DRAM loop orders searched: permutations of output channels, input channels and the output plane
DRAM_ORDERS = tuple(itertools.permutations(("K", "C", "PQ")))
TILED = ("G", "K", "C", "P", "Q")


# --------------------------------------------------------------------------------------------- workloads


@dataclasses.dataclass(frozen=True)
class Layer:
    """A conv or dense kernel as the ``G N K C P Q R S`` loop nest (per-group ``K`` and ``C``)."""

    g: int
    n: int
    k: int
    c: int
    p: int
    q: int
    r: int
    s: int
    stride: int = 1
    #: input height and width (unpadded): the input rows and columns a tile reads are clipped to them
    h: int = 1
    w: int = 1
    #: elements read besides the conv input and weights: bias, residual and other epilogue operands
    extra: int = 0

    def __post_init__(self) -> None:
        for f in ("g", "n", "k", "c", "p", "q", "r", "s", "stride", "h", "w"):
            if getattr(self, f) < 1:
                raise ValueError(f"layer dimension {f} must be >= 1, got {getattr(self, f)}")

    @property
    def dims(self) -> dict[str, int]:
        return {"G": self.g, "N": self.n, "K": self.k, "C": self.c, "P": self.p, "Q": self.q, "R": self.r,
                "S": self.s}

    @property
    def macs(self) -> int:
        return self.g * self.n * self.k * self.c * self.p * self.q * self.r * self.s

    @property
    def extents(self) -> tuple[int, ...]:
        """The dimensions in :data:`DIMS` order."""
        return (self.g, self.n, self.k, self.c, self.p, self.q, self.r, self.s)

    def clip(self, t: MappingABC[str, int]) -> tuple[int, ...]:
        """A tile given by dimension name (missing: 1) as a tuple in :data:`DIMS` order, clipped to the layer."""
        return tuple(min(int(t.get(d, 1)), v) for d, v in zip(DIMS, self.extents))

    def footprint(self, op: str, t: MappingABC[str, int] | tuple[int, ...]) -> int:
        """Elements of operand ``op`` a tile of extents ``t`` touches (inputs: with the window's halo).

        ``t``: extents by dimension name, or a clipped tuple in :data:`DIMS` order (see :meth:`clip`).
        """
        g, n, k, c, p, q, r, s = t if isinstance(t, tuple) else self.clip(t)
        if op == "W":
            return g * k * c * r * s
        if op == "O":
            return g * n * k * p * q
        return g * n * c * min(self.h, (p - 1) * self.stride + r) * min(self.w, (q - 1) * self.stride + s)

    def step(self, t: tuple[int, ...], dim: str) -> int:
        """Input elements new to a (clipped) tile when it moves one tile along output rows (P) or columns (Q)."""
        g, n, k, c, p, q, r, s = t
        rows = min(self.h, (p - 1) * self.stride + r)
        cols = min(self.w, (q - 1) * self.stride + s)
        if dim == "P":
            rows = min(rows, self.stride * p)
        else:
            cols = min(cols, self.stride * q)
        return g * n * c * rows * cols

    def compulsory(self) -> dict[str, int]:
        """Elements each operand has at least (weights, touched inputs, outputs): the DRAM traffic floor."""
        return {op: self.footprint(op, self.dims) for op in "WIO"}

    @classmethod
    def from_workload(cls, wl) -> Layer | None:
        """The loop nest of a :class:`hwnas.ir.workloads.Workload` (None for non-MAC kernels)."""
        import numpy as np

        size = np.dtype(wl.dtype).itemsize if wl.dtype else 4
        if wl.conv is not None:
            cs = wl.conv
            layer = cls(g=cs.groups, n=cs.n, k=cs.k // cs.groups, c=cs.c_per_group, p=cs.p, q=cs.q, r=cs.r,
                        s=cs.s, stride=cs.stride, h=cs.h, w=cs.w)
            conv_in = cs.n * cs.c * cs.h * cs.w
        elif wl.kind == "dense" and wl.spatial and wl.reduction:
            n = math.prod(wl.spatial[:-1]) or 1
            layer = cls(g=1, n=n, k=wl.spatial[-1], c=math.prod(wl.reduction), p=1, q=1, r=1, s=1)
            conv_in = n * layer.c
        else:
            return None
        weights = layer.g * layer.k * layer.c * layer.r * layer.s
        extra = max(0, (wl.input_bytes + wl.weight_bytes) // size - conv_in - weights)
        return dataclasses.replace(layer, extra=extra)


# --------------------------------------------------------------------------------------------- mappings


@dataclasses.dataclass(frozen=True)
class Mapping:
    """Factors of every dimension per level, and the DRAM loop order (outermost first)."""

    rows: tuple[tuple[str, int], ...]
    cols: tuple[tuple[str, int], ...]
    rf: tuple[tuple[str, int], ...]
    glb: tuple[tuple[str, int], ...]
    dram: tuple[tuple[str, int], ...]
    dram_order: tuple[str, ...]

    def factors(self, level: str) -> dict[str, int]:
        out = {d: 1 for d in DIMS}
        for part in ((self.rows, self.cols) if level == "spatial" else (getattr(self, level),)):
            for d, f in part:
                out[d] *= f
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"rows": dict(self.rows), "cols": dict(self.cols), "rf": dict(self.rf), "glb": dict(self.glb),
                "dram": dict(self.dram), "dram_order": list(self.dram_order)}


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One call of a layer under one mapping."""

    mapping: Mapping
    cycles: float
    compute_cycles: int
    memory_cycles: float
    fill_drain_cycles: int
    utilization: float
    #: words moved per level: dram, glb, noc (array), rf, mac
    accesses: dict[str, float]
    #: DRAM traffic in bytes
    dram_bytes: float
    energy_pj: dict[str, float]
    #: bytes of each buffer the mapping uses: glb (total), glb_W/I/O, rf
    buffer_bytes: dict[str, int]
    #: largest use / capacity of any buffer (<= 1: fits)
    overflow: float

    @property
    def energy_total_pj(self) -> float:
        return sum(self.energy_pj.values())

    @property
    def fits(self) -> bool:
        return self.overflow <= 1.0

    @property
    def bound(self) -> str:
        return "memory" if self.memory_cycles > self.compute_cycles + self.fill_drain_cycles else "compute"


def _split_even(extent: int, cap: int) -> int:
    """The smallest factor <= cap that needs as few steps over ``extent`` as ``min(extent, cap)`` does."""
    f = min(extent, cap)
    return -(-extent // -(-extent // f))


def _fold(dims: dict[str, int], order: tuple[str, ...], size: int) -> dict[str, int]:
    """Factors of ``order``'s dimensions on ``size`` PEs, filled greedily in that order."""
    left, f = size, {}
    for d in order:
        if left < 2:
            break
        f[d] = _split_even(dims[d], left)
        left //= f[d]
    return {d: v for d, v in f.items() if v > 1}


def spatial_options(layer: Layer, cfg: AccelConfig) -> list[tuple[dict[str, int], dict[str, int]]]:
    """(PE-row, PE-column) factors: the dataflow's dimensions of each axis folded greedily, in the
    dataflow's order and in each of its rotations (every dimension first once); distinct ones only."""
    dims = layer.dims
    axes = []
    for order, size in zip(SPATIAL[cfg.dataflow], (cfg.pe_rows, cfg.pe_cols)):
        variants: list[dict[str, int]] = []
        for i in range(len(order)):
            f = _fold(dims, order[i:] + order[:i], size)
            if f not in variants:
                variants.append(f)
        axes.append(variants)
    return [(r, c) for r in axes[0] for c in axes[1]]


def _tile_choices(extent: int, base: int) -> list[int]:
    """GLB tile sizes of one dimension: multiples of ``base`` (the array tile) giving distinct step counts."""
    by_steps: dict[int, int] = {}
    m = 1
    while True:
        steps = -(-extent // min(extent, base * m))
        per_step = -(-extent // steps)
        tile = min(extent, base * -(-per_step // base))  # the smallest multiple of base taking that many steps
        by_steps.setdefault(steps, tile)
        if tile >= extent:
            break
        m *= 2
    choices = sorted(by_steps.values())
    if len(choices) > MAX_TILE_CHOICES:  # keep both ends, thin the middle evenly
        idx = sorted({round(i * (len(choices) - 1) / (MAX_TILE_CHOICES - 1)) for i in range(MAX_TILE_CHOICES)})
        choices = [choices[i] for i in idx]
    return choices


def _thin(choices: dict[str, list[int]], budget: int) -> dict[str, list[int]]:
    """Drop middle choices of the longest lists until the product is within ``budget``."""
    choices = {d: list(v) for d, v in choices.items()}
    while math.prod(len(v) for v in choices.values()) > budget:
        d = max(choices, key=lambda k: len(choices[k]))
        v = choices[d]
        if len(v) <= 2:
            break
        del v[len(v) // 2]
    return choices


def _rf_choices(layer: Layer, cfg: AccelConfig) -> list[dict[str, int]]:
    """Register-file tiles of the dataflow that fit the RF (row-stationary: K x C filter rows of S)."""
    if cfg.dataflow != "row_stationary":
        return [{}]
    out = []
    db, pb, wb = cfg.data_bytes, cfg.psum_bytes, cfg.weight_bytes
    for s in sorted({layer.s, 1}, reverse=True):
        for p in (1, 2, 4, 8, 16):
            for q in (1, 2, 4, 8, 16):
                if p > layer.k or q > layer.c:
                    continue
                need = p * q * s * wb + q * s * db + p * pb
                if need <= cfg.rf_bytes:
                    out.append({"S": s, "K": p, "C": q})
        if out:
            break
    return out or [{}]


def _transfers(layer: Layer, op: str, loops: list[tuple[str, int]], tile: tuple[int, ...]) -> tuple[float, int]:
    """(elements moved into a tile of ``op`` over the loops above it, how many times the tile changes).

    ``loops``: the temporal loops above the tile, outermost first, those of extent 1 left out.
    """
    fp = layer.footprint(op, tile)
    relevant = RELEVANT[op]
    idx = None
    for i in range(len(loops) - 1, -1, -1):
        if loops[i][0] in relevant:
            idx = i
            break
    if idx is None:
        return float(fp), 1
    outer = 1
    for _, e in loops[:idx]:
        outer *= e
    d, e = loops[idx]
    if op == "I" and d in ("P", "Q"):  # sliding window: the next tile along P or Q shares the overlap
        return float(outer * (fp + (e - 1) * layer.step(tile, d))), outer * e
    return float(outer * e * fp), outer * e


def _energy_per_word(cfg: AccelConfig, level: str, bits: int, capacity: int | None = None) -> float:
    ref = ENERGY["mac_pj"][16] * ENERGY["ratio"][level] * bits / ENERGY["reference_bits"]
    if level == "rf":
        ref *= math.sqrt(cfg.rf_bytes / ENERGY["rf_reference_bytes"])
    elif level == "glb":
        ref *= math.sqrt(max(capacity or cfg.glb_bytes, 1) / ENERGY["glb_reference_bytes"])
    return ref


@functools.lru_cache(maxsize=256)
def _word_energies(cfg: AccelConfig):
    """pJ per word of each level for ``cfg``: dram[bits], glb[operand][bits], noc[bits], rf[bits]."""
    widths = tuple(sorted({cfg.data_bits, cfg.weight_word_bits, cfg.psum_bytes * 8}))
    capacity = cfg.glb_capacity()
    caps = {op: capacity for op in "WIO"} if isinstance(capacity, int) else capacity
    return ({b: _energy_per_word(cfg, "dram", b) for b in widths},
            {op: {b: _energy_per_word(cfg, "glb", b, caps[op]) for b in widths} for op in "WIO"},
            {b: _energy_per_word(cfg, "noc", b) for b in widths},
            {b: _energy_per_word(cfg, "rf", b) for b in widths})


def _overflow(layer: Layer, cfg: AccelConfig, mapping: Mapping) -> float:
    """Largest use / capacity of the global buffer (or a part of it) and the register file under ``mapping``."""
    sp, rf, glb = (mapping.factors(lv) for lv in ("spatial", "rf", "glb"))
    t_pe = layer.clip(rf)
    t_glb = layer.clip({d: rf[d] * sp[d] * glb[d] for d in DIMS})
    db, pb, wb = cfg.data_bytes, cfg.psum_bytes, cfg.weight_bytes
    use = {"W": layer.footprint("W", t_glb) * wb, "I": layer.footprint("I", t_glb) * db,
           "O": layer.footprint("O", t_glb) * pb}
    capacity = cfg.glb_capacity()
    if isinstance(capacity, int):
        over = sum(use.values()) / capacity
    else:
        over = max(use[op] / max(capacity[op], 1) for op in "WIO")
    rf_use = layer.footprint("W", t_pe) * wb + layer.footprint("I", t_pe) * db + layer.footprint("O", t_pe) * pb
    return max(over, rf_use / cfg.rf_bytes)


def evaluate_mapping(layer: Layer, cfg: AccelConfig, mapping: Mapping) -> LayerCost:
    """Cycles, accesses, energy and buffer use of one call of ``layer`` on ``cfg`` under ``mapping``."""
    sp, rf, glb, dram = (mapping.factors(lv) for lv in ("spatial", "rf", "glb", "dram"))
    t_pe = layer.clip(rf)
    t_arr = layer.clip({d: rf[d] * sp[d] for d in DIMS})
    t_glb = layer.clip({d: rf[d] * sp[d] * glb[d] for d in DIMS})
    dram_loops = [(d, dram[d]) for d in mapping.dram_order if dram[d] > 1]
    glb_loops = dram_loops + [(d, glb[d]) for d in GLB_ORDER[cfg.dataflow] if glb[d] > 1]
    db, pb, wb = cfg.data_bytes, cfg.psum_bytes, cfg.weight_bytes
    pes_used = math.prod(sp.values())

    # DRAM <-> GLB
    d_w, _ = _transfers(layer, "W", dram_loops, t_glb)
    d_i, _ = _transfers(layer, "I", dram_loops, t_glb)
    d_o_w, _ = _transfers(layer, "O", dram_loops, t_glb)
    o_final = layer.footprint("O", layer.extents)
    d_o_r = d_o_w - o_final
    # GLB <-> array (multicast and spatial reduction: footprints over the array tile)
    a_w, _ = _transfers(layer, "W", glb_loops, t_arr)
    a_i, _ = _transfers(layer, "I", glb_loops, t_arr)
    a_o_w, _ = _transfers(layer, "O", glb_loops, t_arr)
    a_o_r = max(0.0, a_o_w - d_o_w)
    # array network: every PE's own tile
    n_w, _ = _transfers(layer, "W", glb_loops, t_pe)
    n_i, _ = _transfers(layer, "I", glb_loops, t_pe)
    n_o, _ = _transfers(layer, "O", glb_loops, t_pe)
    _, passes = _transfers(layer, STATIONARY[cfg.dataflow], glb_loops, t_pe)
    macs = layer.macs

    temporal = math.prod(dram.values()) * math.prod(glb.values()) * math.prod(rf.values())
    rows_used = math.prod(f for _, f in mapping.rows)
    cols_used = math.prod(f for _, f in mapping.cols)
    fill_drain = passes * (rows_used + cols_used)
    dram_bytes = d_w * wb + (d_i + layer.extra) * db + o_final * db + (d_o_w - o_final + d_o_r) * pb
    memory = dram_bytes / cfg.bytes_per_cycle
    n_dram = math.prod(dram.values())
    compute = temporal + fill_drain
    cycles = max(compute, memory) + memory / n_dram

    glb_use = {"W": layer.footprint("W", t_glb) * wb, "I": layer.footprint("I", t_glb) * db,
               "O": layer.footprint("O", t_glb) * pb}
    rf_use = layer.footprint("W", t_pe) * wb + layer.footprint("I", t_pe) * db + layer.footprint("O", t_pe) * pb
    overflow = _overflow(layer, cfg, mapping)

    bits, pbits, wbits = cfg.data_bits, pb * 8, cfg.weight_word_bits
    e_dram, e_glb, e_noc, e_rf = _word_energies(cfg)
    energy = {
        "dram": d_w * e_dram[wbits] + (d_i + layer.extra + o_final) * e_dram[bits]
        + (d_o_w - o_final + d_o_r) * e_dram[pbits],
        "glb": (d_w + a_w) * e_glb["W"][wbits] + (d_i + layer.extra + a_i) * e_glb["I"][bits]
        + (a_o_w + a_o_r + d_o_r) * e_glb["O"][pbits] + d_o_w * e_glb["O"][pbits],
        "noc": n_w * pes_used * e_noc[wbits] + n_i * pes_used * e_noc[bits] + n_o * pes_used * e_noc[pbits],
        # per MAC: a weight read, an input read, a partial sum read and written (the 4 accesses before)
        "rf": macs * (e_rf[wbits] + 3 * e_rf[bits]),
        "mac": macs * ENERGY["mac_pj"][bits],
    }
    accesses = {
        "dram": d_w + d_i + layer.extra + d_o_w + d_o_r,
        "glb": d_w + a_w + d_i + layer.extra + a_i + a_o_w + a_o_r + d_o_r + d_o_w,
        "noc": (n_w + n_i + n_o) * pes_used,
        "rf": 4.0 * macs,
        "mac": float(macs),
    }
    return LayerCost(
        mapping=mapping, cycles=cycles, compute_cycles=temporal, memory_cycles=memory, fill_drain_cycles=fill_drain,
        utilization=macs / (temporal * cfg.pes), accesses=accesses, dram_bytes=dram_bytes, energy_pj=energy,
        buffer_bytes={"glb": sum(glb_use.values()), **{f"glb_{op}": v for op, v in glb_use.items()}, "rf": rf_use},
        overflow=overflow,
    )


def candidate_mappings(layer: Layer, cfg: AccelConfig) -> list[Mapping]:
    """The bounded mapping space of ``layer`` on ``cfg`` (at most :data:`MAX_MAPPINGS` mappings)."""
    dims = layer.dims
    rf_list = _rf_choices(layer, cfg)
    spatials = spatial_options(layer, cfg)
    orders = []
    for order in DRAM_ORDERS:
        flat = ("G", "N") + tuple(d for part in order for d in (("P", "Q") if part == "PQ" else (part,)))
        orders.append(flat)
    # at least 4 tilings per (spatial, register-file) pair: thin the register-file tiles evenly if needed
    most_rf = max(1, MAX_MAPPINGS // (len(spatials) * len(orders) * 4))
    if len(rf_list) > most_rf:
        rf_list = [rf_list[round(i * (len(rf_list) - 1) / max(most_rf - 1, 1))] for i in range(most_rf)]
    out = []
    per_rf = max(1, MAX_MAPPINGS // (len(spatials) * len(rf_list) * len(orders)))
    for (rows, cols), rf in itertools.product(spatials, rf_list):
        sp = {d: rows.get(d, 1) * cols.get(d, 1) for d in DIMS}
        base = {d: sp[d] * rf.get(d, 1) for d in DIMS}
        choices = _thin({d: _tile_choices(dims[d], min(base[d], dims[d])) for d in TILED}, per_rf)
        for tiles in itertools.product(*(choices[d] for d in TILED)):
            t_glb = dict(zip(TILED, tiles))
            t_glb.update({d: dims[d] for d in DIMS if d not in TILED and d != "N"})
            t_glb["N"] = 1
            glb = {d: max(1, -(-t_glb[d] // base[d])) for d in DIMS}
            dram = {d: -(-dims[d] // (base[d] * glb[d])) for d in DIMS}
            seen = set()
            for flat in orders:
                effective = tuple(d for d in flat if dram[d] > 1)
                if effective in seen:  # orders that differ only in loops of one step are the same mapping
                    continue
                seen.add(effective)
                out.append(Mapping(
                    rows=tuple(rows.items()), cols=tuple(cols.items()),
                    rf=tuple((d, f) for d, f in rf.items() if f > 1),
                    glb=tuple((d, f) for d, f in glb.items() if f > 1),
                    dram=tuple((d, f) for d, f in dram.items() if f > 1),
                    dram_order=flat,
                ))
    return out[:MAX_MAPPINGS]  # the thinning above keeps within the bound; this makes it a guarantee


def search_mapping(layer: Layer, cfg: AccelConfig) -> LayerCost:
    """The best mapping of ``layer`` on ``cfg``: least energy x delay among those that fit the buffers.

    When none fits (a buffer too small for even the smallest tile), the one
    that overflows least is returned; its ``overflow`` > 1 says so. The
    search runs on the layer without its epilogue operands (they add the same
    traffic to every mapping) and is cached, so a conv shape recurring with
    another bias or residual, or in another candidate, is searched once.
    """
    best = _search(dataclasses.replace(layer, extra=0), cfg)
    return best if layer.extra == 0 else evaluate_mapping(layer, cfg, best.mapping)


@functools.lru_cache(maxsize=8192)
def _search(layer: Layer, cfg: AccelConfig) -> LayerCost:
    best, best_key = None, None
    least, least_over = None, math.inf
    for m in candidate_mappings(layer, cfg):
        over = _overflow(layer, cfg, m)
        if over > 1:  # does not fit: priced only if nothing fits
            if over < least_over:
                least, least_over = m, over
            continue
        cost = evaluate_mapping(layer, cfg, m)
        key = cost.energy_total_pj * cost.cycles
        if best_key is None or key < best_key:
            best, best_key = cost, key
    return best if best is not None else evaluate_mapping(layer, cfg, least)


# --------------------------------------------------------------------------------------------- other kernels


@dataclasses.dataclass(frozen=True)
class VectorCost:
    """A pooling, reduction or elementwise kernel run on the PE array as a vector unit (one op per PE per cycle)."""

    cycles: float
    dram_bytes: float
    energy_pj: dict[str, float]


def vector_kernel_cost(in_elems: int, out_elems: int, ops: int, cfg: AccelConfig) -> VectorCost:
    """Cost of a kernel that streams ``in_elems`` from DRAM and writes ``out_elems`` back with ``ops`` ALU ops."""
    words = in_elems + out_elems
    dram_bytes = words * cfg.data_bytes
    memory = dram_bytes / cfg.bytes_per_cycle
    compute = -(-ops // cfg.pes)
    bits = cfg.data_bits
    energy = {
        "dram": words * _energy_per_word(cfg, "dram", bits),
        "glb": 2 * words * _energy_per_word(cfg, "glb", bits),
        "noc": words * _energy_per_word(cfg, "noc", bits),
        "rf": 0.0,
        "mac": ops * ENERGY["mac_pj"][bits],  # an ALU op priced as a MAC (an upper bound)
    }
    return VectorCost(cycles=max(compute, memory), dram_bytes=dram_bytes, energy_pj=energy)


# --------------------------------------------------------------------------------------------- area and FPGA


def area_mm2(cfg: AccelConfig) -> dict[str, float]:
    """Area of ``cfg`` at 45 nm by part (mm^2): MACs, register files, global buffer."""
    um2 = {
        "mac": cfg.pes * AREA["mac_um2"][cfg.data_bits],
        "rf": cfg.pes * cfg.rf_bytes * AREA["rf_um2_per_byte"],
        "glb": cfg.glb_bytes * AREA["sram_um2_per_byte"],
    }
    return {k: v / 1e6 for k, v in um2.items()}


def fpga_resources(cfg: AccelConfig) -> dict[str, int]:
    """DSP48E2, BRAM36 and LUTs ``cfg`` needs on an UltraScale+ FPGA."""
    dsp = -(-cfg.pes // FPGA["macs_per_dsp"][cfg.data_bits])
    capacity = cfg.glb_capacity()
    parts = [capacity] if isinstance(capacity, int) else list(capacity.values())
    # each buffer needs its bytes and enough ports to feed the array a word per row and per column each cycle
    words_per_cycle = (cfg.pe_rows + cfg.pe_cols) / len(parts)
    bram = 0
    for size in parts:
        by_size = -(-size // FPGA["bram_bytes"])
        by_ports = -(-int(words_per_cycle * cfg.data_bits) // FPGA["bram_port_bits"])
        bram += max(by_size, by_ports)
    if cfg.rf_bytes <= FPGA["ff_rf_max_bytes"]:
        rf_luts = 0  # flip-flops
    else:
        rf_luts = -(-cfg.rf_bytes * 8 // FPGA["lutram_bits_per_lut"])
    lut = cfg.pes * (FPGA["lut_per_pe"] + rf_luts) + FPGA["lut_fixed"]
    return {"dsp": dsp, "bram36": bram, "lut": lut}


def fpga_use(cfg: AccelConfig, board: Board) -> dict[str, float]:
    """Share of the board's DSPs, BRAM36 and LUTs ``cfg`` uses (> 1: does not fit)."""
    r = fpga_resources(cfg)
    return {"dsp": r["dsp"] / board.dsp, "bram36": r["bram36"] / board.bram36, "lut": r["lut"] / board.lut}
