"""TileConv2d: register-tile, parallelize, vectorize and unroll the 2D convolutions of a fused module.

Run after legalization and fusion (``hwnas.ir.lower.fuse``): every
PrimFunc whose main block is a 2D convolution gets an explicit
``tvm.s_tir.Schedule``. The matched blocks are the ones TVM's legalization
(TOPI) writes and the one :mod:`hwnas.targets.cpu.convert_layout_nchwc` writes:

* ``conv2d_nchw`` (regular and pointwise 1x1), ``group_conv2d_nchw`` (grouped
  and depthwise; TOPI names depthwise convolutions this way too),
  ``depthwise_conv2d_nchw``: iterators ``n, oc, oh, ow | rc, kh, kw``;
* ``conv2d_NCHWc`` (packed): ``n, oc_block, oh, ow, oc_lane | rc_block, kh, kw, rc_lane``;
* ``depthwise_conv2d_NCHWc`` (packed depthwise): ``n, c_block, oh, ow, c_lane | kh, kw``
  (no channel reduction: ``tile_rc`` does not apply, the lane is the vector axis);
* ``conv2d_NCHW_NCHWc`` (unpacked input, packed output): ``n, oc_block, oh, ow, oc_lane | rc, kh, kw``.

The schedule, with the knobs of the CPU hardware config (see
:class:`CpuScheduleConfig` for each knob's effect):

1. The padding stage (``pad_temp`` / ``data_pad``) stays a separate loop nest,
   parallel over its outer loops and vectorized along its innermost one, so
   the inner loops of the convolution read a padded buffer without bounds
   checks; a padding stage that pads nothing (1x1) is a copy and is inlined,
   and so is the padding of a packed depthwise conv (little reuse per element).
2. ``oc``, ``oh``, ``ow`` and ``rc`` are split by ``tile_oc``, ``tile_oh``,
   ``tile_ow``, ``tile_rc``; the loops are reordered as ``loop_order`` says
   (outer tile loops, then the reduction ``rc.o, kh, kw, rc.i``, then the
   register tile ``oh.i, oc.i, ow.i`` with the vector axis innermost).
3. The outer tile loops named by ``parallel`` are fused (with the batch loop)
   into one parallel loop. With more than one thread, a conv whose input is
   at least its weights is split by output rows instead: ``oh.o`` becomes one
   band per thread, outermost and parallel, with the knob's order inside each
   band (:func:`row_parts`), so consecutive kernels split alike and each
   thread reads the rows it wrote.
4. The elementwise epilogue fused by FuseOps (bias add, ReLU/ReLU6, residual
   add, ...) is inlined into its last block, which is moved under the tile
   with ``reverse_compute_at``: the convolution result of a tile is consumed
   while it is in registers / L1, and lowering shrinks the intermediate
   buffer to one tile. A conv with no epilogue gets one (``cache_write``),
   so its tile also accumulates in a tile-sized buffer, not in the output.
5. The innermost loop is vectorized: ``ow.i`` in NCHW (contiguous in the
   output and in the input rows), the channel lane in NCHWc (contiguous in the
   output and the packed weights).
6. ``decompose_reduction`` moves the zero-initialization out of the reduction
   (after vectorizing and placing the epilogue, or it fails with "does not
   have compact dataflow").
7. ``unroll`` becomes ``pragma_auto_unroll_max_step`` on the outermost loop.

Each function is scheduled on its own; a function the rule does not match is
left alone, and one whose scheduling raises is left unscheduled and logged at
debug level: one odd function never fails the module. Scheduled functions get
the attribute ``hwnas.scheduled`` (the pass name), which later schedule passes
respect.

This module also holds the small helpers :mod:`tile_dense` and
:mod:`schedule_injective` share (config parsing, tile choice, vectorize).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tvm
from tvm import s_tir

from hwnas.errors import InvalidConfigError
from hwnas.ir.schedule import (
    annotate_unroll,
    config_fields,
    divisor_tile,
    has_one_loop_per_iter,
    is_plain_copy,
    iter_kinds,
    loop_extents,
    root_blocks,
    schedule_prim_funcs,
    vectorize_inner,
)
from hwnas.targets.cpu.winograd import schedule_winograd

log = logging.getLogger(__name__)

#: Loop orders of the outer tile loops (values of the ``loop_order`` knob).
#:
#: * ``"oc_outer"``: ``oc.o, oh.o, ow.o`` then the reduction ``rc.o, kh, kw, rc.i``:
#:   one block of weights is reused across all spatial tiles of a thread.
#: * ``"spatial_outer"``: ``oh.o, ow.o, oc.o`` then the reduction: one input window is
#:   reused across all output-channel tiles.
#: * ``"rc_outer"``: ``oc.o, oh.o, rc.o, ow.o`` then ``kh, kw, rc.i``: a block of
#:   input channels is streamed over a whole row of output tiles (partial sums of the
#:   row stay in cache; the epilogue runs once the row is complete).
LOOP_ORDERS: tuple[str, ...] = ("oc_outer", "spatial_outer", "rc_outer")

#: Which outer tile loops are fused into the parallel loop (values of ``parallel``),
#: counted from the outermost in the chosen ``loop_order`` (the batch loop is always
#: included): ``"none"`` (no parallel loop), ``"outer"`` (the first tile loop),
#: ``"outer2"`` (the first two), ``"all"`` (every spatial tile loop above the reduction).
PARALLEL_AXES: tuple[str, ...] = ("none", "outer", "outer2", "all")


#: The conv blocks this pass schedules, by name, with their iterator kinds.
CONV_BLOCKS: dict[str, str] = {
    "conv2d_nchw": "SSSSRRR",
    "group_conv2d_nchw": "SSSSRRR",
    "depthwise_conv2d_nchw": "SSSSRRR",
    "conv2d_NCHWc": "SSSSSRRRR",
    "depthwise_conv2d_NCHWc": "SSSSSRR",
    "conv2d_NCHW_NCHWc": "SSSSSRRR",
}

#: Element count below which ScheduleInjective (and the padding stage) stays serial:
#: waking the thread pool costs more than such a loop.
MIN_PARALLEL_ELEMENTS = 4096


#: How packed 3x3 stride-1 convs are computed (:mod:`hwnas.targets.cpu.winograd`).
CONV_ALGOS = ("direct", "winograd")


@dataclass(frozen=True)
class CpuScheduleConfig:
    """The CPU hardware configuration as the schedule passes read it.

    Attributes
    ----------
    layout:
        ``"NCHW"`` or ``"NCHWc"``. Applied by :class:`ConvertLayoutNCHWc` before
        fusion; the schedule passes recognize either form by its blocks.
    pack:
        Largest channel block of NCHWc (a tensor whose channels it does not
        divide takes ``pack/2`` or ``pack/4``). In a packed conv the vector axis
        is the channel lane (extent: the output tensor's block) and
        ``tile_oc``/``tile_rc`` count channels, so a tile covers
        ``max(1, tile_oc // block)`` channel blocks.
    tile_oc:
        Output channels per register tile (conv); output features per tile (dense).
    tile_oh:
        Output rows per register tile (conv); rows of the left operand (dense).
    tile_ow:
        Output columns per register tile (conv). In NCHW it is the vectorized
        axis, so ``tile_oc * tile_ow / vector_width`` vector accumulators are live.
    tile_rc:
        Input channels per step of the inner reduction (conv, between the
        ``rc.o, kh, kw`` loops and the register tile); reduction elements per
        step (dense).
    loop_order:
        One of :data:`LOOP_ORDERS`.
    parallel:
        One of :data:`PARALLEL_AXES`.
    vector_width:
        Lanes of the innermost vectorized loop; 1 disables vectorization. A
        tile that is not a multiple of it is vectorized with the largest lane
        count that divides it.
    unroll:
        ``pragma_auto_unroll_max_step`` on the outermost loop of a scheduled
        kernel (with ``pragma_unroll_explicit``): loop nests of at most this
        many steps are unrolled in TIR; 0 unrolls nothing.
    conv_algo:
        ``"winograd"``: packed float32 3x3 convs with stride 1 and padding 1
        are computed by Winograd F(2x2, 3x3) (:mod:`hwnas.targets.cpu.winograd`,
        NCHWc only); ``"direct"``: every conv by its direct loops.
    num_threads:
        Threads the target runs with. Only :class:`ScheduleInjective` reads it
        (parallel glue loops only when it is above 1); the runtime's thread
        count itself is the target's business.

    Tiles larger than a loop are clamped to it, and a tile that does not
    divide its loop is replaced by the largest divisor of the loop below it
    (:func:`divisor_tile`): no predicate or tail loop is left in the kernel.
    """

    layout: str = "NCHW"
    pack: int = 8
    tile_oc: int = 8
    tile_oh: int = 1
    tile_ow: int = 8
    tile_rc: int = 4
    loop_order: str = "oc_outer"
    parallel: str = "outer2"
    vector_width: int = 8
    unroll: int = 64
    num_threads: int = 1
    conv_algo: str = "direct"

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "NCHWc"):
            raise InvalidConfigError(f"layout must be 'NCHW' or 'NCHWc', got {self.layout!r}")
        if self.loop_order not in LOOP_ORDERS:
            raise InvalidConfigError(f"loop_order must be one of {LOOP_ORDERS}, got {self.loop_order!r}")
        if self.conv_algo not in CONV_ALGOS:
            raise InvalidConfigError(f"conv_algo must be one of {CONV_ALGOS}, got {self.conv_algo!r}")
        if self.parallel not in PARALLEL_AXES:
            raise InvalidConfigError(f"parallel must be one of {PARALLEL_AXES}, got {self.parallel!r}")
        for name in ("pack", "tile_oc", "tile_oh", "tile_ow", "tile_rc", "vector_width", "num_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfigError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(self.unroll, bool) or not isinstance(self.unroll, int) or self.unroll < 0:
            raise InvalidConfigError(f"unroll must be an int >= 0, got {self.unroll!r}")

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> CpuScheduleConfig:
        """Read the knobs this module knows from a hardware-config dict (others are ignored)."""
        if isinstance(config, CpuScheduleConfig):
            return config
        return cls(**config_fields(config, cls, what="a CPU hardware config"))


# ---------------------------------------------------------------------------
# Helpers shared by the CPU schedule passes
# ---------------------------------------------------------------------------


def schedule_spatial_block(
    sch: s_tir.Schedule, block: s_tir.SBlockRV, *, parallel: bool, vector_width: int
) -> None:
    """Parallel-outer, vectorized-inner schedule of an unscheduled block.

    For an elementwise block the innermost loop is vectorized (see
    :func:`vectorize_inner`) and the loops above it are fused into one loop;
    for a block with a reduction, the spatial loops above the first reduction
    loop are fused. The fused loop is made parallel when ``parallel`` and the
    block writes at least :data:`MIN_PARALLEL_ELEMENTS` elements. The
    innermost loop is never fused into the parallel loop, so its index stays
    free of division and modulo.
    """
    kinds = iter_kinds(sch, block)
    if "O" in kinds or not has_one_loop_per_iter(sch, block):
        return
    loops = list(sch.get_loops(block))
    extents = loop_extents(sch, loops)
    n_spatial = kinds.index("R") if "R" in kinds else len(kinds)
    elements = 1
    for extent in extents[:n_spatial]:
        elements *= extent
    outer = loops[:n_spatial]
    if n_spatial == len(kinds) and n_spatial > 0:
        vectorize_inner(sch, loops[-1], vector_width)
        outer = loops[:-1]
    if not parallel or not outer or elements < MIN_PARALLEL_ELEMENTS:
        return
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if int(sch.get(fused).extent) > 1:
        sch.parallel(fused)


def place_epilogue(
    sch: s_tir.Schedule,
    epilogue: Sequence[s_tir.SBlockRV],
    tile_loop: s_tir.LoopRV,
    vector_width: int,
) -> None:
    """Inline the elementwise epilogue into its last block and compute that under ``tile_loop``."""
    if not epilogue:
        return
    for blk in epilogue:
        if "R" in iter_kinds(sch, blk) or "O" in iter_kinds(sch, blk):
            raise ValueError(f"epilogue block {sch.get(blk).name_hint} is not elementwise")
    for blk in epilogue[:-1]:
        sch.compute_inline(blk)
    last = epilogue[-1]
    sch.reverse_compute_at(last, tile_loop, preserve_unit_loops=True)
    vectorize_inner(sch, sch.get_loops(last)[-1], vector_width)


def row_parts(sch: s_tir.Schedule, block: s_tir.SBlockRV, by_name: Mapping[str, s_tir.LoopRV], order: Sequence[str],
              kinds: Mapping[str, str], cfg: CpuScheduleConfig) -> int:
    """Parts (one per thread) to split a conv's output-row tile loop into, or 0 to keep the knob's parallel loop.

    Each thread then computes a band of rows, all output channels, with the knob's loop order inside the
    band, so it reads the input rows that the previous kernel's same thread wrote (kernels split alike):
    activations stay in that core's caches. Split by output channels instead, each thread reads every
    input row, half of them written by the other core. Each thread then reads every weight, so only when
    the conv's input is at least its weights, and when the rows divide evenly among the threads. On a VM
    whose two vCPUs sit on different CCXs (no shared L3) MobileNetV2 measured 0.86x ONNX Runtime with the
    knob's split against 0.82x this way (see also :func:`~hwnas.targets.cpu.winograd.split_by_tiles`)."""
    threads = cfg.num_threads
    if threads < 2 or cfg.parallel == "none" or "oh.o" not in by_name:
        return 0
    written = [w.source for w in sch.get(block).writes]
    reads = [r.source for r in sch.get(block).reads if not any(r.source.same_as(w) for w in written)]
    if len(reads) != 2:  # (data, weight), in the order of the conv's product
        return 0
    data, weight = (math.prod(int(d) for d in b.shape) for b in reads)
    if data < weight:
        return 0
    first_red = next(i for i, name in enumerate(order) if kinds[name.split(".")[0]] == "R")
    if "oh.o" not in order[:first_red]:
        return 0
    rows = int(sch.get(by_name["oh.o"]).extent)
    return threads if rows % threads == 0 else 0


def tile_reduction(
    sch: s_tir.Schedule,
    block: s_tir.SBlockRV,
    roles: Sequence[str],
    tiles: Mapping[str, int],
    order: Sequence[str],
    vector_role: str,
    cfg: CpuScheduleConfig,
    epilogue: Sequence[s_tir.SBlockRV],
) -> None:
    """Tile, reorder, parallelize, vectorize and unroll a reduction block and its epilogue.

    ``roles`` names the block's loops in their current order; each role in
    ``tiles`` is split into ``role.o`` and ``role.i`` (factor
    :func:`divisor_tile`), and ``order`` lists the final loop order by those
    names (untiled roles by their own name). ``vector_role`` is the innermost
    piece to vectorize. Roles named ``batch...`` always join the parallel loop.
    """
    loops = sch.get_loops(block)
    if len(loops) != len(roles):
        raise ValueError("loop nest does not match the block's roles")
    if not epilogue:
        # No epilogue: accumulate a tile in a scratch buffer and copy it out under the tile,
        # so the accumulators are not loads and stores of the output in the inner loop.
        epilogue = [sch.cache_write(block, 0, "global")]
    extents = dict(zip(roles, loop_extents(sch, loops)))
    kinds = dict(zip(roles, iter_kinds(sch, block)))
    by_name: dict[str, s_tir.LoopRV] = {}
    for role, loop in zip(roles, loops):
        if role in tiles:
            factor = divisor_tile(extents[role], tiles[role])
            outer, inner = sch.split(loop, [None, factor])
            by_name[role + ".o"], by_name[role + ".i"] = outer, inner
        else:
            by_name[role] = loop
    if sorted(order) != sorted(by_name):
        raise ValueError(f"loop order {list(order)} does not name the loops {sorted(by_name)}")

    def kind(name: str) -> str:
        return kinds[name.split(".")[0]]

    order = list(order)
    rows = row_parts(sch, block, by_name, order, kinds, cfg)
    if rows:  # the rows split in one part per thread, outermost: the tuned order runs inside each part
        by_name["oh.p"], by_name["oh.q"] = sch.split(by_name["oh.o"], [rows, None])
        del by_name["oh.o"]
        order[order.index("oh.o")] = "oh.q"
        order.insert(order.index("batch") + 1 if "batch" in order else 0, "oh.p")
    ordered = [by_name[name] for name in order]
    sch.reorder(*ordered)

    first_red = next(i for i, name in enumerate(order) if kind(name) == "R")
    outer_names = list(order[:first_red])

    # The parallel loop: the batch loop plus the leading tile loops the knob names (the row parts alone
    # when the rows are split per thread).
    count = 1 if rows else {"none": 0, "outer": 1, "outer2": 2, "all": len(outer_names)}[cfg.parallel]
    lead = [n for n in outer_names if n.startswith("batch")]
    rest = [n for n in outer_names if n not in lead]
    to_fuse = lead + rest[:count] if count > 0 else []
    if to_fuse and outer_names[: len(to_fuse)] != to_fuse:
        raise ValueError("the parallel loops are not the outermost loops")
    if to_fuse:
        fused = sch.fuse(*[by_name[n] for n in to_fuse]) if len(to_fuse) > 1 else by_name[to_fuse[0]]
        if int(sch.get(fused).extent) > 1:
            sch.parallel(fused)
        outermost = fused
        tile_loop = fused if len(to_fuse) == len(outer_names) else by_name[outer_names[-1]]
    else:
        outermost = by_name[order[0]]
        tile_loop = by_name[outer_names[-1]] if outer_names else None

    if tile_loop is None:
        raise ValueError("no spatial loop above the reduction")
    if order[-1] != vector_role or kind(vector_role) != "S":
        raise ValueError("the vector axis must be the innermost spatial loop")
    vectorize_inner(sch, by_name[vector_role], cfg.vector_width)
    place_epilogue(sch, epilogue, tile_loop, cfg.vector_width)
    sch.decompose_reduction(block, by_name[order[first_red]])
    annotate_unroll(sch, outermost, cfg.unroll)


# ---------------------------------------------------------------------------
# The conv rule
# ---------------------------------------------------------------------------


def _conv_order(loop_order: str, packed: bool, depthwise: bool = False, packed_input: bool = True) -> list[str]:
    """The loop order of a conv block by role pieces (see :data:`LOOP_ORDERS`)."""
    inner = ["oh.i", "oc.i", "ow.i"] + (["ocp"] if packed else [])
    if depthwise:  # packed depthwise: no channel reduction, so rc_outer is oc_outer
        outer = ["oh.o", "ow.o", "oc.o"] if loop_order == "spatial_outer" else ["oc.o", "oh.o", "ow.o"]
        return ["batch", *outer, "kh", "kw", *inner]
    red_inner = ["kh", "kw", "rc.i"] + (["rcp"] if packed and packed_input else [])
    if loop_order == "oc_outer":
        return ["batch", "oc.o", "oh.o", "ow.o", "rc.o", *red_inner, *inner]
    if loop_order == "spatial_outer":
        return ["batch", "oh.o", "ow.o", "oc.o", "rc.o", *red_inner, *inner]
    if loop_order == "rc_outer":
        return ["batch", "oc.o", "oh.o", "rc.o", "ow.o", *red_inner, *inner]
    raise InvalidConfigError(f"loop_order must be one of {LOOP_ORDERS}, got {loop_order!r}")


def schedule_conv2d(sch: s_tir.Schedule, cfg: CpuScheduleConfig) -> bool:
    """Schedule the conv function in ``sch`` (see the module docstring); False if it is not one."""
    blocks = root_blocks(sch)
    convs = [
        i for i, b in enumerate(blocks)
        if CONV_BLOCKS.get(sch.get(b).name_hint) == iter_kinds(sch, b)
    ]
    if len(convs) != 1:
        return False
    index = convs[0]
    conv = blocks[index]
    if not has_one_loop_per_iter(sch, conv):
        return False
    name = sch.get(conv).name_hint
    packed = name in ("conv2d_NCHWc", "depthwise_conv2d_NCHWc", "conv2d_NCHW_NCHWc")
    depthwise = name == "depthwise_conv2d_NCHWc"
    packed_input = name != "conv2d_NCHW_NCHWc"

    for producer in blocks[:index]:
        if iter_kinds(sch, producer).strip("S"):
            raise ValueError(f"producer {sch.get(producer).name_hint} is not a spatial stage")
        if is_plain_copy(sch, producer) or depthwise:
            # a packed depthwise conv reads each padded element KH*KW times at most: the bounds checks in
            # its loads cost less than writing and re-reading a padded copy (3-6x faster here)
            sch.compute_inline(producer)
        else:
            schedule_spatial_block(
                sch, producer, parallel=cfg.parallel != "none", vector_width=cfg.vector_width
            )

    # channel tiles count channels: in a packed conv they cover tile // lanes blocks, with the block sizes
    # the tensors really have (a tensor whose channels pack does not divide has a smaller block)
    extents = loop_extents(sch, sch.get_loops(conv))
    if depthwise:
        roles = ["batch", "oc", "oh", "ow", "ocp", "kh", "kw"]
        tiles = {"oc": max(1, cfg.tile_oc // extents[4]), "oh": cfg.tile_oh, "ow": cfg.tile_ow}
        vector_role = "ocp"
    elif not packed_input:
        roles = ["batch", "oc", "oh", "ow", "ocp", "rc", "kh", "kw"]
        tiles = {"oc": max(1, cfg.tile_oc // extents[4]), "oh": cfg.tile_oh, "ow": cfg.tile_ow, "rc": cfg.tile_rc}
        vector_role = "ocp"
    elif packed:
        roles = ["batch", "oc", "oh", "ow", "ocp", "rc", "kh", "kw", "rcp"]
        tiles = {
            "oc": max(1, cfg.tile_oc // extents[4]),
            "oh": cfg.tile_oh,
            "ow": cfg.tile_ow,
            "rc": max(1, cfg.tile_rc // extents[8]),
        }
        vector_role = "ocp"
    else:
        roles = ["batch", "oc", "oh", "ow", "rc", "kh", "kw"]
        tiles = {"oc": cfg.tile_oc, "oh": cfg.tile_oh, "ow": cfg.tile_ow, "rc": cfg.tile_rc}
        vector_role = "ow.i"
    order = _conv_order(cfg.loop_order, packed, depthwise, packed_input)
    tile_reduction(sch, conv, roles, tiles, order, vector_role, cfg, blocks[index + 1 :])
    return True


@tvm.transform.module_pass(opt_level=0, name="TileConv2d")
class TileConv2d:
    """Schedule every 2D convolution PrimFunc of a fused module with one CPU config.

    Parameters
    ----------
    config:
        The CPU hardware config (a dict with the keys of
        :class:`CpuScheduleConfig`; see it for each knob's effect).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = CpuScheduleConfig.from_mapping(config)

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Return a copy of ``mod`` with its conv PrimFuncs scheduled."""

        cfg = self.config
        return schedule_prim_funcs(mod, "TileConv2d",
                                   lambda sch: schedule_winograd(sch, cfg.vector_width) or schedule_conv2d(sch, cfg))
