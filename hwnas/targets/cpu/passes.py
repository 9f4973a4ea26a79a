"""TVM passes that apply one hardware configuration to an IRModule.

CPU passes, in the order a CPU target runs them:

* before legalization and fusion (:func:`cpu_graph_passes`), only for
  ``layout == "NCHWc"``: :class:`~hwnas.passes.fold_batch_norm.FoldBatchNorm`
  (batch norms into the convs before them, or else a scale and shift), then
  :class:`ConvertLayoutNCHWc`, then
  ``FoldConstant`` (packs the weights into constants) and
  ``EliminateCommonSubexpr`` (one layout transform per value); for every
  layout, :class:`FastSigmoid` last (sigmoid and SiLU by a vectorizable exp);
* after fusion (:func:`cpu_schedule_passes`): :class:`TileConv2d`,
  :class:`TileDense`, :class:`ScheduleInjective`.

``LOOP_ORDERS`` and ``PARALLEL_AXES`` are the choices of the ``loop_order``
and ``parallel`` knobs, for the target to declare in its hardware space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tvm

from hwnas.passes.fold_batch_norm import FoldBatchNorm
from hwnas.targets.cpu.convert_layout_nchwc import ConvertLayoutNCHWc
from hwnas.targets.cpu.fast_math import FastSigmoid
from hwnas.targets.cpu.schedule_injective import ScheduleInjective
from hwnas.targets.cpu.tile_conv2d import LOOP_ORDERS, PARALLEL_AXES, CpuScheduleConfig, TileConv2d
from hwnas.targets.cpu.tile_dense import TileDense

__all__ = [
    "LOOP_ORDERS",
    "PARALLEL_AXES",
    "ConvertLayoutNCHWc",
    "CpuScheduleConfig",
    "FastSigmoid",
    "ScheduleInjective",
    "TileConv2d",
    "TileDense",
    "cpu_graph_passes",
    "cpu_schedule_passes",
]


def cpu_graph_passes(config: Mapping[str, Any]) -> list[tvm.transform.Pass]:
    """The Relax passes to run before legalization/fusion for a CPU config."""
    from tvm import relax

    cfg = CpuScheduleConfig.from_mapping(config)
    if cfg.layout != "NCHWc":
        return [FastSigmoid()]
    return [
        # an inference batch norm becomes the conv's weights and bias, or else a per-channel scale and shift
        # (DenseNet's pre-activation ones, after a concatenation), which the packed layout passes through:
        # relax.nn.batch_norm has no packed layout, so each went back to NCHW and forth around it
        FoldBatchNorm(scale_shift=True),
        ConvertLayoutNCHWc(cfg.pack, winograd=cfg.conv_algo == "winograd"),
        relax.transform.FoldConstant(),
        relax.transform.EliminateCommonSubexpr(),
        FastSigmoid(),
    ]


def cpu_schedule_passes(config: Mapping[str, Any]) -> list[tvm.transform.Pass]:
    """The schedule passes to run on the fused module for a CPU config, in order."""
    cfg = CpuScheduleConfig.from_mapping(config)
    return [TileConv2d(cfg), TileDense(cfg), ScheduleInjective(cfg)]
