"""ScheduleMcu: the same integers from every schedule, less workspace from smaller tiles."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from hwnas.errors import InvalidConfigError
from hwnas.passes.quantize import QuantizeModule, calibration_batch, quantization_info, quantize_input
from hwnas.targets.mcu.schedule_mcu import McuScheduleConfig, ScheduleMcu
from hwnas.ir import lower
from hwnas.targets.mcu.plan import compile_c


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, 2, 1, groups=16), nn.ReLU6(),
        nn.Conv2d(16, 32, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    path = lower.export_onnx(_net(), (1, 3, 24, 24), tmp_path_factory.mktemp("s") / "net.onnx")
    q = QuantizeModule(calibration_batch((1, 3, 24, 24), count=8))(lower.to_relax(lower.load_onnx(path)))
    x = quantize_input(calibration_batch((1, 3, 24, 24), count=1, seed=5), quantization_info(q)["input_scale"])
    return lower.fuse(q), x


def _run(mod, x) -> np.ndarray:
    ex = lower.compile_module(mod, tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _workspace(mod) -> int:
    _, ws = compile_c(lower.prim_funcs(mod))
    return max(w["heap"] + w["stack"] for w in ws.values())


def _workspace_in_c(src: str) -> dict[str, dict[str, int]]:
    """What the generated C allocates, per kernel: TVMBackendAllocWorkspace bytes (rounded to 8) and local
    arrays (the reference the TIR analysis is checked against)."""
    ctype = {"int8_t": 1, "uint8_t": 1, "bool": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4,
             "float": 4, "int64_t": 8, "uint64_t": 8, "double": 8}
    funcs = list(re.finditer(r"^TVM_DLL int32_t __tvm_ffi_(\w+)\(void\* self_handle[^)]*\) \{$", src, re.M))
    out = {}
    for k, m in enumerate(funcs):
        body = src[m.start(): funcs[k + 1].start() if k + 1 < len(funcs) else len(src)]
        heap = re.findall(r"TVMBackendAllocWorkspace\(\d+, \w+, \(uint64_t\)(\d+)ULL", body)
        stack = re.findall(r"^\s+(u?int(?:8|16|32|64)_t|float|double|bool)\s+\w+\[(\d+)\];", body, re.M)
        out[m.group(1)] = {"heap": sum(-(-int(n) // 8) * 8 for n in heap),
                           "stack": sum(int(n) * ctype[t] for t, n in stack)}
    return out


CONFIGS = [
    dict(tile=0, pad="inline"),
    dict(tile=1, pad="inline"),
    dict(tile=4, tile_rows=2, pad="buffer", inplace_dw="off"),
    dict(tile=8, tile_rows=1, pad="inline", inplace_dw="on"),
]


def test_every_schedule_computes_the_same_integers(fused):
    mod, x = fused
    ref = _run(mod, x)
    for cfg in CONFIGS:
        scheduled = ScheduleMcu(cfg)(mod)
        names = [f.attrs["hwnas.scheduled"] for f in lower.prim_funcs(scheduled).values()
                 if f.attrs is not None and "hwnas.scheduled" in f.attrs]
        assert len(names) == len(lower.prim_funcs(mod))  # every kernel scheduled
        np.testing.assert_array_equal(_run(scheduled, x), ref)


def test_smaller_tiles_need_less_workspace(fused):
    mod, _ = fused
    unscheduled = _workspace(mod)
    whole = _workspace(ScheduleMcu(dict(tile=0))(mod))
    per_channel = _workspace(ScheduleMcu(dict(tile=1))(mod))
    per_row = _workspace(ScheduleMcu(dict(tile=1, tile_rows=1, inplace_dw="off"))(mod))
    # unscheduled: padded input + int32 accumulator + every requantization step at full size
    assert unscheduled > whole > per_channel > per_row
    # the first conv's accumulator: 16 x 24 x 24 int32 whole, 24 x 24 per channel, 24 per row
    assert whole >= 16 * 24 * 24 * 4 and per_channel <= 24 * 24 * 4 + 1024 and per_row <= 1024


def test_workspace_from_the_tir_equals_what_the_generated_c_allocates(fused):
    mod, _ = fused
    seen = {"heap": 0, "stack": 0}
    for m in [mod] + [ScheduleMcu(cfg)(mod) for cfg in CONFIGS]:
        src, ws = compile_c(lower.prim_funcs(m))
        assert ws == _workspace_in_c(src)
        for kind in seen:
            seen[kind] += sum(w[kind] for w in ws.values())
    assert seen["heap"] > 0 and seen["stack"] > 0  # both kinds of allocation were compared


def test_bad_configs_are_refused():
    with pytest.raises(InvalidConfigError, match="tile must be"):
        McuScheduleConfig(tile=-1)
    with pytest.raises(InvalidConfigError, match="pad must be"):
        McuScheduleConfig(pad="zero")
