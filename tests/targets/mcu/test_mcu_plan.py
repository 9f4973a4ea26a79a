"""The MCU memory plan: kernel order, in-place depthwise, one arena without overlapping live tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hwnas.errors import CompileError
from hwnas.passes.quantize import QuantizeModule, calibration_batch
from hwnas.ir import lower
from hwnas.ir import workloads
from hwnas.targets.mcu import plan as mcu_plan


class TwoBranches(nn.Module):
    """Two branches, each widening to 64 channels and narrowing back; written so that the program
    order keeps both wide tensors alive at once."""

    def __init__(self) -> None:
        super().__init__()
        self.a1, self.b1 = nn.Conv2d(4, 64, 1), nn.Conv2d(4, 64, 1)
        self.a2, self.b2 = nn.Conv2d(64, 4, 1), nn.Conv2d(64, 4, 1)

    def forward(self, x):
        a = torch.relu(self.a1(x))
        b = torch.relu(self.b1(x))
        return self.a2(a) + self.b2(b)


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 32, 1)
        self.dw = nn.Conv2d(32, 32, 3, 1, 1, groups=32)
        self.out = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        return self.out(torch.relu(self.dw(torch.relu(self.pw(x)))))


def _fused(net: nn.Module, shape, tmp_path):
    torch.manual_seed(0)
    path = lower.export_onnx(net.eval(), shape, tmp_path / "n.onnx")
    q = QuantizeModule(calibration_batch(shape, count=4))(lower.to_relax(lower.load_onnx(path)))
    return lower.fuse(q)


def _depthwise(mod, graph) -> set[int]:
    wl = {w.func: w for w in workloads.extract(mod)}
    return {i for i, c in enumerate(graph.calls)
            if wl[c.func].conv is not None and wl[c.func].conv.groups == wl[c.func].conv.c > 1}


def _check_no_overlap(graph, plan) -> None:
    """Tensors alive at the same step never share bytes (unless one was written over the other)."""
    step = {c: i for i, c in enumerate(plan.order)}
    life = {graph.input: [0, 0]}
    for c in plan.order:
        for t in [*graph.calls[c].args, graph.calls[c].out]:
            if graph.tensors[t].role != "weight":
                lo, hi = life.setdefault(t, [step[c], step[c]])
                life[t] = [min(lo, step[c]), max(hi, step[c])]
    life[graph.output][1] = len(plan.order)
    inplace = {graph.calls[c].out: x for c, x in plan.inplace}
    names = list(life)
    for i, s in enumerate(names):
        for t in names[i + 1:]:
            if inplace.get(s) == t or inplace.get(t) == s:
                continue
            if life[s][1] < life[t][0] or life[t][1] < life[s][0]:
                continue
            a0, a1 = plan.offsets[s], plan.offsets[s] + graph.tensors[s].nbytes
            b0, b1 = plan.offsets[t], plan.offsets[t] + graph.tensors[t].nbytes
            assert a1 <= b0 or b1 <= a0, (s, t)
        assert plan.offsets[s] + graph.tensors[s].nbytes <= plan.arena_bytes


def test_min_memory_order_keeps_one_wide_tensor_alive(tmp_path):
    mod = _fused(TwoBranches(), (1, 4, 16, 16), tmp_path)
    graph = mcu_plan.kernel_graph(mod)
    program = mcu_plan.plan_memory(graph, order_mode="program")
    best = mcu_plan.plan_memory(graph, order_mode="min_memory")
    wide = 64 * 16 * 16  # one int8 64-channel tensor
    assert program.peak_live_bytes >= 2 * wide
    assert best.peak_live_bytes < 2 * wide <= program.peak_live_bytes
    assert best.arena_bytes < program.arena_bytes
    assert sorted(best.order) == list(range(len(graph.calls))) and best.order != program.order
    for plan in (program, best):
        assert plan.arena_bytes >= plan.peak_live_bytes
        _check_no_overlap(graph, plan)


def test_inplace_depthwise_shares_the_input_buffer(tmp_path):
    mod = _fused(Depthwise(), (1, 3, 16, 16), tmp_path)
    graph = mcu_plan.kernel_graph(mod)
    dw = _depthwise(mod, graph)
    assert len(dw) == 1
    off = mcu_plan.plan_memory(graph, depthwise=dw)
    on = mcu_plan.plan_memory(graph, inplace_dw=True, depthwise=dw)
    assert off.inplace == [] and len(on.inplace) == 1
    call, x = on.inplace[0]
    assert on.offsets[graph.calls[call].out] == on.offsets[x]
    wide, out = 32 * 16 * 16, 4 * 16 * 16
    assert off.arena_bytes == 2 * wide and on.arena_bytes == wide + out  # dw in+out, then dw out + result
    _check_no_overlap(graph, on)


def test_graph_lists_weights_once_and_the_output(tmp_path):
    mod = _fused(Depthwise(), (1, 3, 8, 8), tmp_path)
    graph = mcu_plan.kernel_graph(mod)
    assert graph.tensors[graph.input].dtype == "int8"
    assert graph.tensors[graph.output].role == "output"
    weights = [t for t in graph.tensors.values() if t.role == "weight"]
    assert weights and all(t.value is not None and t.value.shape == t.shape for t in weights)


def test_unknown_order_is_refused(tmp_path):
    mod = _fused(Depthwise(), (1, 3, 8, 8), tmp_path)
    with pytest.raises(CompileError, match="unknown execution order"):
        mcu_plan.plan_memory(mcu_plan.kernel_graph(mod), order_mode="random")
