"""ScheduleMcu: schedule the fused PrimFuncs of a quantized module for a microcontroller's SRAM.

Run after fusion. TVM's fused functions keep every intermediate stage as a
buffer of the full output size (the padded input, the int32 accumulator, each
requantization step): on a device with 256 KB of SRAM that is the peak. The
schedule, per function:

* every elementwise stage before the reduction (casts, zero padding when
  ``pad == "inline"``) is inlined into its consumer, so the reduction reads
  the kernel's input directly and the padding becomes a bounds test;
  ``pad == "buffer"`` keeps a padded copy, computed per tile (faster inner
  loop, more SRAM, and recomputed per tile for a non-depthwise conv);
* the elementwise stages after the reduction (bias, requantization, clip,
  cast, residual add) are inlined into the last one;
* the reduction's first non-unit spatial loop (output channels of a conv or a
  dense layer, channels of a pooling sum) is split by ``tile``, a conv's output
  rows by ``tile_rows``, and the epilogue is computed under the innermost outer
  tile loop: the int32 accumulator is ``tile`` channels x ``tile_rows`` rows
  instead of the whole output (0: no split). A depthwise conv that may run in
  place (``inplace_dw``) is not split over rows.

A function that does not match (no reduction, several) keeps only the inlining
that applies. The computation is unchanged; only where its intermediates live.
A depthwise conv scheduled like this reads input channel ``c`` before it writes
output channel ``c`` (and never again after), so the memory planner may let
its output overwrite its input (the ``inplace_dw`` knob of the MCU target).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import tvm
from tvm import s_tir

from hwnas.errors import InvalidConfigError
from hwnas.ir.schedule import iter_kinds, loop_extents, root_blocks, schedule_prim_funcs

log = logging.getLogger(__name__)

PAD_MODES: tuple[str, ...] = ("inline", "buffer")


@dataclasses.dataclass(frozen=True)
class McuScheduleConfig:
    """``tile``: channels per accumulator tile (0: all); ``tile_rows``: output rows per tile (0: all);
    ``pad``: ``inline`` or ``buffer``; ``inplace_dw``: depthwise convs may run in place, so they are
    not tiled over rows."""

    tile: int = 8
    tile_rows: int = 0
    pad: str = "inline"
    inplace_dw: bool = True

    def __post_init__(self) -> None:
        for name in ("tile", "tile_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.pad not in PAD_MODES:
            raise InvalidConfigError(f"pad must be one of {', '.join(PAD_MODES)}, got {self.pad!r}")

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> McuScheduleConfig:
        return cls(tile=int(config.get("tile", 8)), tile_rows=int(config.get("tile_rows", 0)),
                   pad=str(config.get("pad", "inline")), inplace_dw=config.get("inplace_dw", "on") in ("on", True))


def _is_pad(sch: s_tir.Schedule, block) -> bool:
    return "pad" in sch.get(block).name_hint.lower()


def schedule_mcu(sch: s_tir.Schedule, cfg: McuScheduleConfig) -> bool:
    """Inline, tile and place the epilogue of the function in ``sch`` (see the module doc)."""
    sch.work_on("main")
    blocks = root_blocks(sch)
    reductions = [b for b in blocks if "R" in iter_kinds(sch, b)]
    if len(reductions) > 1:
        return False
    red = reductions[0] if reductions else None
    names = [sch.get(b).name_hint for b in blocks]
    red_at = names.index(sch.get(red).name_hint) if red is not None else len(blocks)
    if red is None:  # elementwise only: inline all but the last stage
        for name in names[:-1]:
            try:
                sch.compute_inline(sch.get_sblock(name))
            except Exception:  # noqa: BLE001  (a stage that cannot be inlined stays)
                pass
        return True
    # stages before the reduction: inline into their consumers (keep a buffered pad if asked)
    kept_pad = None
    for name in names[:red_at]:
        blk = sch.get_sblock(name)
        if cfg.pad == "buffer" and _is_pad(sch, blk):
            kept_pad = blk
            continue
        sch.compute_inline(blk)
    after = names[red_at + 1:]
    for name in after[:-1]:
        sch.compute_inline(sch.get_sblock(name))
    red = sch.get_sblock(names[red_at])
    loops = sch.get_loops(red)
    kinds = iter_kinds(sch, red)
    spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
    extents = loop_extents(sch, spatial)
    axes = [i for i, e in enumerate(extents) if e > 1]
    grouped = any(word in names[red_at] for word in ("depthwise", "group"))
    tile_loop = None
    ch_outer = row_outer = None
    if axes and 0 < cfg.tile < extents[axes[0]]:
        ch_outer, _ = sch.split(spatial[axes[0]], factors=[None, cfg.tile])
    # rows: the second non-unit spatial loop of a conv (N K P Q); a grouped conv keeps whole
    # channels when it may run in place (a later row tile would read rows already overwritten)
    if (len(axes) >= 3 and 0 < cfg.tile_rows < extents[axes[1]]
            and not (grouped and cfg.inplace_dw)):
        row_outer, _ = sch.split(spatial[axes[1]], factors=[None, cfg.tile_rows])
    if row_outer is not None:
        first = ch_outer if ch_outer is not None else spatial[axes[0]]
        sch.reorder(row_outer, first) if ch_outer is None else sch.reorder(ch_outer, row_outer)
        tile_loop = row_outer
    elif ch_outer is not None:
        tile_loop = ch_outer
    if after and tile_loop is not None:
        sch.reverse_compute_at(sch.get_sblock(after[-1]), tile_loop, preserve_unit_loops=True)
    if kept_pad is not None and tile_loop is not None:
        sch.compute_at(kept_pad, tile_loop, preserve_unit_loops=True)
    return True


@tvm.transform.module_pass(opt_level=0, name="ScheduleMcu")
class ScheduleMcu:
    """Apply :func:`schedule_mcu` to every unscheduled PrimFunc of the module."""

    def __init__(self, config: Mapping[str, Any] | McuScheduleConfig) -> None:
        self.config = config if isinstance(config, McuScheduleConfig) else McuScheduleConfig.from_mapping(config)

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return schedule_prim_funcs(mod, "ScheduleMcu", lambda sch: schedule_mcu(sch, self.config), log)
