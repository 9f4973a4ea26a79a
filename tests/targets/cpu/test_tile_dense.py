"""TileDense: structure of the scheduled dense/matmul PrimFuncs and numerics after the pipeline."""

from __future__ import annotations

import pytest
import tvm

from hwnas.errors import InvalidConfigError
from hwnas.targets.cpu.passes import TileConv2d, TileDense
from hwnas.ir.lower import prim_funcs


def test_linear_is_tiled_parallel_and_vectorized(pipeline, config, structure):
    before = pipeline.fused("linear")  # Linear(48, 20) + ReLU, Linear(20, 10)
    after = pipeline.schedule(before, [TileDense(config())])
    assert structure.scheduled_by(after, "TileDense") == ["fused_matmul1_add1", "fused_matmul_add_relu"]
    first = prim_funcs(after)["fused_matmul_add_relu"]
    # n 20 by tile_oc 8 -> 5 (parallel: n.o 4 * m.o 1), k 48 by tile_rc 4; n.i is the 5-lane vector
    assert structure.loops_of(first, "matmul_update") == [
        (4, "parallel"), (12, "serial"), (4, "serial"), (1, "serial"), (5, "vectorized")
    ]
    # bias + ReLU under the tile, vectorized
    assert structure.loops_of(first, "compute") == [(4, "parallel"), (1, "serial"), (5, "vectorized")]
    assert structure.loops_of(first, "matmul_init")[0] == (4, "parallel")


def test_tiles_follow_the_config(pipeline, config, structure):
    cfg = config(tile_oc=4, tile_rc=16, loop_order="spatial_outer", parallel="all", vector_width=4)
    after = pipeline.schedule(pipeline.fused("linear"), [TileDense(cfg)])
    loops = structure.loops_of(prim_funcs(after)["fused_matmul_add_relu"], "matmul_update")
    assert loops == [(5, "parallel"), (3, "serial"), (16, "serial"), (1, "serial"), (4, "vectorized")]


def test_batched_matmul_of_activations(pipeline, config, structure):
    after = pipeline.schedule(pipeline.fused("batched"), [TileDense(config())])
    # a 3-D x 2-D linear and a 3-D x 3-D matmul of two activations
    assert structure.scheduled_by(after, "TileDense") == ["fused_matmul_add_relu", "matmul1"]
    loops = structure.loops_of(prim_funcs(after)["matmul1"], "matmul_update")
    assert loops[0] == (80, "parallel") and loops[-1] == (5, "vectorized")


def test_convolutions_are_not_dense(pipeline, config):
    before = pipeline.fused("residual")
    after = pipeline.schedule(before, [TileDense(config())])
    tvm.ir.assert_structural_equal(after, before)


def test_dense_after_tileconv2d_and_configs_differ(pipeline, config):
    before = pipeline.fused("linear")
    a = pipeline.schedule(before, [TileConv2d(config()), TileDense(config())])
    b = pipeline.schedule(before, [TileConv2d(config()), TileDense(config(tile_oc=2))])
    assert a.script() != b.script()


def test_invalid_config_is_a_clear_error(config):
    with pytest.raises(InvalidConfigError, match="loop_order"):
        TileDense(config(loop_order="k_first"))


DENSE_CONFIGS = {
    "default": {},
    "wide": {"tile_oc": 64, "tile_oh": 8, "tile_rc": 64, "loop_order": "rc_outer", "parallel": "all",
             "vector_width": 16, "unroll": 256},
    "narrow": {"tile_oc": 1, "tile_rc": 1, "loop_order": "spatial_outer", "parallel": "none",
               "vector_width": 1, "unroll": 0, "num_threads": 1},
}


@pytest.mark.parametrize("net", ["linear", "batched"])
@pytest.mark.parametrize("cfg", list(DENSE_CONFIGS))
def test_numerics_match_onnxruntime(pipeline, config, net, cfg):
    pipeline.check_numerics(net, config(**DENSE_CONFIGS[cfg]))
