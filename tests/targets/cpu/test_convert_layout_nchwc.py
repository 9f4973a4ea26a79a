"""ConvertLayoutNCHWc: packed layouts in the Relax graph, in the fused TIR, in the build; numerics."""

from __future__ import annotations

import logging

import pytest
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst

from hwnas.errors import InvalidConfigError
from hwnas.targets.cpu.passes import ConvertLayoutNCHWc, cpu_graph_passes
from hwnas.passes.pad_channels import padded_channels
from hwnas.ir.lower import prim_funcs


def _calls(mod) -> list[relax.Call]:
    """Every call in ``main``, in post order."""
    found: list[relax.Call] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call):
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def _op_calls(mod, op_name: str) -> list[relax.Call]:
    return [c for c in _calls(mod) if isinstance(c.op, tvm.ir.Op) and c.op.name == op_name]


def _tir_calls(mod, prefix: str) -> list[relax.Call]:
    return [
        c for c in _op_calls(mod, "relax.call_tir")
        if isinstance(c.args[0], relax.GlobalVar) and c.args[0].name_hint.startswith(prefix)
    ]


def _packed(pipeline, net: str, pack: int):
    return pipeline.relax(net, {"layout": "NCHWc", "pack": pack})


def test_convs_become_packed_tir_with_folded_weights(pipeline):
    before = pipeline.relax("residual")
    assert len(_op_calls(before, "relax.nn.conv2d")) == 2
    after = _packed(pipeline, "residual", 8)
    assert _op_calls(after, "relax.nn.conv2d") == []
    convs = _tir_calls(after, "conv2d_NCHWc")
    assert len(convs) == 2
    for call in convs:
        data, weight = call.args[1].fields
        assert [int(d) for d in data.ty.shape] == [1, 2, 8, 8, 8]  # NCHW8c
        assert isinstance(weight, GenericConst)  # packed at compile time, not at run time
        assert list(weight.value.shape) == [2, 2, 3, 3, 8, 8]  # OIHW8i8o
    # the only layout transforms left: the input into NCHW8c and the output back;
    # nothing bounces to NCHW between the two convs (bias, ReLU and the residual add stay packed)
    transforms = _op_calls(after, "relax.layout_transform")
    assert len(transforms) == 2
    assert not any(isinstance(t.args[0], GenericConst) for t in transforms)


def test_mobilenet_block_stays_packed_through_the_depthwise(pipeline):
    # mbv2: 1x1 expand (8 -> 24), 3x3 depthwise (24), 1x1 project (24 -> 8), residual
    after = _packed(pipeline, "mbv2", 4)
    assert len(_tir_calls(after, "conv2d_NCHWc")) == 2
    (dw,) = _tir_calls(after, "depthwise_conv2d_NCHWc")
    data, weight = dw.args[1].fields
    assert [int(d) for d in data.ty.shape] == [1, 6, 8, 8, 4]  # NCHW4c
    assert isinstance(weight, GenericConst) and list(weight.value.shape) == [6, 1, 3, 3, 4]  # OIHW4o
    assert _op_calls(after, "relax.nn.conv2d") == []
    # the ReLU6s (Clip rewritten to maximum/minimum) run packed; only the input and output are transformed
    assert len(_op_calls(after, "relax.maximum")) == 2
    assert all(len(c.args[0].ty.shape) == 5 for c in _op_calls(after, "relax.maximum"))
    assert len(_op_calls(after, "relax.layout_transform")) == 2


def test_depthwise_chain_is_packed(pipeline):
    # stride 1 then stride 2, 16 channels: both depthwise convs run in NCHW8c
    after = _packed(pipeline, "depthwise", 8)
    assert len(_tir_calls(after, "depthwise_conv2d_NCHWc")) == 2
    assert _op_calls(after, "relax.nn.conv2d") == []


def test_a_stem_conv_writes_the_packed_layout_from_nchw_input(pipeline):
    after = _packed(pipeline, "stem", 8)
    (stem,) = _tir_calls(after, "conv2d_NCHW_NCHWc")
    data, weight = stem.args[1].fields
    assert [int(d) for d in data.ty.shape] == [1, 3, 15, 15]  # the network's input, not transformed
    assert list(weight.value.shape) == [2, 3, 3, 3, 8]  # OIHW8o
    assert [int(d) for d in stem.ty.shape] == [1, 2, 8, 8, 8]  # NCHW8c
    assert len(_tir_calls(after, "conv2d_NCHWc")) == 1
    assert len(_op_calls(after, "relax.layout_transform")) == 1  # the output back to NCHW only


@pytest.mark.parametrize(("net", "pack"), [("grouped", 4), ("odd", 8)])
def test_grouped_convs_and_channels_without_a_block_stay_nchw(pipeline, net, pack):
    # grouped (not depthwise) convs never pack; 6 -> 10 channels: neither 8 nor 4 divides them
    after = _packed(pipeline, net, pack)
    assert _tir_calls(after, "conv2d_NCHWc") == [] and _tir_calls(after, "depthwise_conv2d_NCHWc") == []
    assert _op_calls(after, "relax.layout_transform") == []
    assert all(str(c.attrs.data_layout) == "NCHW" for c in _op_calls(after, "relax.nn.conv2d"))


@pytest.mark.parametrize(
    ("net", "pack", "blocks"),
    [("pointwise", 16, (16, 8)), ("conv", 8, (4, 4)), ("depthwise", 32, (16, 16))],
)
def test_each_tensor_takes_the_largest_block_that_divides_its_channels(pipeline, config, net, pack, blocks):
    # 16 -> 24 channels under pack 16: in NCHW16c, out NCHW8c; 12 -> 20 under pack 8: NCHW4c both;
    # a 16-channel depthwise under pack 32: NCHW16c
    after = _packed(pipeline, net, pack)
    (first, *_) = _tir_calls(after, "conv2d_NCHWc") + _tir_calls(after, "depthwise_conv2d_NCHWc")
    data_block = int(first.args[1].fields[0].ty.shape.values[-1])
    out_block = int(first.ty.shape.values[-1])
    assert (data_block, out_block) == blocks
    pipeline.check_numerics(net, config(layout="NCHWc", pack=pack))


@pytest.mark.parametrize(("channels", "multiple", "padded"),
                         [(72, 16, 80), (184, 16, 192), (552, 16, 560), (24, 16, 24), (20, 8, 20), (36, 8, 40),
                          (64, 16, 64)])
def test_channels_are_padded_only_where_it_adds_little(channels, multiple, padded):
    assert padded_channels(channels, multiple) == padded


def _conv_outputs(mod) -> list[list[int]]:
    convs = _tir_calls(mod, "conv2d_NCHWc") + _tir_calls(mod, "depthwise_conv2d_NCHWc")
    return [[int(d) for d in c.ty.shape.values] for c in convs]


def test_padded_channels_run_in_full_blocks(pipeline, config):
    # 24 -> 72 -> 24 under pack 16: the 72 expanded channels become 80 (NCHW16c) through the
    # depthwise into the projection; 24 (32 would add a third) stays NCHW8c
    assert sorted(_conv_outputs(_packed(pipeline, "expand72", 16))) == [
        [1, 3, 8, 8, 8], [1, 5, 8, 8, 16], [1, 5, 8, 8, 16]]
    # 36 channels under pack 8: 40 through both convs and the residual add; the mean reads a slice
    after = _packed(pipeline, "odd_channels", 8)
    assert _conv_outputs(after) == [[1, 5, 6, 6, 8], [1, 5, 6, 6, 8]]
    assert len(_op_calls(after, "relax.strided_slice")) == 1
    unpadded = tvm.transform.Sequential([ConvertLayoutNCHWc(8, pad=False)])(pipeline.relax("odd_channels"))
    assert _conv_outputs(unpadded) == [[1, 9, 6, 6, 4], [1, 9, 6, 6, 4]]
    pipeline.check_numerics("expand72", config(layout="NCHWc", pack=16, tile_oc=32, tile_rc=16))
    pipeline.check_numerics("odd_channels", config(layout="NCHWc", pack=8))


def test_a_graph_tvm_cannot_convert_is_packed_greedily(pipeline, caplog):
    with caplog.at_level(logging.INFO, logger="hwnas.targets.cpu.convert_layout_nchwc"):
        after = _packed(pipeline, "channel_mean", 8)
    assert "could pack only" in caplog.text
    assert 1 <= len(_tir_calls(after, "conv2d_NCHWc")) < 3


def test_fused_and_compiled_module_use_the_packed_layout(pipeline, config, structure):
    cfg = config(layout="NCHWc", pack=8)
    fused = pipeline.fused("residual", cfg)
    packed = [n for n in prim_funcs(fused) if "conv2d_NCHWc" in n]
    assert len(packed) == 2
    for name in packed:
        shapes = [[int(d) for d in p.shape] for p in prim_funcs(fused)[name].params]
        assert shapes[0] == [1, 2, 8, 8, 8] and shapes[1] == [2, 2, 3, 3, 8, 8]
    after = pipeline.scheduled("residual", cfg)
    assert sorted(packed) == sorted(n for n in structure.scheduled_by(after, "TileConv2d") if "NCHWc" in n)
    text = pipeline.compile(after).as_text()
    assert all(f"call  {name} " in text for name in packed)


def test_graph_passes_for_each_layout():
    assert [p.info.name for p in cpu_graph_passes({"layout": "NCHW", "pack": 8})] == ["FastSigmoid"]
    names = [p.info.name for p in cpu_graph_passes({"layout": "NCHWc", "pack": 16})]
    assert names == ["FoldBatchNorm", "ConvertLayoutNCHWc", "FoldConstant", "EliminateCommonSubexpr", "FastSigmoid"]


def test_batch_norms_after_a_concatenation_stay_packed(pipeline, config):
    """DenseNet's batch norms (after a concatenation, not a conv) become a per-channel scale and shift in
    the packed layout, fused with their ReLU: no layout transform inside the block (DenseNet-121 spent 8 of
    46 ms in such transforms before, each batch norm going back to NCHW and forth), and the output is right."""
    cfg = config(layout="NCHWc", pack=8)
    fused = pipeline.fused("dense_block", cfg)
    names = sorted(prim_funcs(fused))
    assert not [n for n in names if "batch_norm" in n]
    assert len([n for n in names if "layout_transform" in n]) == 1  # the output, back to NCHW
    assert len([n for n in names if "multiply" in n and "add" in n and "relu" in n]) == 2
    pipeline.check_numerics("dense_block", cfg)


@pytest.mark.parametrize("pack", [0, 1, 8.0, True, "8"])
def test_invalid_pack_is_a_clear_error(pack):
    with pytest.raises(InvalidConfigError, match="pack"):
        ConvertLayoutNCHWc(pack)


PACKED_CONFIGS = {
    "pack8": {"layout": "NCHWc", "pack": 8},
    "pack4-odd": {"layout": "NCHWc", "pack": 4, "tile_oc": 32, "tile_oh": 2, "tile_ow": 16, "tile_rc": 2,
                  "loop_order": "rc_outer", "parallel": "outer", "vector_width": 16, "unroll": 16},
    "pack16": {"layout": "NCHWc", "pack": 16, "tile_oc": 64, "tile_ow": 2, "tile_rc": 32,
               "loop_order": "spatial_outer", "parallel": "all", "vector_width": 4, "unroll": 256},
    "pack8-serial": {"layout": "NCHWc", "pack": 8, "tile_oc": 4, "tile_rc": 64, "parallel": "none",
                     "vector_width": 1, "unroll": 0, "num_threads": 1},
}


@pytest.mark.parametrize(
    "net", ["residual", "mbv2", "strided", "dilated", "pointwise", "channel_mean", "depthwise", "stem", "glue"]
)
@pytest.mark.parametrize("cfg", list(PACKED_CONFIGS))
def test_numerics_match_onnxruntime(pipeline, config, net, cfg):
    pipeline.check_numerics(net, config(**PACKED_CONFIGS[cfg]))
