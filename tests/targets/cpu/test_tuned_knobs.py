"""cpu:tuned: the schedule knobs chosen per workload by measurement, tuned once, shared, numerically exact."""

from __future__ import annotations

import json

import pytest
import tvm_ffi

from hwnas.errors import InvalidConfigError
from hwnas.ir.schedule import SCHEDULED_ATTR
from hwnas.targets.cpu.tuned_knobs import DATABASE_FILE, SCHEDULE_KNOBS, schedule_with, workload_key
from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.targets import get_target


def _tuned(trials: int = 4, budget_s=None):
    cpu = get_target("cpu:tuned")
    cpu.tune_trials, cpu.tune_budget_s = trials, budget_s
    cpu.set_measure_options(repeats=2)
    return cpu


def _records(db) -> dict:
    (folder,) = [p for p in db.iterdir() if p.is_dir()]
    return json.loads((folder / DATABASE_FILE).read_text())


@pytest.mark.parametrize("layout", ["NCHW", "NCHWc"])
def test_each_workload_is_tuned_once_and_shared_by_later_candidates(tmp_path, monkeypatch, layout,
        tuning_onnx, matches_ort):
    monkeypatch.setenv("HWNAS_TUNING_DB", str(tmp_path / "db"))
    a = tuning_onnx(8)
    b = tuning_onnx(24)  # same first conv, other 1x1 and dense
    hw = {"num_threads": 1, "layout": layout}

    first = evaluate(Candidate.from_onnx(a, hw), _tuned())
    assert first.timings["tuning_tuned"] == 3 and first.timings["tuning_reused"] == 0  # 2 convs + dense
    matches_ort(first, a)
    records = _records(tmp_path / "db")
    assert len(records) == 3
    for record in records.values():
        # the network's own config is the first trial, so the choice is never slower than it measured
        assert 1 <= record["trials"] <= 4 and record["ms"] <= record["network_config_ms"]
        assert set(record["knobs"]) == set(SCHEDULE_KNOBS)
    tuned = {gv.name_hint for gv, f in first.built.module.functions_items()
             if f.attrs is not None and f.attrs.get(SCHEDULED_ATTR) == "TunedKnobs"}
    assert len(tuned) == 3

    again = evaluate(Candidate.from_onnx(a, hw), _tuned())  # another candidate, as another worker would price it
    assert again.timings["tuning_tuned"] == 0 and again.timings["tuning_reused"] == 3
    other = evaluate(Candidate.from_onnx(b, hw), _tuned())
    assert other.timings["tuning_reused"] == 1 and other.timings["tuning_tuned"] == 2
    matches_ort(other, b)


def test_the_stored_knobs_are_the_ones_the_module_is_scheduled_with(tmp_path, monkeypatch, tuning_onnx):
    from hwnas.targets.cpu.tile_conv2d import CpuScheduleConfig
    from hwnas.ir import lower
    from hwnas.pipeline.evaluate import apply_passes

    monkeypatch.setenv("HWNAS_TUNING_DB", str(tmp_path / "db"))
    path = tuning_onnx(8)
    cpu = _tuned(trials=6)
    hw = cpu.hardware_space.validate({"num_threads": 1})
    ev = evaluate(Candidate.from_onnx(path, hw), cpu)
    records = _records(tmp_path / "db")

    fused = apply_passes(lower.to_relax(lower.load_onnx(path)), [lower.fuse], tvm_target=cpu.tvm_target(hw),
                         stage="fusion")
    scheduled = {gv.name_hint: f for gv, f in ev.built.module.functions_items()}
    checked = 0
    for gv, func in fused.functions_items():
        record = records.get(workload_key(func)) if hasattr(func, "body") else None
        if record is None:
            continue
        expected = schedule_with(func, CpuScheduleConfig.from_mapping({**hw, **record["knobs"]}))
        got = scheduled[gv.name_hint].without_attr(SCHEDULED_ATTR)
        assert tvm_ffi.structural_equal(got, expected, map_free_vars=True)
        checked += 1
    assert checked == 3


def test_a_budget_tunes_the_largest_workload_first_and_the_rest_keep_the_knobs(tmp_path, monkeypatch,
        tuning_onnx, matches_ort):
    monkeypatch.setenv("HWNAS_TUNING_DB", str(tmp_path / "db"))
    path = tuning_onnx(24)
    ev = evaluate(Candidate.from_onnx(path, {"num_threads": 1}), _tuned(budget_s=1e-3))
    assert (ev.timings["tuning_tuned"], ev.timings["tuning_untuned"]) == (1, 2)
    by_pass = {gv.name_hint: f.attrs.get(SCHEDULED_ATTR) for gv, f in ev.built.module.functions_items()
               if f.attrs is not None and SCHEDULED_ATTR in f.attrs}
    assert [n for n, p in by_pass.items() if p == "TunedKnobs"] == ["fused_conv2d_add_relu"]  # 43200 MACs
    assert sorted(p for p in by_pass.values() if p in ("TileConv2d", "TileDense")) == ["TileConv2d", "TileDense"]
    matches_ort(ev, path)


def test_cpu_tuned_takes_the_schedule_knobs_out_of_the_searched_space():
    tuned, plain = get_target("cpu:tuned").hardware_space, get_target("cpu").hardware_space
    for knob in SCHEDULE_KNOBS:
        assert tuned.params[knob].values == (plain.params[knob].default,)
        assert len(plain.params[knob].values) > 1
    for knob in ("layout", "pack", "num_threads", "weight_bits"):
        assert tuned.params[knob].values == plain.params[knob].values
    with pytest.raises(InvalidConfigError, match="cpu:tuned"):
        tuned.validate({"tile_oc": 64 if plain.params["tile_oc"].default != 64 else 32})
    with pytest.raises(InvalidConfigError, match="tuned, metaschedule"):
        get_target("cpu:autotvm")


def test_new_workloads_first_try_the_knobs_of_the_most_similar_tuned_ones(tmp_path):
    from hwnas.targets.cpu.tuned_knobs import TunedKnobs

    def record(block, spatial, reduction, tile_oc):
        return {"knobs": {"tile_oc": tile_oc, "tile_ow": 4}, "ms": 1.0, "network_config_ms": 1.0, "trials": 4,
                "func": block, "shape": {"block": block, "spatial": spatial, "reduction": reduction}}

    (tmp_path / DATABASE_FILE).write_text(json.dumps({
        "a": record("conv2d_NCHWc", [1, 2, 32, 32, 16], [1, 3, 3, 16], 16),   # same conv, another epilogue
        "b": record("conv2d_NCHWc", [1, 2, 8, 8, 16], [1, 3, 3, 16], 32),     # same kind, smaller map
        "c": record("conv2d_NCHWc", [1, 2, 32, 32, 16], [4, 1, 1, 16], 64),   # another reduction
        "d": record("depthwise_conv2d_NCHWc", [1, 2, 32, 32, 16], [3, 3], 8),  # another block: never
        "e": record("conv2d_NCHWc", [1, 2, 32, 32, 16], [1, 3, 3, 16], 16),   # same knobs as "a": once
    }))
    tuner = TunedKnobs(tmp_path, None, lambda f: True, {}, {"tile_oc": (8, 16, 32, 64), "tile_ow": (4, 8)})
    shape = {"block": "conv2d_NCHWc", "spatial": [1, 2, 32, 32, 16], "reduction": [1, 3, 3, 16]}
    assert [s["tile_oc"] for s in tuner._seeds(shape, 8)] == [16, 32, 64]
    assert [s["tile_oc"] for s in tuner._seeds(shape, 1)] == [16]
