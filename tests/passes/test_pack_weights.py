"""PackWeights: 4- and 2-bit weights stored two and four per byte, decoded inside the kernels; the packed
module computes exactly the integers of the unpacked one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from hwnas.errors import InvalidConfigError
from hwnas.passes.pack_weights import PackWeights, choose_packing, pack, unpack
from hwnas.passes.quantize import QuantizeModule, QuantSpec, quantization_info, quantize_input, quantize_weights
from hwnas.ir import lower
from hwnas.ir import analysis


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [8, 6, 4, 2])
@pytest.mark.parametrize("axis", [0, 1])
def test_packing_is_exact_at_the_layer_bits(bits, symmetric, axis):
    rng = np.random.default_rng(bits + 10 * axis)
    w = rng.standard_normal((6, 5, 3, 3) if axis == 0 else (7, 6)) + (0.0 if symmetric else 0.4)
    q, _ = quantize_weights(w, bits, axis=axis, symmetric=symmetric)
    choice = choose_packing(q, axis)
    if bits > 4:
        assert choice is None  # 8- and 6-bit layers stay one weight per byte
        return
    assert choice is not None and choice[0] == bits
    assert choice[1] == ("signed" if symmetric else "offset")
    data = pack(q, *choice, axis)
    per_channel = q.shape[axis] if choice[1] == "offset" else 0
    assert data.dtype == np.uint8 and data.size == -(-q.size * bits // 8) + per_channel
    assert np.array_equal(unpack(data, q.shape, *choice, axis), q)


def test_packing_refuses_what_does_not_fit():
    with pytest.raises(InvalidConfigError, match="fit"):
        pack(np.array([[7, -8, 3]], dtype=np.int8), 2, "signed", 0)
    with pytest.raises(InvalidConfigError, match="widths"):
        PackWeights(widths=(3,))
    assert choose_packing(np.zeros((2, 3), dtype=np.float32), 0) is None


class Block(nn.Module):
    """Stem, depthwise, residual, pooling, classifier: every kind of packed kernel (conv, depthwise, dense)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1, groups=8), nn.ReLU6(), nn.Conv2d(8, 16, 1))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.dw(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def block_mod(tmp_path_factory):
    path = lower.export_onnx(Block().eval(), (1, 3, 10, 10), tmp_path_factory.mktemp("pack") / "block.onnx")
    return lower.to_relax(lower.load_onnx(path))


@pytest.mark.parametrize("spec, expected", [
    (QuantSpec(weight_bits=4), [[4, "signed"]] * 4),
    (QuantSpec(weight_bits=2, activation_bits=16, symmetric=False), [[2, "offset"]] * 4),
    (QuantSpec(weight_bits=8, overrides={"depthwise": 2, "last": 4, "first": 6}), [[2, "signed"], [4, "signed"]]),
])
def test_packed_module_computes_the_same_integers(block_mod, spec, expected):
    q = QuantizeModule(spec=spec)(block_mod)
    p = PackWeights()(q)
    info = quantization_info(p)
    assert info["packed_weights"] == expected
    # the weights now take their packed bytes (plus a zero point per channel in the offset mode)
    saved = analysis.param_bytes(q) - analysis.param_bytes(p)
    assert saved == quantization_info(q)["weight_bytes_stored"] - info["weight_bytes_stored"] > 0
    stored_int8 = [c for c in _consts(p) if c.dtype == np.int8 and c.ndim in (2, 4)]
    assert len(stored_int8) == 4 - len(expected)
    target = tvm.target.Target({"kind": "llvm"})
    outs = []
    for mod in (q, p):
        vm = relax.VirtualMachine(lower.compile_module(lower.fuse(mod), target), tvm.cpu())
        xs = np.random.default_rng(1).standard_normal((3, 1, 3, 10, 10))
        outs.append([vm["main"](tvm.runtime.tensor(quantize_input(x, info["input_scale"],
                                                                  info["activation_bits"]))).numpy() for x in xs])
    assert all(np.array_equal(a, b) for a, b in zip(*outs))
    assert np.abs(outs[0][0]).max() > 0


def _consts(mod) -> list[np.ndarray]:
    found = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: found.append(e.value.numpy()) if isinstance(e, tvm.ir.GenericConst) else None)
    return found


def test_float_and_int8_modules_are_left_alone(block_mod):
    assert PackWeights()(block_mod).script() == block_mod.script()
    q8 = QuantizeModule(spec=QuantSpec(weight_bits=8))(block_mod)
    p8 = PackWeights()(q8)
    assert "packed_weights" not in quantization_info(p8)
    assert analysis.param_bytes(p8) == analysis.param_bytes(q8)
