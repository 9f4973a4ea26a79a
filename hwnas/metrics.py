"""The metric vocabulary shared by every target, the CLI, the store and reports."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from hwnas.errors import InvalidConfigError


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    name: str
    unit: str
    meaning: str
    #: True when larger is better (accuracy); costs are minimised
    maximize: bool = False


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("accuracy", "%", "top-1 from the chosen accuracy evaluator", maximize=True),
        MetricInfo("latency_ms", "ms", "one inference, batch 1 (median of repeats when measured)"),
        MetricInfo("latency_std_ms", "ms", "spread: standard deviation of the measured repeats, or of a predictor ensemble"),
        MetricInfo("energy_mj", "mJ", "one inference"),
        MetricInfo("peak_memory_kb", "KiB", "peak activation + workspace memory"),
        MetricInfo("flash_kb", "KiB", "weights + code stored on the device"),
        MetricInfo("params_kb", "KiB", "weight bytes as compiled (4- and 2-bit weights packed, 6-bit ones a "
                   "byte each)"),
        MetricInfo("params_packed_kb", "KiB", "weight bytes if packed at their bit-widths: a model (the artifact "
                   "stores 6-bit weights one per byte)"),
        MetricInfo("area_mm2", "mm^2", "accelerator area"),
        MetricInfo("resource_use", "ratio", "share of the target's hardware budget used (area, or FPGA DSP/BRAM/LUT, "
                   "the largest; or a buffer overflowed by a layer's smallest tile); > 1 is over budget"),
        MetricInfo("macs", "count", "multiply-accumulates of one inference"),
    )
}

#: accepted spellings that mean another metric
ALIASES = {"peak_sram_kb": "peak_memory_kb", "latency": "latency_ms", "energy": "energy_mj",
           "memory": "peak_memory_kb", "flash": "flash_kb", "area": "area_mm2", "params": "params_kb"}


def canonical(name: str) -> str:
    """The canonical metric name of ``name`` (aliases resolved); raises for an unknown one."""
    key = ALIASES.get(name, name)
    if key not in METRICS:
        raise InvalidConfigError(
            f"unknown metric {name!r}; known: {', '.join(METRICS)} (aliases: {', '.join(ALIASES)})"
        )
    return key


def check_values(values: Mapping[str, float]) -> dict[str, float]:
    """Metrics as plain floats, names checked, NaN and infinities refused."""
    out: dict[str, float] = {}
    for k, v in values.items():
        key = canonical(k)
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"metric {key} is not finite: {v!r}")
        out[key] = f
    return out


def overflows(metrics: Mapping[str, float], capacity: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The metrics over the device's ``capacity`` (see ``Target.capacity``): metric -> {value, limit}."""
    return {k: {"value": float(metrics[k]), "limit": float(limit)}
            for k, limit in capacity.items() if k in metrics and metrics[k] > limit}
