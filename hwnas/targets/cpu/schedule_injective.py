"""ScheduleInjective: a simple parallel + vectorized schedule for the glue PrimFuncs.

Run after :class:`~hwnas.targets.cpu.tile_conv2d.TileConv2d` and
:class:`~hwnas.targets.cpu.tile_dense.TileDense`. Every PrimFunc they did not
schedule (elementwise ops, layout transforms, pooling, reductions such as the
global mean, concatenation, and any conv or dense whose tiling failed) gets:

1. its intermediate elementwise blocks inlined into their consumers where
   TVM allows it (a block that cannot be inlined is kept);
2. per remaining block: the innermost loop vectorized with up to
   ``vector_width`` lanes when the block is elementwise; the spatial loops
   above the first reduction loop fused into one loop, made parallel when
   ``num_threads > 1`` and the block writes at least
   :data:`~hwnas.targets.cpu.tile_conv2d.MIN_PARALLEL_ELEMENTS` elements;
3. a reduction whose innermost spatial iterator is a channel block of the
   packed layout (max- and average-pool, the global mean of
   squeeze-and-excitation and of the head, in NCHW{c}c) instead gets its
   reduction loops moved above that iterator, which is then vectorized
   (:func:`vectorize_channel_block`): each window is reduced a vector of
   channels at a time instead of one channel (max-pool 3x3/2 on 64x111x111
   NCHW16c: 1.26 to 0.13 ms alone, 2 threads).

With ``num_threads == 1`` and ``vector_width == 1`` the pass changes nothing.
A function whose loops are not the plain one-loop-per-iterator nest of
legalization is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError
from tvm.tirx import IndexMap

from hwnas.ir.schedule import has_one_loop_per_iter, iter_kinds, loop_extents, root_blocks, schedule_prim_funcs
from hwnas.targets.cpu.tile_conv2d import MIN_PARALLEL_ELEMENTS, CpuScheduleConfig, schedule_spatial_block

log = logging.getLogger(__name__)


def iterate_in_output_order(sch: s_tir.Schedule, block: s_tir.SBlockRV) -> None:
    """Make an elementwise block that writes in a permuted/packed order iterate over its output.

    A layout transform legalizes to a block over the *source* shape whose
    store is scattered (``out[c // 8, h, w, c % 8] = in[c, h, w]``); vectorizing
    its innermost loop would scatter the stores. Remapping the block's
    iteration space by its store indices (``transform_block_layout``) makes the
    innermost loop run along the output, so stores are contiguous and the
    strided side is the loads. Blocks that already write in order, or that
    TVM cannot remap, are left as they are.
    """
    stmt = sch.get(block)
    store = stmt.body
    if iter_kinds(sch, block).strip("S") or not isinstance(store, tirx.BufferStore):
        return
    ivars = [iv.var for iv in stmt.iter_vars]
    indices = list(store.indices)
    if len(indices) == len(ivars) and all(i.same_as(v) for i, v in zip(indices, ivars)):
        return
    try:
        sch.transform_block_layout(block, IndexMap(ivars, indices, None))
    except ScheduleError as exc:
        log.debug("kept the iteration order of %s: %s", stmt.name_hint, exc)


def schedule_injective(sch: s_tir.Schedule, cfg: CpuScheduleConfig) -> bool:
    """Schedule the glue function in ``sch``; False if there is nothing to do."""
    blocks = root_blocks(sch)
    if not blocks or not all(has_one_loop_per_iter(sch, b) for b in blocks):
        return False
    kept = []
    for blk in blocks[:-1]:
        if iter_kinds(sch, blk).strip("S"):
            kept.append(blk)
            continue
        try:
            sch.compute_inline(blk)
        except ScheduleError:  # e.g. the block writes an output of the function
            kept.append(blk)
    kept.append(blocks[-1])
    for blk in kept:
        iterate_in_output_order(sch, blk)
        if not vectorize_channel_block(sch, blk, parallel=cfg.num_threads > 1, vector_width=cfg.vector_width):
            schedule_spatial_block(sch, blk, parallel=cfg.num_threads > 1, vector_width=cfg.vector_width)
    return True


#: innermost spatial extents taken for a packed channel block (NCHW{c}c: the packs of the CPU's HSS and halves)
CHANNEL_BLOCKS = (4, 8, 16, 32)


def vectorize_channel_block(sch: s_tir.Schedule, block: s_tir.SBlockRV, *, parallel: bool,
                            vector_width: int) -> bool:
    """Schedule a reduction over windows of a packed tensor a vector of channels at a time; False if not one.

    The block must be spatial iterators then reduction iterators (``S..SR..R``,
    one loop each) with its innermost spatial extent in :data:`CHANNEL_BLOCKS`.
    Its reduction loops move above that loop, the init is split off
    (``decompose_reduction``) and both get the channel loop vectorized
    (``vector_width`` lanes at a time); the spatial loops above are fused and
    made parallel as :func:`schedule_spatial_block` does.
    """
    kinds = iter_kinds(sch, block)
    n_spatial = len(kinds) - len(kinds.lstrip("S"))
    if vector_width <= 1 or n_spatial < 2 or kinds[n_spatial:].strip("R") or n_spatial == len(kinds):
        return False
    if not has_one_loop_per_iter(sch, block):
        return False
    loops = list(sch.get_loops(block))
    extents = loop_extents(sch, loops)
    lanes = extents[n_spatial - 1]
    if lanes not in CHANNEL_BLOCKS:
        return False
    elements = 1
    for extent in extents[:n_spatial]:
        elements *= extent
    outer = loops[: n_spatial - 1]
    if parallel and elements >= MIN_PARALLEL_ELEMENTS:
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        if int(sch.get(fused).extent) > 1:
            sch.parallel(fused)
    # the reductions above the channel loop, which is vectorized; then the init split off (TVM's order:
    # vectorize before decompose_reduction) and its own channel loop vectorized
    channel = loops[n_spatial - 1]
    sch.reorder(*loops[n_spatial:], channel)
    if lanes > vector_width:
        channel = sch.split(channel, [None, vector_width])[-1]
    sch.vectorize(channel)
    init = sch.decompose_reduction(block, loops[n_spatial])
    sch.vectorize(sch.get_loops(init)[-1])
    return True


@tvm.transform.module_pass(opt_level=0, name="ScheduleInjective")
class ScheduleInjective:
    """Parallel-outer / vectorized-inner schedule for every PrimFunc not scheduled yet.

    Parameters
    ----------
    config:
        The CPU hardware config; this pass reads ``num_threads`` (parallel
        loops only above 1) and ``vector_width`` (lanes; 1 = none).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = CpuScheduleConfig.from_mapping(config)

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Return a copy of ``mod`` with its remaining PrimFuncs scheduled (or ``mod`` if nothing to do)."""
        if self.config.num_threads <= 1 and self.config.vector_width <= 1:
            return mod
        return schedule_prim_funcs(
            mod, "ScheduleInjective", lambda sch: schedule_injective(sch, self.config), log
        )
