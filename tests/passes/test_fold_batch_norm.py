"""FoldBatchNorm: a batch norm after a convolution becomes the convolution's weights and bias (checked
against ONNX Runtime), so the quantized network is integer there."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from hwnas.passes.fold_batch_norm import FoldBatchNorm
from hwnas.passes.quantize import QuantizeModule, calibration_batch, quantization_info, quantize_input
from hwnas.ir import lower


def _conv_bn_onnx(path, *, reuse_conv: bool = False) -> str:
    """Conv -> BatchNorm -> Relu -> Conv(+bias) -> BatchNorm, written as ONNX with the batch norms unfolded
    (as exporters other than PyTorch's TorchScript one leave them); ``reuse_conv`` also adds the first
    conv's output to the result, so its batch norm must stay."""
    rng = np.random.default_rng(0)
    c = 8

    def init(name, a):
        return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)

    inits = [init("w1", rng.standard_normal((c, 3, 3, 3))), init("g1", rng.uniform(0.5, 1.5, c)),
             init("b1", rng.standard_normal(c)), init("m1", 0.2 * rng.standard_normal(c)),
             init("v1", rng.uniform(0.5, 1.5, c)), init("w2", 0.3 * rng.standard_normal((c, c, 1, 1))),
             init("c2", rng.standard_normal(c)), init("g2", rng.uniform(-1.5, 1.5, c)),
             init("b2", rng.standard_normal(c)), init("m2", 0.2 * rng.standard_normal(c)),
             init("v2", rng.uniform(0.5, 1.5, c))]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["a", "g1", "b1", "m1", "v1"], ["b"], epsilon=1e-5),
             helper.make_node("Relu", ["b"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "c2"], ["d"]),
             helper.make_node("BatchNormalization", ["d", "g2", "b2", "m2", "v2"],
                              ["e" if reuse_conv else "output"], epsilon=1e-3)]
    if reuse_conv:
        nodes.append(helper.make_node("Add", ["e", "a"], ["output"]))
    graph = helper.make_graph(nodes, "convbn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, c, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def _batch_norms(mod) -> int:
    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e) if isinstance(e, relax.Call) and isinstance(
        e.op, tvm.ir.Op) and e.op.name == "relax.nn.batch_norm" else None)
    return len(found)


def _run(mod, x):
    vm = relax.VirtualMachine(lower.compile_module(lower.fuse(mod), tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("reuse_conv", [False, True])
def test_folded_network_equals_onnxruntime(tmp_path, reuse_conv):
    path = _conv_bn_onnx(tmp_path / "convbn.onnx", reuse_conv=reuse_conv)
    mod = lower.to_relax(lower.load_onnx(path))
    assert _batch_norms(mod) == 2
    folded = FoldBatchNorm()(mod)
    assert _batch_norms(folded) == (1 if reuse_conv else 0)  # a conv output used elsewhere keeps its norm
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(path).run(None, {"input": x})[0]
    got = _run(folded, x)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_a_batch_norm_that_cannot_fold_becomes_a_scale_and_shift(tmp_path):
    """With ``scale_shift`` the batch norm kept for a conv output used elsewhere becomes ``x * a + b``."""
    path = _conv_bn_onnx(tmp_path / "convbn.onnx", reuse_conv=True)
    mod = lower.to_relax(lower.load_onnx(path))
    folded = FoldBatchNorm(scale_shift=True)(mod)
    assert _batch_norms(folded) == 0
    ops = []
    relax.analysis.post_order_visit(folded["main"], lambda e: ops.append(e.op.name) if isinstance(
        e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None)
    assert ops.count("relax.multiply") == 1 and ops.count("relax.nn.conv2d") == 2
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(path).run(None, {"input": x})[0]
    got = _run(folded, x)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_quantized_network_is_integer_after_the_fold(tmp_path):
    path = _conv_bn_onnx(tmp_path / "convbn.onnx")
    mod = lower.to_relax(lower.load_onnx(path))
    q = QuantizeModule(calibration_batch((1, 3, 8, 8), source="normal", count=32))(mod)
    info = quantization_info(q)
    assert info["float_ops"] == [] and info["layer_kinds"] == ["conv", "conv"]
    sess = ort.InferenceSession(path)
    for seed in range(4):
        x = np.random.default_rng(10 + seed).standard_normal((1, 3, 8, 8)).astype(np.float32)
        ref = sess.run(None, {"input": x})[0]
        got = _run(q, quantize_input(x, info["input_scale"])).astype(np.float32) * info["output_scale"]
        assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
