"""GpuTileConv2d: thread-block tiling, shared-memory staging and unrolling of the 2D convolutions for CUDA.

Run after legalization and fusion, under a CUDA ``tvm.target.Target``. Every
PrimFunc whose main block is ``conv2d_nchw``, ``group_conv2d_nchw`` or
``depthwise_conv2d_nchw`` (iterators ``n, oc, oh, ow | rc, kh, kw``) gets an
explicit schedule in the style of TVM's direct CUDA convolution template:

1. ``oc`` is split ``[blocks, threads_oc, tile_oc]``, ``oh`` ``[blocks,
   threads_oh]`` and ``ow`` ``[blocks, threads_ow, tile_ow]``; the block
   pieces (with ``n``) are fused and bound to ``blockIdx.x``, the thread
   pieces to ``threadIdx.x`` (``ow`` fastest, so neighbouring threads touch
   neighbouring output columns: coalesced stores). A thread computes a
   ``tile_oc x tile_ow`` register tile. A thread count larger than its axis
   is clamped to the axis (no idle threads by construction), and a per-thread
   tile to what the axis leaves.
2. The reduction over input channels is split by ``tile_rc``; with
   ``shared == "both"`` the input window and the weights a thread block needs
   for one ``tile_rc`` step are staged in shared memory (``cache_read`` to
   ``"shared"`` at the outer reduction loop), fetched cooperatively by all
   threads of the block; ``vector_load`` lanes per thread and fetch
   (``float2``/``float4`` loads) when the fetch is long enough and its source
   rows are whole multiples of the lanes (else scalar loads: a vector load
   from an unaligned address faults on a GPU). The padding stage is inlined
   into the fetch.
3. The accumulators live in registers (``"local"``); the elementwise epilogue
   fused by FuseOps (bias, ReLU, residual add) is inlined and computed per
   thread under its tile.
4. ``unroll`` becomes ``pragma_auto_unroll_max_step`` on the block loop.

Functions are marked ``tirx.is_scheduled`` so that dlight
(:class:`~hwnas.targets.gpu.default_schedule.GpuDefaultSchedule`) leaves them
alone. A function this rule does not match is left for dlight; one whose
scheduling raises is left for dlight too, and recorded by the shared driver
(:func:`hwnas.ir.schedule.schedule_prim_funcs`) for the evaluation to report.

This module also holds :class:`GpuScheduleConfig` and the helpers
:mod:`gpu_tile_dense` shares.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tvm
from tvm import s_tir

from hwnas.errors import InvalidConfigError
from hwnas.ir.schedule import (
    annotate_unroll,
    config_fields,
    has_one_loop_per_iter,
    is_plain_copy,
    iter_kinds,
    loop_extents,
    root_blocks,
    schedule_prim_funcs,
)

log = logging.getLogger(__name__)

#: conv blocks (after TVM's legalization) this pass schedules
GPU_CONV_BLOCKS = ("conv2d_nchw", "group_conv2d_nchw", "depthwise_conv2d_nchw")

#: values of the ``shared`` knob: stage both operands in shared memory, or read them from global memory
SHARED_MODES = ("both", "none")

@dataclass(frozen=True)
class GpuScheduleConfig:
    """The GPU hardware configuration as the schedule passes read it.

    Attributes
    ----------
    threads_oc, threads_oh, threads_ow:
        Threads of a block along output channels, output rows and output
        columns (conv). A dense/matmul uses ``threads_oc * threads_ow``
        threads along its output features and ``threads_oh`` along its rows.
        Their product is the requested threads per block.
    tile_oc, tile_ow:
        Register tile of one thread: output channels x output columns (conv);
        output features (dense, ``tile_oc``).
    tile_rc:
        Input channels (conv) or reduction elements (dense) per step of the
        reduction: the unit staged in shared memory.
    shared:
        ``"both"``: stage input and weights in shared memory per ``tile_rc``
        step; ``"none"``: every thread reads global memory (through the caches).
    vector_load:
        Lanes of the cooperative shared-memory fetch (1, 2 or 4).
    unroll:
        ``pragma_auto_unroll_max_step`` of the scheduled kernels (0: none).
    """

    threads_oc: int = 8
    threads_oh: int = 4
    threads_ow: int = 8
    tile_oc: int = 2
    tile_ow: int = 2
    tile_rc: int = 8
    shared: str = "both"
    vector_load: int = 1
    unroll: int = 64

    def __post_init__(self) -> None:
        for name in ("threads_oc", "threads_oh", "threads_ow", "tile_oc", "tile_ow", "tile_rc", "vector_load"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfigError(f"{name} must be an int >= 1, got {value!r}")
        if self.shared not in SHARED_MODES:
            raise InvalidConfigError(f"shared must be one of {SHARED_MODES}, got {self.shared!r}")
        if isinstance(self.unroll, bool) or not isinstance(self.unroll, int) or self.unroll < 0:
            raise InvalidConfigError(f"unroll must be an int >= 0, got {self.unroll!r}")

    @property
    def threads(self) -> int:
        """Threads per block the config asks for (before clamping to a small layer)."""
        return self.threads_oc * self.threads_oh * self.threads_ow

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> GpuScheduleConfig:
        """Read the knobs this module knows from a hardware-config dict (others are ignored)."""
        if isinstance(config, GpuScheduleConfig):
            return config
        return cls(**config_fields(config, cls, what="a GPU hardware config"))


# ---------------------------------------------------------------------------
# Helpers shared with gpu_tile_dense
# ---------------------------------------------------------------------------


def split_threads(extent: int, threads: int, tile: int = 1) -> tuple[int, int]:
    """(threads, per-thread tile) for an axis of ``extent``: the thread count clamped to the axis,
    the tile to what the threads leave, so that no whole thread or tile step is idle."""
    t = max(1, min(int(threads), int(extent)))
    i = max(1, min(int(tile), math.ceil(extent / t)))
    return t, i


def cooperative_fetch(
    sch: s_tir.Schedule, cache: s_tir.SBlockRV, outer: int, threads: int, lanes: int, *, plain_source: bool
) -> int:
    """Spread the copy loops of a shared-memory ``cache`` block over the ``threads`` of the block.

    The loops below the first ``outer`` ones (those of the compute-at point)
    are fused and split ``[steps, threads, lanes]``; the thread piece is bound
    to ``threadIdx.x`` (the same threads as the compute loop) and the lane
    piece vectorized. A vector load from an unaligned address faults on a
    GPU, so lanes are used only where alignment is certain: the source is a
    plain buffer (``plain_source``: not a padding expression), the fetch
    copies whole rows of it, and its rows are a multiple of the lanes.
    Returns the lanes used (1: scalar loads).
    """
    loops = sch.get_loops(cache)
    inner = loops[outer:]
    extents = loop_extents(sch, inner)
    source = sch.get(cache).reads[0].source  # the buffer the cache copies from
    row = int(source.shape[-1])
    fused = sch.fuse(*inner) if len(inner) > 1 else inner[0]
    total = math.prod(extents)
    aligned = plain_source and extents and extents[-1] == row and row % lanes == 0
    if lanes > 1 and aligned and total % lanes == 0:
        _, t, v = sch.split(fused, [None, threads, lanes])
        sch.vectorize(v)
    else:
        lanes = 1
        _, t = sch.split(fused, [None, threads])
    sch.bind(t, "threadIdx.x")
    return lanes


def place_gpu_epilogue(sch: s_tir.Schedule, main: s_tir.SBlockRV, epilogue, thread_loop: s_tir.LoopRV) -> None:
    """Accumulate ``main`` in registers; inline the elementwise ``epilogue`` and run it per thread."""
    for blk in epilogue:
        if set(iter_kinds(sch, blk)) - {"S"}:
            raise ValueError(f"epilogue block {sch.get(blk).name_hint} is not elementwise")
    if epilogue:
        for blk in epilogue[:-1]:
            sch.compute_inline(blk)
        sch.reverse_compute_at(epilogue[-1], thread_loop, preserve_unit_loops=True)
        sch.set_scope(main, 0, "local")
    else:
        write = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(write, thread_loop, preserve_unit_loops=True)


# ---------------------------------------------------------------------------
# The conv rule
# ---------------------------------------------------------------------------


def schedule_gpu_conv2d(sch: s_tir.Schedule, cfg: GpuScheduleConfig) -> bool:
    """Schedule the conv function in ``sch`` for CUDA; False if it is not one."""
    blocks = root_blocks(sch)
    names = [sch.get(b).name_hint for b in blocks]
    found = [i for i, n in enumerate(names) if n in GPU_CONV_BLOCKS and iter_kinds(sch, blocks[i]) == "SSSSRRR"]
    if len(found) != 1:
        return False
    index = found[0]
    conv = blocks[index]
    pads = blocks[:index]
    if len(pads) > 1 or not has_one_loop_per_iter(sch, conv):
        return False
    if pads and iter_kinds(sch, pads[0]) != "SSSS":
        return False
    epilogue = blocks[index + 1:]

    n, k, p, q, rc, r, s = sch.get_loops(conv)
    ek, ep, eq, erc = loop_extents(sch, [k, p, q, rc])
    tk, ik = split_threads(ek, cfg.threads_oc, cfg.tile_oc)
    tp, _ = split_threads(ep, cfg.threads_oh)
    tq, iq = split_threads(eq, cfg.threads_ow, cfg.tile_ow)
    threads = tk * tp * tq
    kb, kt, ki = sch.split(k, [None, tk, ik])
    pb, pt = sch.split(p, [None, tp])
    qb, qt, qi = sch.split(q, [None, tq, iq])
    rco, rci = sch.split(rc, [None, min(cfg.tile_rc, erc)])
    sch.reorder(n, kb, pb, qb, kt, pt, qt, rco, rci, r, s, ki, qi)
    bx = sch.fuse(n, kb, pb, qb)
    tx = sch.fuse(kt, pt, qt)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    place_gpu_epilogue(sch, conv, epilogue, tx)
    if cfg.shared == "both":
        for operand in (0, 1):
            cache = sch.cache_read(conv, operand, "shared")
            sch.compute_at(cache, rco, preserve_unit_loops=True)
            plain = operand == 1 or not pads or is_plain_copy(sch, pads[0])
            cooperative_fetch(sch, cache, 3, threads, cfg.vector_load, plain_source=plain)
    if pads:
        sch.compute_inline(pads[0])
    sch.decompose_reduction(conv, rco)
    annotate_unroll(sch, bx, cfg.unroll)
    return True


@tvm.transform.module_pass(opt_level=0, name="GpuTileConv2d")
class GpuTileConv2d:
    """Schedule every 2D-convolution PrimFunc of a fused module for CUDA with one GPU config.

    Parameters
    ----------
    config:
        The GPU hardware config (a dict with the keys of :class:`GpuScheduleConfig`).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = GpuScheduleConfig.from_mapping(config)

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Return a copy of ``mod`` with its conv PrimFuncs scheduled."""
        return schedule_prim_funcs(mod, "GpuTileConv2d", lambda sch: schedule_gpu_conv2d(sch, self.config), log,
                                   mark_tir_scheduled=True)
