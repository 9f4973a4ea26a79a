"""QuantizeModule: the int8 rewrite is integer TIR, calibrated on data, and close to fp32 ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from hwnas.errors import InvalidConfigError
from hwnas.passes.quantize import (
    QuantizeModule,
    QuantSpec,
    calibration_batch,
    quantization_info,
    quantize_input,
)
from hwnas.ir import lower


class Tiny(nn.Module):
    """Stem conv, an inverted residual (depthwise), a concat of two branches, pooling and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.block = nn.Sequential(
            nn.Conv2d(8, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU6(),
            nn.Conv2d(24, 24, 3, 1, 1, groups=24, bias=False), nn.BatchNorm2d(24), nn.ReLU6(),
            nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8),
        )
        self.a = nn.Conv2d(8, 8, 3, 1, 1)
        self.b = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block(x)
        x = torch.cat([torch.relu(self.a(x)), self.b(x)], 1)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def tiny_model(seed: int = 0) -> nn.Module:
    """A Tiny with random batch-norm statistics, so that every layer matters."""
    torch.manual_seed(seed)
    net = Tiny()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = lower.export_onnx(tiny_model(), (1, 3, 16, 16), tmp_path_factory.mktemp("q") / "tiny.onnx")
    mod = lower.to_relax(lower.load_onnx(path))
    q = QuantizeModule(calibration_batch((1, 3, 16, 16), count=32))(mod)
    return path, mod, q


def _ops(func) -> list:
    out = []
    for block in func.body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call):
                out.append(b.value)
    return out


def test_quantized_module_is_integer_arithmetic(tiny):
    _, _, q = tiny
    info = quantization_info(q)
    assert info["float_ops"] == [] and info["layers"] == 7 and info["weight_bits"] == 8
    main = q["main"]
    assert str(main.params[0].ty.dtype) == "int8" and str(main.ret_ty.dtype) == "int8"
    convs = [c for c in _ops(main) if isinstance(c.op, tvm.ir.Op) and c.op.name in ("relax.nn.conv2d", "relax.matmul")]
    assert len(convs) == 7
    for c in convs:
        assert [str(a.ty.dtype) for a in c.args] == ["int8", "int8"]
        assert str(c.ty.dtype) == "int32"
    # no float tensor anywhere in main
    for c in _ops(main):
        assert not str(c.ty.dtype).startswith("float"), c.op


def test_weights_are_per_channel_int8(tiny):
    _, _, q = tiny
    convs = [c for c in _ops(q["main"]) if isinstance(c.op, tvm.ir.Op) and c.op.name == "relax.nn.conv2d"]
    w = convs[0].args[1].value.numpy()
    assert w.dtype == np.int8
    # each output channel uses the full range: symmetric per-channel scales
    assert (np.abs(w.reshape(w.shape[0], -1)).max(axis=1) == 127).all()


def test_int8_output_is_close_to_fp32_onnxruntime(tiny):
    path, _, q = tiny
    info = quantization_info(q)
    ex = lower.compile_module(lower.fuse(q), tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    sess = ort.InferenceSession(str(path))
    xs = calibration_batch((1, 3, 16, 16), count=16, seed=7)  # not the calibration images
    errors, agree = [], 0
    for x in xs:
        ref = sess.run(None, {"input": x[None]})[0]
        y = vm["main"](tvm.runtime.tensor(quantize_input(x[None], info["input_scale"]))).numpy()
        got = y.astype(np.float32) * info["output_scale"]
        errors.append(np.abs(got - ref).max() / np.abs(ref).max())
        agree += int(got.argmax() == ref.argmax())
    # measured 2026-11-27: max error 0.85% of the output range, top-1 agreement 16/16
    assert max(errors) < 0.05, errors
    assert agree >= 14


def test_lower_weight_bits_are_coarser(tiny):
    _, mod, _ = tiny
    cal = calibration_batch((1, 3, 16, 16), count=8)
    q4 = QuantizeModule(cal, spec=QuantSpec(weight_bits=(8, 4)))(mod)
    info = quantization_info(q4)
    assert info["weight_bits"] == (8, 4) or info["weight_bits"] == [8, 4]
    convs = [c for c in _ops(q4["main"]) if isinstance(c.op, tvm.ir.Op) and c.op.name == "relax.nn.conv2d"]
    assert np.abs(convs[0].args[1].value.numpy()).max() == 127
    assert np.abs(convs[1].args[1].value.numpy()).max() == 7


def test_unknown_operators_stay_float(tmp_path):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.sigmoid(self.c(x))

    torch.manual_seed(0)
    path = lower.export_onnx(Odd().eval(), (1, 3, 8, 8), tmp_path / "odd.onnx")
    mod = lower.to_relax(lower.load_onnx(path))
    q = QuantizeModule(source="normal", count=4)(mod)
    info = quantization_info(q)
    assert info["output_scale"] is None and "relax.sigmoid" in info["float_ops"]
    ex = tvm.compile(q, target=tvm.target.Target({"kind": "llvm"}))
    x = calibration_batch((1, 3, 8, 8), source="normal", count=1, seed=3)
    ref = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(quantize_input(x, info["input_scale"])))
    assert np.abs(got.numpy() - ref).max() < 0.05


def test_calibration_sources():
    d = calibration_batch((1, 3, 12, 12), count=5)
    assert d.shape == (5, 3, 12, 12) and d.dtype == np.float32 and np.allclose(d[:, 0], d[:, 2])
    n = calibration_batch((1, 7), source="normal", count=3)
    assert n.shape == (3, 7)
    with pytest.raises(InvalidConfigError, match="unknown calibration source"):
        calibration_batch((1, 3, 8, 8), source="imagenet")
    with pytest.raises(InvalidConfigError, match="NCHW"):
        calibration_batch((1, 7), source="digits")


@pytest.mark.parametrize("spec", [dict(weight_bits=1), dict(weight_bits=9), dict(weight_bits=()),
                                  dict(activation_bits=12), dict(overrides={"middle": 4}),
                                  dict(overrides={"first": 1})])
def test_bad_specs_are_refused(spec):
    with pytest.raises(InvalidConfigError):
        QuantSpec(**spec)


def test_nb201_is_integer_from_input_to_output(tmp_path):
    """NB201's average pools (cell edges, reduction shortcuts) and its head batch norm (after a residual add,
    so nothing to fold it into) run as integer kernels; the result stays close to fp32 ONNX Runtime."""
    from hwnas.arch import get_space

    space = get_space("nb201", channels=8, cells_per_stage=1)
    genome = [4, 4, 4, 3, 2, 1]  # avg_pool_3x3 on the first three edges, then conv 3x3, conv 1x1, skip
    torch.manual_seed(0)
    net = space.build(genome).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(-1.5, 1.5)  # negative scales too
            m.bias.data.uniform_(-0.5, 0.5)
    path = lower.export_onnx(net, space.input_shape(genome), tmp_path / "nb201.onnx")
    q = QuantizeModule()(lower.to_relax(lower.load_onnx(path)))
    info = quantization_info(q)
    assert info["float_ops"] == []
    assert not any(str(c.ty.dtype).startswith("float") for c in _ops(q["main"]) if hasattr(c.ty, "dtype"))
    vm = relax.VirtualMachine(lower.compile_module(lower.fuse(q), tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    sess = ort.InferenceSession(str(path))
    errors, agree = [], 0
    xs = calibration_batch(space.input_shape(genome), count=16, seed=7)
    for x in xs:
        ref = sess.run(None, {"input": x[None]})[0]
        got = vm["main"](tvm.runtime.tensor(quantize_input(x[None], info["input_scale"]))).numpy()
        got = got.astype(np.float32) * info["output_scale"]
        errors.append(np.abs(got - ref).max() / np.abs(ref).max())
        agree += int(got.argmax() == ref.argmax())
    # measured 2026-11-27: max error 2.5% of the output range, top-1 agreement 16/16
    assert max(errors) < 0.06, errors
    assert agree >= 14
