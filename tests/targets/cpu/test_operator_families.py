"""The operator families of well-known architectures, compiled on the tuned path (``cpu:tuned``), against ONNX Runtime.

Grouped convs (ShuffleNet, ResNeXt), concat and channel shuffle, a 7x7
stride-2 stem, max- and average-pool in the packed layout, squeeze-and-
excitation, hard-swish and SiLU, 3x3 convs on Winograd's path and the
1000-class dense head: each in a small network of its own (opt-in, slow) and
all together in one network (default, 1 knob config per workload), compiled
with per-workload tuning (2 knob configs per workload, a fresh database) in the packed layout with
Winograd, and in the packed layout with direct 3x3 convs.
"""

import numpy as np
import tvm
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hwnas.ir import runtime
from hwnas.ir.lower import export_onnx
from hwnas.pipeline.evaluate import Candidate, compile_candidate
from hwnas.targets import get_target


class Shuffle(nn.Module):
    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class ConcatShuffle(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return Shuffle()(torch.cat((F.relu(self.a(x)), F.relu(self.b(x))), 1))


class SplitShuffle(nn.Module):
    """ShuffleNetV2's unit: half the channels pass, half go through a branch, then a shuffle."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(c // 2, c // 2, 1), nn.ReLU(), nn.Conv2d(c // 2, c // 2, 3, 1, 1,
                                                                                      groups=c // 2))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return Shuffle()(torch.cat((a, self.branch(b)), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


def head(c: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1000)]


#: family -> (network, input size)
FAMILIES = {
    "grouped_conv": (lambda: nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 1, groups=4),
                                           nn.ReLU(), nn.Conv2d(64, 64, 3, 1, 1, groups=8), nn.ReLU(), *head(64)), 28),
    "concat_shuffle": (lambda: nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), ConcatShuffle(32), SplitShuffle(64),
                                             nn.Conv2d(64, 32, 1), *head(32)), 16),
    "stem_7x7_s2": (lambda: nn.Sequential(nn.Conv2d(3, 32, 7, 2, 3), nn.BatchNorm2d(32), nn.ReLU(),
                                          nn.MaxPool2d(3, 2, 1), *head(32)), 56),
    "pools_packed": (lambda: nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                                           nn.Conv2d(32, 32, 1), nn.AvgPool2d(2, 2), nn.Conv2d(32, 16, 1),
                                           *head(16)), 29),
    "squeeze_excite": (lambda: nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), SqueezeExcite(32),
                                             nn.Conv2d(32, 16, 1), *head(16)), 14),
    "hardswish_silu": (lambda: nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.Hardswish(), nn.Conv2d(32, 32, 1),
                                             nn.SiLU(), *head(32)), 14),
    "conv3x3_large": (lambda: nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1),
                                            nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1), *head(16)), 28),
    "dense_head": (lambda: nn.Sequential(nn.Conv2d(3, 64, 1), nn.ReLU(), *head(64)), 4),
}


class AllFamilies(nn.Module):
    """Every family in one small network (the default test)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, 2, 3), nn.BatchNorm2d(32), nn.Hardswish(),
                                  nn.MaxPool2d(3, 2, 1, ceil_mode=True))
        self.body = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1), nn.SiLU(), nn.Conv2d(32, 32, 1, groups=4), nn.ReLU(),
                                  ConcatShuffle(32), SplitShuffle(64), SqueezeExcite(64), nn.AvgPool2d(2, 2),
                                  nn.Conv2d(64, 32, 3, 1, 1, groups=8))
        self.head = nn.Sequential(*head(32))

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


LAYOUTS = {"winograd": {"layout": "NCHWc", "pack": 16, "conv_algo": "winograd"},
           "direct": {"layout": "NCHWc", "pack": 8, "conv_algo": "direct"}}


def compile_and_compare(net: nn.Module, size: int, hw: dict, tmp_path, trials: int = 2) -> list[str]:
    """Compile ``net`` with ``cpu:tuned`` and ``hw``; check it against ONNX Runtime; return its kernels' names."""
    import onnxruntime as ort

    torch.manual_seed(0)
    for m in net.modules():  # batch-norm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    onnx_path = export_onnx(net.eval(), (1, 3, size, size), tmp_path / "net.onnx")
    target = get_target("cpu:tuned")
    target.tuning_root, target.tune_trials = tmp_path / "db", trials
    hw = target.hardware_space.validate({**hw, "num_threads": 1})
    _, built, _ = compile_candidate(Candidate.from_onnx(onnx_path, hw), target, hw, timings={})
    assert built.facts["counters"]["tuning_tuned"] >= 1  # the tuned path, not the network-wide knobs
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype("float32")
    got = runtime.run_vm(built.executable, [x])[0]
    want = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    return [gv.name_hint for gv, _ in built.module.functions_items()]


def test_all_families_in_one_network_match_onnxruntime(tmp_path):
    names = compile_and_compare(AllFamilies(), 24, LAYOUTS["winograd"], tmp_path, trials=1)
    assert any("NCHWc" in n for n in names)  # compiled in the packed layout


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_matches_onnxruntime(tmp_path, family, layout):
    make, size = FAMILIES[family]
    names = compile_and_compare(make(), size, LAYOUTS[layout], tmp_path)
    if family == "conv3x3_large" and layout == "winograd":
        assert any("winograd" in n for n in names), names


@pytest.mark.parametrize("layout", ["NCHW", "NCHWc"])
def test_sigmoid_and_silu_run_without_the_scalar_exp_and_match_onnxruntime_at_extreme_inputs(tmp_path, layout):
    """FastSigmoid: no ``exp`` intrinsic (one scalar libm call per element) is left in the compiled kernels,
    and inputs far outside exp's float32 range (+-200 after the conv) still give 0, 1 and x, not NaN."""
    import onnxruntime as ort

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.SiLU(), nn.Conv2d(16, 16, 1), nn.Sigmoid(),
                        nn.Conv2d(16, 8, 1)).eval()
    onnx_path = export_onnx(net, (1, 3, 8, 8), tmp_path / "net.onnx")
    target = get_target("cpu")
    hw = target.hardware_space.validate({"layout": layout, "pack": 8, "num_threads": 1})
    _, built, _ = compile_candidate(Candidate.from_onnx(onnx_path, hw), target, hw, timings={})
    funcs = {gv.name_hint: f for gv, f in built.module.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert any("fast_sigmoid" in name for name in funcs), sorted(funcs)
    tir = "\n".join(f.script() for f in funcs.values())
    assert "T.exp(" not in tir and "T.reinterpret" in tir  # fast_exp builds 2^n from the float's bits
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32") * 100
    got = runtime.run_vm(built.executable, [x])[0]
    want = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
