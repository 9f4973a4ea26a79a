"""Winograd F(2x2, 3x3) convolutions (``conv_algo: winograd``): which convs take it, numerics, schedules."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.targets.cpu.passes import cpu_schedule_passes
from hwnas.targets.cpu.winograd import CONV2D_NCHWC_WINOGRAD, WEIGHT_TRANSFORM, qualifies
from hwnas.ir.lower import prim_funcs

from .conftest import scheduled_by

WINOGRAD_CONFIGS = {
    "pack16": {"layout": "NCHWc", "pack": 16, "vector_width": 16, "conv_algo": "winograd"},
    "pack8": {"layout": "NCHWc", "pack": 8, "conv_algo": "winograd"},
    "pack4-serial": {"layout": "NCHWc", "pack": 4, "vector_width": 4, "num_threads": 1, "parallel": "none",
                     "conv_algo": "winograd"},
}


def test_only_float_3x3_stride1_pad1_convs_qualify_at_any_size():
    ok = dict(strides=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), dtype="float32")
    data, weight = (1, 2, 8, 8, 8), (2, 2, 3, 3, 8, 8)
    assert qualifies(data, weight, **ok)
    for height, width in [(7, 8), (8, 7), (13, 13), (1, 1)]:  # odd sizes end in a partial tile
        assert qualifies((1, 2, height, width, 8), weight, **ok)
    assert not qualifies(data, weight, **{**ok, "strides": (2, 2)})
    assert not qualifies(data, weight, **{**ok, "padding": (0, 0, 0, 0)})
    assert not qualifies(data, weight, **{**ok, "dilation": (2, 2)})
    assert not qualifies(data, weight, **{**ok, "dtype": "int32"})
    assert not qualifies(data, (2, 2, 1, 1, 8, 8), **ok)  # 1x1 kernel


@pytest.mark.parametrize("net,winograd_convs", [("residual", 2), ("conv", 1), ("strided", 0), ("dilated", 0)])
def test_qualifying_convs_take_winograd_with_weights_transformed_at_build_time(pipeline, config, net,
                                                                               winograd_convs):
    fused = pipeline.fused(net, config(**WINOGRAD_CONFIGS["pack8"]))
    names = list(prim_funcs(fused))
    assert sum(CONV2D_NCHWC_WINOGRAD in n for n in names) == winograd_convs
    assert not any(WEIGHT_TRANSFORM in n for n in names)  # folded into constants
    scheduled = pipeline.schedule(fused, cpu_schedule_passes(config(**WINOGRAD_CONFIGS["pack8"])))
    assert sum(CONV2D_NCHWC_WINOGRAD in n for n in scheduled_by(scheduled, "TileConv2d")) == winograd_convs


@pytest.mark.parametrize("net", ["residual", "conv"])
@pytest.mark.parametrize("cfg", list(WINOGRAD_CONFIGS))
def test_numerics_match_onnxruntime(pipeline, config, net, cfg):
    pipeline.check_numerics(net, config(**WINOGRAD_CONFIGS[cfg]))


@pytest.mark.parametrize("net,winograd_convs", [("odd_stages", 3), ("rows14_cols13", 1)])
@pytest.mark.parametrize("cfg", ["pack16", "pack8"])
def test_odd_output_sizes_take_winograd_with_partial_tiles_and_match_onnxruntime(pipeline, config, net,
                                                                                   winograd_convs, cfg):
    # 27x27, 13x13, 7x7 and 14x13 outputs: ceil(H/2) x ceil(W/2) tiles, the last row/column of tiles half cropped
    mod = pipeline.scheduled(net, config(**WINOGRAD_CONFIGS[cfg]))
    assert sum(CONV2D_NCHWC_WINOGRAD in n for n in scheduled_by(mod, "TileConv2d")) == winograd_convs
    out, ref = pipeline.run(net, pipeline.compile(mod))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_winograd_without_the_packed_layout_is_one_clear_error(cli, tmp_path):
    code, _, err = cli("compile", "--space", "nb201", "--genome", "[3,3,3,1,3,3]", "--target", "cpu", "--hw",
                       '{"layout": "NCHW", "conv_algo": "winograd"}', "--out", str(tmp_path / "b"))
    assert code == 2 and err.count("\n") == 1 and "conv_algo 'winograd' needs layout 'NCHWc'" in err


@pytest.mark.parametrize("net,winograd_convs", [("residual", 2), ("rows14_cols13", 1)])
def test_cpu_tuned_tunes_the_winograd_product_per_workload_and_matches_onnxruntime(tmp_path, monkeypatch, pipeline,
                                                                                 config, matches_ort, net,
                                                                                 winograd_convs):
    import json

    import tvm

    from hwnas.pipeline.evaluate import Candidate, evaluate
    from hwnas.targets import get_target
    from hwnas.targets.cpu.tile_conv2d import CpuScheduleConfig
    from hwnas.ir.workloads import workload_key
    from hwnas.targets.cpu.tuned_knobs import DATABASE_FILE, schedule_with
    from hwnas.targets.cpu.winograd import default_knobs, is_winograd, schedule_winograd

    monkeypatch.setenv("HWNAS_TUNING_DB", str(tmp_path / "db"))
    cpu = get_target("cpu:tuned")
    cpu.tune_trials = 3
    cpu.set_measure_options(repeats=2)
    path = pipeline.onnx(net)
    hw = {"layout": "NCHWc", "pack": 16, "conv_algo": "winograd", "num_threads": 1}
    ev = evaluate(Candidate.from_onnx(path, hw), cpu)
    matches_ort(ev, path)
    assert sum(CONV2D_NCHWC_WINOGRAD in n for n in scheduled_by(ev.built.module, "TunedKnobs")) == winograd_convs
    (folder,) = [p for p in (tmp_path / "db").iterdir() if p.is_dir()]
    records = [r for r in json.loads((folder / DATABASE_FILE).read_text()).values()
               if (r.get("shape") or {}).get("block") == "wino_M"]
    # each Winograd workload timed its network config, the untuned schedule and a third, and kept the fastest
    assert records and all(r["trials"] == 3 and r["ms"] <= r["network_config_ms"] for r in records)
    # the tuner's second trial is the untuned schedule itself
    unscheduled = [f for _, f in pipeline.fused(net, config(**hw)).functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc) and is_winograd(f)]
    assert len(unscheduled) == winograd_convs
    for func in unscheduled:
        fixed = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
        assert schedule_winograd(fixed, CpuScheduleConfig.from_mapping(config(**hw)).vector_width)
        knobs = CpuScheduleConfig.from_mapping({**config(**hw), **default_knobs(func)})
        assert workload_key(schedule_with(func, knobs)) == workload_key(fixed.mod["main"])


def test_the_product_is_split_by_tiles_when_the_input_outweighs_the_transformed_weights(pipeline, config,
                                                                                      monkeypatch):
    """ResNet-18's 56x56x64 convs split the batched product and the output transform by tiles (rows), as the
    input transform is; its 28x28x128 ones (transformed weights 16 x 128 x 128 > input 4 x 196 x 128) and any
    conv with one block of tiles split by output channels. The two schedules differ and both are right."""
    from hwnas.targets.cpu import winograd

    assert winograd.split_by_tiles(28 * 28, 49, 64) and not winograd.split_by_tiles(14 * 14, 13, 128)
    assert not winograd.split_by_tiles(400, 1, 16)
    cfg = config(layout="NCHWc", pack=8, conv_algo="winograd")
    rule = winograd.split_by_tiles
    texts = {}
    for by_tiles in (True, False):
        monkeypatch.setattr(winograd, "split_by_tiles", lambda *a, _v=by_tiles: _v and rule(*a))
        after = pipeline.scheduled("wide_map", cfg)  # 8 -> 16 channels at 16x16: 64 tiles, 4 x 64 >= 16 x 16
        (name,) = [n for n in prim_funcs(after) if CONV2D_NCHWC_WINOGRAD in n]
        texts[by_tiles] = prim_funcs(after)[name].script()
        pipeline.check_numerics("wide_map", cfg)
    assert texts[True] != texts[False]


@pytest.mark.parametrize("net", ["large_maps", "large_maps_odd"])
def test_large_maps_take_f4x4_and_match_onnxruntime(pipeline, config, net):
    """On maps of 28x28 and more, with transformed weights within 4 MB, the output tile is 4x4 (36 positions
    per patch: 2.25 multiplies per output instead of 4): ResNet's first two stages; its 14x14 and 7x7 stages
    and 28x28 maps with 256 channels (9.4 MB of transformed weights) keep 2x2."""
    from hwnas.targets.cpu.winograd import tile_size

    assert tile_size(56, 56, 64, 64) == 4 and tile_size(28, 28, 128, 128) == 4 and tile_size(55, 55, 16, 64) == 4
    assert tile_size(14, 14, 256, 256) == 2 and tile_size(28, 28, 256, 256) == 2 and tile_size(27, 27, 8, 8) == 2
    cfg = config(layout="NCHWc", pack=8, conv_algo="winograd")
    after = pipeline.scheduled(net, cfg)
    winos = [f for n, f in prim_funcs(after).items() if CONV2D_NCHWC_WINOGRAD in n]
    assert winos and all([int(d) for d in f.params[1].shape][1] == 36 for f in winos)  # U: (O/q, 36, C, q)
    pipeline.check_numerics(net, cfg)
