"""torch -> ONNX -> Relax: the import path and its error messages."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from hwnas.errors import HwnasError, ModelImportError, UnsupportedOperatorError
from hwnas.ir import graph, lower


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    ).eval()


def test_export_keeps_the_file_and_imports_with_bound_weights(tmp_path):
    path = lower.export_onnx(small_net(), (1, 3, 16, 16), tmp_path / "m.onnx")
    assert path.is_file() and not (tmp_path / "m.onnx.partial").exists()
    model = lower.load_onnx(path)
    mod = lower.to_relax(model)
    assert [p.name for p in mod["main"].params] == ["input"]  # weights are constants, not inputs
    funcs = lower.prim_funcs(lower.fuse(mod))
    assert any("conv2d" in name for name in funcs)


def test_macs_of_conv_depthwise_and_linear(tmp_path):
    path = lower.export_onnx(small_net(), (1, 3, 16, 16), tmp_path / "m.onnx")
    expected = 16 * 16 * 8 * 3 * 9 + 16 * 16 * 8 * 9 + 8 * 4
    assert graph.count_macs(lower.load_onnx(path)) == expected


def test_missing_file(tmp_path):
    with pytest.raises(ModelImportError, match="ONNX file not found: .*nope.onnx"):
        lower.load_onnx(tmp_path / "nope.onnx")


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not protobuf")
    with pytest.raises(ModelImportError, match="is not a valid ONNX model"):
        lower.load_onnx(bad)


def _model_with(op_type, inputs, outputs, **attrs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node(op_type, inputs, outputs, name="my_node", **attrs)
    return helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_operator_names_operator_and_node(tmp_path):
    model = _model_with("Det", ["x"], ["y"])
    with pytest.raises(UnsupportedOperatorError, match="operator Det of node 'my_node' is not supported"):
        lower.to_relax(model)


def test_custom_domain_operator_is_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("Relu", ["x"], ["y"], name="custom", domain="com.example")
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    with pytest.raises(UnsupportedOperatorError, match=r"operator Relu \(domain com.example\) of node 'custom'"):
        lower.to_relax(model)


def test_symbolic_batch_is_fixed_to_one_but_other_symbols_are_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    assert lower.static_input_shapes(model) == {"x": [1, 4]}
    x2 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "W"])
    model2 = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x2], [y]),
                               opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelImportError, match="symbolic dimension 1 \\(W\\)"):
        lower.static_input_shapes(model2)


def test_errors_are_hwnas_errors_and_builtins():
    assert issubclass(UnsupportedOperatorError, HwnasError)
    assert issubclass(UnsupportedOperatorError, ValueError)
    assert str(UnsupportedOperatorError("x")) == "x"  # no KeyError-style quoting anywhere
