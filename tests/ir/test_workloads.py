"""Workload extraction from real fused modules: MACs against the ONNX graph, conv shapes, content keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.arch import get_space
from hwnas.ir import lower
from hwnas.pipeline.evaluate import apply_passes
from hwnas.ir.graph import count_macs
from hwnas.targets import get_target
from hwnas.ir.workloads import ConvShape, extract, total_macs


def _fused(net, shape, path):
    model = lower.load_onnx(lower.export_onnx(net, shape, path))
    return model, lower.fuse(lower.to_relax(model))


@pytest.mark.parametrize("space", ["nb201", "fbnet", pytest.param("mbv2", marks=pytest.mark.slow)])  # mbv2: ~18 s
def test_macs_equal_the_onnx_graph_count(space, tmp_path):
    sp = get_space(space)
    rng = np.random.default_rng(7)
    for i in range(3):
        g = sp.sample(rng)
        model, mod = _fused(sp.build(g), sp.input_shape(g), tmp_path / f"{i}.onnx")
        wl = extract(mod)
        assert total_macs(wl) == count_macs(model) > 0
        for w in wl:
            assert w.calls >= 1 and w.flops >= 0 and w.output_bytes > 0
            if w.conv is not None:
                assert w.conv.macs == w.macs


class _Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 24, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(24, 24, 5, stride=1, padding=2, groups=24)
        self.g = nn.Conv2d(24, 12, 1, groups=3)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.g(self.dw(self.a(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_conv_shapes_kinds_and_weight_bytes(tmp_path):
    _, mod = _fused(_Convs(), (1, 8, 20, 20), tmp_path / "c.onnx")
    wl = [w for w in extract(mod) if w.macs]
    convs = [w.conv for w in wl if w.conv is not None]
    assert convs == [
        ConvShape(n=1, k=24, c=8, p=10, q=10, r=3, s=3, stride=2, groups=1, h=20, w=20),
        ConvShape(n=1, k=24, c=24, p=10, q=10, r=5, s=5, stride=1, groups=24, h=10, w=10),
        ConvShape(n=1, k=12, c=24, p=10, q=10, r=1, s=1, stride=1, groups=3, h=10, w=10),
    ]
    assert [w.kind for w in wl] == ["conv2d", "depthwise_conv2d", "group_conv2d", "dense"]
    # weights are the bound constants: conv weight + bias, fp32
    assert wl[0].weight_bytes == (24 * 8 * 3 * 3 + 24) * 4
    assert wl[0].input_bytes == 8 * 20 * 20 * 4 and wl[0].output_bytes == 24 * 10 * 10 * 4
    assert wl[-1].macs == 12 * 5


def test_keys_follow_content_not_names(tmp_path):
    torch.manual_seed(0)
    net = _Convs()
    _, a = _fused(net, (1, 8, 20, 20), tmp_path / "a.onnx")
    _, b = _fused(_Convs(), (1, 8, 20, 20), tmp_path / "b.onnx")  # other weights, same computation
    _, c = _fused(net, (1, 8, 24, 24), tmp_path / "c.onnx")  # other shapes
    ka, kb, kc = ([(w.kind, w.key) for w in extract(m)] for m in (a, b, c))
    assert ka == kb
    # the convs see other shapes; the dense after the global mean is the same 12 -> 5 workload
    assert {k for k in ka if "conv" in k[0]}.isdisjoint(kc)
    assert [k for k in ka if k[0] == "dense"] == [k for k in kc if k[0] == "dense"]


def test_scheduled_module_has_the_same_workloads(tmp_path):
    sp = get_space("mbv2")
    g = sp.sample(np.random.default_rng(3))
    model = lower.load_onnx(lower.export_onnx(sp.build(g), sp.input_shape(g), tmp_path / "m.onnx"))
    target = get_target("cpu")
    hw = target.hardware_space.validate({"layout": "NCHW"})
    plain = lower.fuse(lower.to_relax(model))
    scheduled = apply_passes(plain, target.schedule_passes(hw), tvm_target=target.tvm_target(hw), stage="s")
    assert [(w.func, w.macs, w.conv) for w in extract(plain)] == [(w.func, w.macs, w.conv) for w in extract(scheduled)]
