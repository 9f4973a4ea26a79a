"""ScheduleMcu: the same integers from every schedule, less workspace from smaller tiles."""

from __future__ import annotations

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
from hwnas.targets.mcu.plan import kernel_workspace


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
    funcs = lower.prim_funcs(mod)
    c_mod = tvm.IRModule({n: f.with_attr("global_symbol", n) for n, f in funcs.items()})
    with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
        src = tvm.compile(c_mod, target=tvm.target.Target({"kind": "c"})).mod.inspect_source()
    return max(w["heap"] + w["stack"] for w in kernel_workspace(src).values())


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


def test_bad_configs_are_refused():
    with pytest.raises(InvalidConfigError, match="tile must be"):
        McuScheduleConfig(tile=-1)
    with pytest.raises(InvalidConfigError, match="pad must be"):
        McuScheduleConfig(pad="zero")
