"""TileConv2d: structure of the scheduled conv PrimFuncs, robustness, and numerics after the pipeline."""

from __future__ import annotations

import logging

import pytest
import tvm

from hwnas.errors import InvalidConfigError
from hwnas.targets.cpu.passes import (
    LOOP_ORDERS,
    PARALLEL_AXES,
    ScheduleInjective,
    TileConv2d,
    TileDense,
    cpu_schedule_passes,
)
from hwnas.targets.cpu import tile_conv2d
from hwnas.ir.lower import prim_funcs
from hwnas.ir.schedule import unscheduled_functions


def _conv_func(mod):
    (name,) = [n for n in prim_funcs(mod) if "conv2d" in n]
    return prim_funcs(mod)[name]


def test_conv_is_tiled_parallel_and_vectorized(pipeline, config, structure):
    before = pipeline.fused("conv")  # 12 -> 20 channels, 10x10, 3x3, bias + ReLU
    after = pipeline.schedule(before, [TileConv2d(config())])
    assert structure.scheduled_by(after, "TileConv2d") == ["fused_conv2d_add_relu"]
    func = _conv_func(after)
    # tiles clamp to divisors: oc 20 -> 5, ow 10 -> 5, rc 12 -> 4; order oc_outer;
    # parallel = batch * oc.o (4) * oh.o (10); the 5-wide ow tile is the vector
    assert structure.loops_of(func, "conv2d_nchw_update") == [
        (40, "parallel"), (2, "serial"),                                  # (batch, oc.o, oh.o), ow.o
        (3, "serial"), (3, "serial"), (3, "serial"), (4, "serial"),   # rc.o, kh, kw, rc.i
        (1, "serial"), (5, "serial"), (5, "vectorized"),              # oh.i, oc.i, ow.i
    ]
    # the zero-init was moved out of the reduction, under the same tile
    assert structure.loops_of(func, "conv2d_nchw_init")[:2] == [(40, "parallel"), (2, "serial")]
    # bias + ReLU (inlined into one block) run under the tile, vectorized
    assert structure.loops_of(func, "compute") == [
        (40, "parallel"), (2, "serial"), (1, "serial"), (5, "serial"), (1, "serial"), (5, "vectorized")
    ]
    assert "pragma_auto_unroll_max_step" in func.script()


def test_packed_conv_vectorizes_the_channel_lane(pipeline, config, structure):
    cfg = config(layout="NCHWc", pack=8, tile_oc=16, tile_ow=4, tile_rc=8, vector_width=4)
    after = pipeline.scheduled("residual", cfg)  # two 16 -> 16 3x3 convs at 8x8
    packed = [n for n in structure.scheduled_by(after, "TileConv2d") if "NCHWc" in n]
    assert len(packed) == 2
    loops = structure.loops_of(prim_funcs(after)[packed[0]], "conv2d_NCHWc_update")
    # oc blocks 2 (tile 16 = 2 blocks of 8): parallel = oc.o (1) * oh.o (8); ow 8 by 4;
    # rc blocks 2 by 1; the 8-lane channel block split into 2 x 4 vector lanes
    assert loops == [
        (8, "parallel"), (2, "serial"),
        (2, "serial"), (3, "serial"), (3, "serial"), (1, "serial"), (8, "serial"),
        (1, "serial"), (2, "serial"), (4, "serial"), (2, "serial"), (4, "vectorized"),
    ]


@pytest.mark.parametrize(
    ("changes", "block", "expected"),
    [
        # spatial tiles outside the channel tiles
        ({"loop_order": "spatial_outer"}, "conv2d_nchw_update", [(20, "parallel"), (4, "serial")]),
        # a block of input channels streamed over a row of tiles
        ({"loop_order": "rc_outer", "parallel": "all"}, "conv2d_nchw_update",
         [(40, "parallel"), (3, "serial"), (2, "serial")]),
        # no parallel loop at all
        ({"parallel": "none"}, "conv2d_nchw_update", [(1, "serial"), (4, "serial"), (10, "serial")]),
        # no vectorization: the ow tile stays a serial loop
        ({"vector_width": 1}, "conv2d_nchw_update", [(40, "parallel"), (2, "serial")]),
    ],
)
def test_knobs_change_the_loop_nest(pipeline, config, structure, changes, block, expected):
    after = pipeline.schedule(pipeline.fused("conv"), [TileConv2d(config(**changes))])
    loops = structure.loops_of(_conv_func(after), block)
    assert loops[: len(expected)] == expected
    vectorized = [kind for _, kind in loops if kind == "vectorized"]
    assert vectorized == ([] if changes.get("vector_width") == 1 else ["vectorized"])


def test_different_configs_give_different_code(pipeline, config):
    before = pipeline.fused("residual")
    texts = {
        cfg: pipeline.schedule(before, [TileConv2d(config(**dict(cfg)))]).script()
        for cfg in [(), (("tile_oc", 4),), (("unroll", 0),), (("loop_order", "spatial_outer"),)]
    }
    assert len(set(texts.values())) == len(texts)


def test_other_functions_are_left_alone(pipeline, config):
    before = pipeline.fused("glue")
    after = pipeline.schedule(before, [TileConv2d(config())])
    for name, func in prim_funcs(before).items():
        if "conv2d" not in name:
            tvm.ir.assert_structural_equal(prim_funcs(after)[name], func)
    assert before.script() != after.script()


def test_pass_is_pure_and_idempotent(pipeline, config):
    before = pipeline.fused("conv")
    text = before.script()
    once = pipeline.schedule(before, [TileConv2d(config())])
    assert before.script() == text  # the input module is not modified
    twice = pipeline.schedule(once, [TileConv2d(config(tile_oc=2))])  # scheduled functions are kept
    tvm.ir.assert_structural_equal(once, twice)


def test_a_function_whose_scheduling_fails_is_left_unscheduled(
    pipeline, config, structure, monkeypatch, caplog
):
    before = pipeline.fused("residual")  # two conv functions
    real = tile_conv2d.tile_reduction
    calls = []

    def fail_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise tvm.s_tir.schedule.ScheduleError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(tile_conv2d, "tile_reduction", fail_first)
    with caplog.at_level(logging.DEBUG, logger="hwnas.targets.cpu.tile_conv2d"):
        after = pipeline.schedule(before, [TileConv2d(config())])
    convs = sorted(n for n in prim_funcs(before) if "conv2d" in n)
    assert len(convs) == 2
    scheduled = structure.scheduled_by(after, "TileConv2d")
    assert len(scheduled) == 1
    (failed,) = set(convs) - set(scheduled)
    # left as it was, and marked so that the evaluation reports it (not measured as the asked-for config)
    tvm.ir.assert_structural_equal(prim_funcs(after)[failed].body, prim_funcs(before)[failed].body)
    assert unscheduled_functions(after) == [
        {"function": failed, "pass": "TileConv2d", "error": "ScheduleError: injected failure"}]
    assert failed in caplog.text and "injected failure" in caplog.text  # warned (or, once warned, logged)
    pipeline.run("residual", pipeline.compile(after))  # the module still builds and runs


@pytest.mark.parametrize(
    "bad",
    [{"loop_order": "zigzag"}, {"parallel": "everything"}, {"tile_oc": 0}, {"unroll": -1},
     {"layout": "NHWC"}, {"vector_width": "8"}],
)
def test_invalid_config_is_a_clear_error(config, bad):
    with pytest.raises(InvalidConfigError):
        TileConv2d(config(**bad))


def test_exported_choices_and_pass_list(config):
    assert LOOP_ORDERS == ("oc_outer", "spatial_outer", "rc_outer")
    assert PARALLEL_AXES == ("none", "outer", "outer2", "all")
    passes = cpu_schedule_passes(config())
    assert [p.info.name for p in passes] == ["TileConv2d", "TileDense", "ScheduleInjective"]
    assert {type(p) for p in passes} == {TileConv2d, TileDense, ScheduleInjective}


def test_schedules_survive_compilation(pipeline, config):
    """The build does not fuse again: the parallel loops and vectors reach the LLVM IR."""
    plain = pipeline.compile(pipeline.fused("residual"))
    tuned = pipeline.compile(pipeline.schedule(pipeline.fused("residual"), [TileConv2d(config())]))
    plain_ir = plain.mod.imports[0].inspect_source("ll")
    tuned_ir = tuned.mod.imports[0].inspect_source("ll")
    assert "TVMBackendParallelLaunch" not in plain_ir
    assert "TVMBackendParallelLaunch" in tuned_ir
    assert tuned_ir.count("<8 x float>") > plain_ir.count("<8 x float>")


NCHW_CONFIGS = {
    "default": {},
    "big-tiles": {"tile_oc": 16, "tile_oh": 2, "tile_ow": 32, "tile_rc": 64, "loop_order": "spatial_outer",
                  "parallel": "all", "vector_width": 16, "unroll": 256},
    "unit-tiles": {"tile_oc": 1, "tile_oh": 8, "tile_ow": 1, "tile_rc": 1, "loop_order": "rc_outer",
                   "parallel": "none", "vector_width": 1, "unroll": 0, "num_threads": 1},
    "mixed": {"tile_oc": 4, "tile_oh": 4, "tile_ow": 2, "tile_rc": 8, "parallel": "outer", "vector_width": 4,
              "unroll": 16},
}


CONV_NETS = ["conv", "strided", "dilated", "depthwise", "pointwise", "grouped", "residual", "mbv2"]


@pytest.mark.parametrize("net", CONV_NETS)
@pytest.mark.parametrize("cfg", list(NCHW_CONFIGS))
def test_numerics_match_onnxruntime(pipeline, config, net, cfg):
    pipeline.check_numerics(net, config(**NCHW_CONFIGS[cfg]))


def test_every_conv_of_the_test_nets_is_scheduled(pipeline, config, structure):
    for net in CONV_NETS:
        after = pipeline.schedule(pipeline.fused(net), [TileConv2d(config())])
        convs = sorted(n for n in prim_funcs(after) if "conv2d" in n)
        assert convs and structure.scheduled_by(after, "TileConv2d") == convs, net


def test_unscheduled_pipeline_matches_too(pipeline):
    """The reference the schedules are compared against: the plain fused build is right."""
    pipeline.check_numerics("residual", None)


def test_rows_split_one_band_per_thread_when_the_input_outweighs_the_weights(pipeline, config, structure):
    """With 2 threads, a conv whose input outweighs its weights gives each thread one band of output rows
    (all output channels), the knob's loop order inside the band: the next conv, split alike, reads the
    rows this thread wrote. One thread, or a conv whose weights outweigh its input, keeps the knob's
    parallel loop."""
    before = pipeline.fused("wide_map")  # 8 -> 16 channels, 16x16, 3x3

    def loops(**overrides):
        after = pipeline.schedule(before, [TileConv2d(config(**overrides))])
        return structure.loops_of(_conv_func(after), "conv2d_nchw_update")

    banded = loops()
    # (batch, oh.p) parallel, then oc_outer's oc.o (16 / 8), oh.q (16 rows / 2), ow.o (16 / 8), ...
    assert banded[:4] == [(2, "parallel"), (2, "serial"), (8, "serial"), (2, "serial")]
    assert loops(num_threads=1)[:2] == [(32, "parallel"), (2, "serial")]  # (batch, oc.o, oh.o), ow.o
    assert loops(loop_order="spatial_outer")[:4] == [(2, "parallel"), (8, "serial"), (2, "serial"), (2, "serial")]
    assert loops(parallel="none")[0] == (1, "serial")
    pipeline.check_numerics("wide_map", config())
    pipeline.check_numerics("wide_map", config(layout="NCHWc", pack=8, loop_order="rc_outer"))
    heavy = structure.loops_of(_conv_func(pipeline.schedule(pipeline.fused("conv"), [TileConv2d(config())])),
                               "conv2d_nchw_update")
    assert heavy[0] == (40, "parallel")  # 12 -> 20 channels at 10x10: weights 2160 floats, input 1728
