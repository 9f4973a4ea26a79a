"""ScheduleInjective: the glue functions get parallel/vectorized loops; numerics after the pipeline."""

from __future__ import annotations

import pytest
import tvm
from tvm import s_tir

from hwnas.targets.cpu.passes import ScheduleInjective, TileConv2d, TileDense
from hwnas.ir.lower import prim_funcs


def _kinds(func) -> set[str]:
    """The loop kinds used anywhere in ``func``."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    kinds = {0: "serial", 1: "parallel", 2: "vectorized", 3: "unrolled"}
    found: set[str] = set()
    pending = list(sch.get_child_blocks(sch.get_sblock("root")))
    while pending:
        block = pending.pop()
        found.update(kinds.get(int(sch.get(lp).kind), "other") for lp in sch.get_loops(block))
        pending.extend(sch.get_child_blocks(block))
    return found


def _glue(pipeline, config, **changes):
    cfg = config(**changes)
    before = pipeline.schedule(pipeline.fused("glue"), [TileConv2d(cfg), TileDense(cfg)])
    return before, pipeline.schedule(before, [ScheduleInjective(cfg)])


def test_glue_functions_get_parallel_and_vector_loops(pipeline, config, structure):
    before, after = _glue(pipeline, config)
    glue = sorted(n for n in prim_funcs(after) if "conv2d" not in n)
    assert glue and structure.scheduled_by(after, "ScheduleInjective") == glue
    funcs = prim_funcs(after)
    # 16x16x16 pooled outputs: large enough for a parallel loop
    assert "parallel" in _kinds(funcs["max_pool2d"])
    # elementwise glue: vectorized innermost loop
    elementwise = [n for n in glue if "sigmoid" in n or "multiply" in n]
    assert elementwise and all("vectorized" in _kinds(funcs[n]) for n in elementwise)
    # the conv function scheduled before is kept as it was
    conv = [n for n in funcs if "conv2d" in n]
    for name in conv:
        tvm.ir.assert_structural_equal(funcs[name], prim_funcs(before)[name])


def test_single_thread_means_no_parallel_loop(pipeline, config):
    _, after = _glue(pipeline, config, num_threads=1, vector_width=8)
    for name, func in prim_funcs(after).items():
        if "conv2d" not in name:
            assert "parallel" not in _kinds(func), name


def test_nothing_to_do_without_threads_or_vectors(pipeline, config):
    before, after = _glue(pipeline, config, num_threads=1, vector_width=1)
    tvm.ir.assert_structural_equal(after, before)


def test_layout_transforms_iterate_over_their_output(pipeline, config, structure):
    after = pipeline.scheduled("residual", config(layout="NCHWc", pack=8))
    transforms = [n for n in prim_funcs(after) if "layout_transform" in n]
    assert len(transforms) == 2  # into NCHW8c before the first conv, back after the last
    for name in transforms:
        func = prim_funcs(after)[name]
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        (block,) = [b for b in sch.get_child_blocks(sch.get_sblock("root"))]
        stmt = sch.get(block)
        analyzer = tvm.sym.Analyzer()
        for iv in stmt.iter_vars:
            analyzer.bind(iv.var, iv.dom)
        # the store index is the block's own iterators, in order: contiguous vector stores
        store = [str(analyzer.simplify(i)) for i in stmt.body.indices]
        assert store == [str(analyzer.simplify(iv.var)) for iv in stmt.iter_vars], name
        assert "vectorized" in _kinds(func)


GLUE_CONFIGS = {
    "default": {},
    "one-thread": {"num_threads": 1, "vector_width": 16},
    "no-vectors": {"num_threads": 2, "vector_width": 1},
}


@pytest.mark.parametrize("cfg", list(GLUE_CONFIGS))
def test_numerics_match_onnxruntime(pipeline, config, cfg):
    pipeline.check_numerics("glue", config(**GLUE_CONFIGS[cfg]))


def test_packed_glue_numerics(pipeline, config):
    pipeline.check_numerics("glue", config(layout="NCHWc", pack=4, vector_width=8))


def test_packed_pool_reduces_a_vector_of_channels_at_a_time():
    """A max-pool over NCHW16c: the window loops above the channel lane, which is vectorized; numerics exact."""
    import numpy as np
    from tvm import te, topi

    from hwnas.targets.cpu.schedule_injective import vectorize_channel_block

    data = te.placeholder((1, 4, 33, 33, 16), name="data")
    pool = topi.nn.pool2d(data, (3, 3), (2, 2), (1, 1), (0, 0, 0, 0), "max", layout="NCHW16c")
    sch = s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([data, pool])}))
    block = sch.get_sblock(pool.op.name)
    assert vectorize_channel_block(sch, block, parallel=True, vector_width=8)
    loops = [sch.get(lp) for lp in sch.get_loops(block)]
    # parallel outer loop, the two window loops, then the 16 lanes split into 2 x 8 with the 8 vectorized
    assert [int(lp.extent) for lp in loops[-4:]] == [3, 3, 2, 8]
    assert int(loops[-1].kind) == 2 and int(loops[0].kind) == 1
    x = np.random.default_rng(0).standard_normal((1, 4, 33, 33, 16)).astype("float32")
    out = np.empty((1, 4, 16, 16, 16), "float32")
    lib = tvm.compile(sch.mod, "llvm")
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(x, dev), tvm.runtime.tensor(out, dev)]
    lib["main"](*args)
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    np.testing.assert_array_equal(args[1].numpy(), windows.max(axis=(-2, -1)))
