"""TileDense: tile, parallelize, vectorize and unroll the dense / matmul PrimFuncs of a fused module.

Run after fusion, like :class:`~hwnas.targets.cpu.tile_conv2d.TileConv2d`. A
function is matched by its main block: one of :data:`DENSE_BLOCKS` (the names
TVM's legalization gives ``relax.matmul`` / ``relax.nn.linear`` — an ONNX
``Gemm``/``MatMul`` imports as ``matmul`` with the weight transposed into a
constant) with iterators ``batch..., m, n | k`` (any number of batch
dimensions, one reduction).

The schedule, with the CPU hardware config's knobs:

* ``n`` (output features) is split by ``tile_oc``, ``m`` (rows) by
  ``tile_oh``, ``k`` by ``tile_rc``;
* ``loop_order``: ``"oc_outer"`` orders the outer tiles ``n.o, m.o``,
  ``"spatial_outer"`` ``m.o, n.o``, ``"rc_outer"`` ``m.o, k.o, n.o`` (a block
  of ``k`` streamed over a whole row of output tiles); the reduction
  ``k.o, k.i`` follows, then the register tile ``m.i, n.i``;
* ``parallel``: the batch loops and the leading outer tile loops are fused
  into one parallel loop (see :data:`~hwnas.targets.cpu.tile_conv2d.PARALLEL_AXES`);
* ``vector_width``: ``n.i`` is vectorized (contiguous in the output and in a
  ``[k, n]`` weight);
* the bias/activation epilogue is inlined into its last block and computed
  under the tile (``reverse_compute_at``); the reduction is decomposed;
* ``unroll``: ``pragma_auto_unroll_max_step`` on the outermost loop (so
  ``tile_rc`` is also the unit the unroller sees).

Non-matching functions are left alone; a function whose scheduling raises is
left unscheduled and logged at debug level.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import tvm
from tvm import s_tir

from hwnas.errors import InvalidConfigError
from hwnas.ir.schedule import DENSE_BLOCKS, has_one_loop_per_iter, iter_kinds, root_blocks, schedule_prim_funcs
from hwnas.targets.cpu.tile_conv2d import CpuScheduleConfig, LOOP_ORDERS, tile_reduction

log = logging.getLogger(__name__)


def _dense_order(loop_order: str, n_batch: int) -> list[str]:
    """The loop order of a dense block by role pieces."""
    batch = [f"batch{i}" for i in range(n_batch)]
    inner = ["k.o", "k.i", "m.i", "n.i"]
    if loop_order == "oc_outer":
        return [*batch, "n.o", "m.o", *inner]
    if loop_order == "spatial_outer":
        return [*batch, "m.o", "n.o", *inner]
    if loop_order == "rc_outer":
        return [*batch, "m.o", "k.o", "n.o", "k.i", "m.i", "n.i"]
    raise InvalidConfigError(f"loop_order must be one of {LOOP_ORDERS}, got {loop_order!r}")


def schedule_dense(sch: s_tir.Schedule, cfg: CpuScheduleConfig) -> bool:
    """Schedule the dense function in ``sch``; False if it is not one."""
    blocks = root_blocks(sch)
    found = []
    for i, blk in enumerate(blocks):
        kinds = iter_kinds(sch, blk)
        one_reduction = len(kinds) >= 3 and kinds == "S" * (len(kinds) - 1) + "R"
        if sch.get(blk).name_hint in DENSE_BLOCKS and one_reduction:
            found.append(i)
    if len(found) != 1:
        return False
    index = found[0]
    dense = blocks[index]
    if index != 0 or not has_one_loop_per_iter(sch, dense):
        return False
    n_batch = len(iter_kinds(sch, dense)) - 3
    roles = [f"batch{i}" for i in range(n_batch)] + ["m", "n", "k"]
    tiles = {"m": cfg.tile_oh, "n": cfg.tile_oc, "k": cfg.tile_rc}
    order = _dense_order(cfg.loop_order, n_batch)
    tile_reduction(sch, dense, roles, tiles, order, "n.i", cfg, blocks[index + 1 :])
    return True


@tvm.transform.module_pass(opt_level=0, name="TileDense")
class TileDense:
    """Schedule every dense/matmul PrimFunc of a fused module with one CPU config.

    Parameters
    ----------
    config:
        The CPU hardware config (a dict with the keys of
        :class:`~hwnas.targets.cpu.tile_conv2d.CpuScheduleConfig`; see the module
        docstring for the knobs this pass reads).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = CpuScheduleConfig.from_mapping(config)

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Return a copy of ``mod`` with its dense PrimFuncs scheduled."""
        return schedule_prim_funcs(mod, "TileDense", lambda sch: schedule_dense(sch, self.config), log)
