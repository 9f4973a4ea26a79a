"""GpuTileDense: thread-block tiling and shared-memory staging of the dense / matmul PrimFuncs for CUDA.

Run after fusion under a CUDA target, like
:class:`~hwnas.targets.gpu.tile_conv2d.GpuTileConv2d`. A function is matched
by its main block: one of :data:`~hwnas.targets.cpu.tile_dense.DENSE_BLOCKS`
with iterators ``batch..., m, n | k``.

The schedule, with the GPU hardware config's knobs (see
:class:`~hwnas.targets.gpu.tile_conv2d.GpuScheduleConfig`):

* ``n`` (output features) is split ``[blocks, threads_oc * threads_ow,
  tile_oc]`` and ``m`` (rows) ``[blocks, threads_oh]``; the batch loops and
  block pieces are bound to ``blockIdx.x``, the thread pieces to
  ``threadIdx.x`` (``n`` fastest: coalesced weight reads and output stores);
* ``k`` is split by ``tile_rc``; with ``shared == "both"`` both operands'
  ``tile_rc`` slices are staged in shared memory, fetched cooperatively
  (``vector_load`` lanes where aligned);
* accumulators in registers, the epilogue inlined per thread, ``unroll`` as
  ``pragma_auto_unroll_max_step``.

A batch-1 dense has ``m = 1``: its parallelism is the ``n`` axis only, which
is why a classifier head is a small, latency-bound kernel on a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import tvm
from tvm import s_tir

from hwnas.targets.gpu.tile_conv2d import (
    GpuScheduleConfig,
    cooperative_fetch,
    place_gpu_epilogue,
    split_threads,
)
from hwnas.ir.schedule import annotate_unroll, has_one_loop_per_iter, iter_kinds, loop_extents, root_blocks, schedule_prim_funcs
from hwnas.ir.schedule import DENSE_BLOCKS

log = logging.getLogger(__name__)


def schedule_gpu_dense(sch: s_tir.Schedule, cfg: GpuScheduleConfig) -> bool:
    """Schedule the dense function in ``sch`` for CUDA; False if it is not one."""
    blocks = root_blocks(sch)
    found = []
    for i, blk in enumerate(blocks):
        kinds = iter_kinds(sch, blk)
        if sch.get(blk).name_hint in DENSE_BLOCKS and len(kinds) >= 3 and kinds == "S" * (len(kinds) - 1) + "R":
            found.append(i)
    if len(found) != 1 or found[0] != 0:
        return False
    dense = blocks[0]
    if not has_one_loop_per_iter(sch, dense):
        return False
    epilogue = blocks[1:]
    *batch, m, n, k = sch.get_loops(dense)
    em, en, ek = loop_extents(sch, [m, n, k])
    tm, _ = split_threads(em, cfg.threads_oh)
    tn, inn = split_threads(en, cfg.threads_oc * cfg.threads_ow, cfg.tile_oc)
    threads = tm * tn
    mb, mt = sch.split(m, [None, tm])
    nb, nt, ni = sch.split(n, [None, tn, inn])
    ko, ki = sch.split(k, [None, min(cfg.tile_rc, ek)])
    sch.reorder(*batch, mb, nb, mt, nt, ko, ki, ni)
    bx = sch.fuse(*batch, mb, nb)
    tx = sch.fuse(mt, nt)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    place_gpu_epilogue(sch, dense, epilogue, tx)
    if cfg.shared == "both":
        for operand in (0, 1):
            cache = sch.cache_read(dense, operand, "shared")
            sch.compute_at(cache, ko, preserve_unit_loops=True)
            cooperative_fetch(sch, cache, 3, threads, cfg.vector_load, plain_source=True)
    sch.decompose_reduction(dense, ko)
    annotate_unroll(sch, bx, cfg.unroll)
    return True


@tvm.transform.module_pass(opt_level=0, name="GpuTileDense")
class GpuTileDense:
    """Schedule every dense/matmul PrimFunc of a fused module for CUDA with one GPU config."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = GpuScheduleConfig.from_mapping(config)

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Return a copy of ``mod`` with its dense PrimFuncs scheduled."""
        return schedule_prim_funcs(mod, "GpuTileDense", lambda sch: schedule_gpu_dense(sch, self.config), log,
                                   mark_tir_scheduled=True)
