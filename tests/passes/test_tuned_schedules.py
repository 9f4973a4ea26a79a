"""MetaSchedule tuning as a CPU knob: tuned once per workload, reused by later candidates, numerically exact."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.pipeline.lower import export_onnx
from hwnas.targets import get_target
from hwnas.targets.measure import random_inputs, run_vm


def _net(second_channels: int):
    torch.manual_seed(second_channels)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, second_channels, 1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(second_channels * 10 * 10, 10)).eval()


def _check_against_ort(ev, path):
    x = list(random_inputs(ev.built.inputs, seed=5).values())
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x[0]})[0]
    np.testing.assert_allclose(run_vm(ev.built.executable, x)[0], ref, rtol=1e-4, atol=1e-4)


def test_tuned_schedules_are_tuned_once_per_workload_and_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_TUNING_DB", str(tmp_path / "db"))
    a = export_onnx(_net(8), (1, 3, 10, 10), tmp_path / "a.onnx")
    b = export_onnx(_net(24), (1, 3, 10, 10), tmp_path / "b.onnx")  # same first conv, other 1x1 and dense
    hw = {"num_threads": 1}

    cpu = get_target("cpu:metaschedule")
    cpu.tune_trials, cpu.repeats = 4, 2
    first = evaluate(Candidate.from_onnx(a, hw), cpu)
    assert first.timings["tuning_tuned"] == 3 and first.timings["tuning_reused"] == 0  # 2 convs + dense
    _check_against_ort(first, a)
    kernels = {gv.name_hint: f for gv, f in first.built.module.functions_items() if "conv" in gv.name_hint}
    assert all("tirx.is_scheduled" in f.attrs for f in kernels.values())

    fresh = get_target("cpu:metaschedule")  # another candidate, as another worker would price it
    fresh.tune_trials, fresh.repeats = 4, 2
    again = evaluate(Candidate.from_onnx(a, hw), fresh)
    assert again.timings["tuning_tuned"] == 0 and again.timings["tuning_reused"] == 3
    other = evaluate(Candidate.from_onnx(b, hw), fresh)
    assert other.timings["tuning_reused"] == 1 and other.timings["tuning_tuned"] == 2
    _check_against_ort(other, b)

    off = evaluate(Candidate.from_onnx(a, {"num_threads": 1}), get_target("cpu"))
    assert "tuning_tuned" not in off.timings  # plain cpu: the knobs' schedules, no tuning


@pytest.mark.slow  # ~30 s of MetaSchedule tuning
def test_a_tuning_budget_tunes_the_largest_workloads_first(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_TUNING_DB", str(tmp_path / "db"))
    path = export_onnx(_net(24), (1, 3, 10, 10), tmp_path / "b.onnx")
    cpu = get_target("cpu:metaschedule")
    # any budget is spent by the first workload: only the largest (3x3 conv, 43200 MACs) is tuned
    cpu.tune_trials, cpu.tune_budget_s, cpu.repeats = 4, 1e-3, 2
    ev = evaluate(Candidate.from_onnx(path, {"num_threads": 1}), cpu)
    assert (ev.timings["tuning_tuned"], ev.timings["tuning_untuned"]) == (1, 2)
    assert ev.timings["tuning_s"] > 0
    tuned = sorted(gv.name_hint for gv, f in ev.built.module.functions_items()
                   if f.attrs is not None and "tirx.is_scheduled" in f.attrs)
    assert len(tuned) == 1 and "conv2d" in tuned[0] and "1" not in tuned[0].split("_")[1]
    _check_against_ort(ev, path)  # the untuned kernels keep the knobs' schedules
