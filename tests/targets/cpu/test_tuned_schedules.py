"""MetaSchedule tuning as a CPU knob: tuned once per workload, reused by later candidates, numerically exact."""

from __future__ import annotations

import pytest

from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.targets import get_target


@pytest.mark.slow  # ~110 s of MetaSchedule tuning; cpu:tuned's tests cover the same sharing by default
def test_tuned_schedules_are_tuned_once_per_workload_and_shared(tmp_path, monkeypatch, tuning_onnx, matches_ort):
    monkeypatch.setenv("HWNAS_TUNING_DB", str(tmp_path / "db"))
    a = tuning_onnx(8)
    b = tuning_onnx(24)  # same first conv, other 1x1 and dense
    hw = {"num_threads": 1}

    cpu = get_target("cpu:metaschedule")
    cpu.tune_trials = 4
    cpu.set_measure_options(repeats=2)
    first = evaluate(Candidate.from_onnx(a, hw), cpu)
    assert first.timings["tuning_tuned"] == 3 and first.timings["tuning_reused"] == 0  # 2 convs + dense
    matches_ort(first, a)
    kernels = {gv.name_hint: f for gv, f in first.built.module.functions_items() if "conv" in gv.name_hint}
    assert all("tirx.is_scheduled" in f.attrs for f in kernels.values())

    fresh = get_target("cpu:metaschedule")  # another candidate, as another worker would price it
    fresh.tune_trials = 4
    fresh.set_measure_options(repeats=2)
    again = evaluate(Candidate.from_onnx(a, hw), fresh)
    assert again.timings["tuning_tuned"] == 0 and again.timings["tuning_reused"] == 3
    other = evaluate(Candidate.from_onnx(b, hw), fresh)
    assert other.timings["tuning_reused"] == 1 and other.timings["tuning_tuned"] == 2
    matches_ort(other, b)

    off = evaluate(Candidate.from_onnx(a, {"num_threads": 1}), get_target("cpu"))
    assert "tuning_tuned" not in off.timings  # plain cpu: the knobs' schedules, no tuning


@pytest.mark.slow  # 30-75 s of MetaSchedule tuning (the default run has none: cpu:tuned's tests cover the sharing)
def test_a_tuning_budget_tunes_the_largest_workloads_first(tmp_path, monkeypatch, tuning_onnx, matches_ort):
    monkeypatch.setenv("HWNAS_TUNING_DB", str(tmp_path / "db"))
    path = tuning_onnx(24)
    cpu = get_target("cpu:metaschedule")
    # any budget is spent by the first workload: only the largest (3x3 conv, 43200 MACs) is tuned
    cpu.tune_trials, cpu.tune_budget_s = 4, 1e-3
    cpu.set_measure_options(repeats=2)
    ev = evaluate(Candidate.from_onnx(path, {"num_threads": 1}), cpu)
    assert (ev.timings["tuning_tuned"], ev.timings["tuning_untuned"]) == (1, 2)
    assert ev.timings["tuning_s"] > 0
    tuned = sorted(gv.name_hint for gv, f in ev.built.module.functions_items()
                   if f.attrs is not None and "tirx.is_scheduled" in f.attrs)
    assert len(tuned) == 1 and "conv2d" in tuned[0] and "1" not in tuned[0].split("_")[1]
    matches_ort(ev, path)  # the untuned kernels keep the knobs' schedules
