"""PackWeights: store sub-8-bit integer weights packed, and unpack them inside the kernels that use them.

Run on a quantized module (after :class:`~hwnas.passes.quantize.QuantizeModule`),
before legalization and fusion. :class:`QuantizeModule` stores every integer
weight one per byte (int8); this pass replaces each ``conv2d`` (NCHW/OIHW) and
2-D ``matmul`` whose int8 weight constant holds exactly in 2 or 4 bits by a
kernel that reads a packed ``uint8`` constant and decodes it in its weight
load:

* layout: the weight flattened in its own order (row-major OIHW, or K x N for
  a dense layer); element ``i`` is in byte ``i // (8 / bits)`` at bit
  ``(i % (8 / bits)) * bits`` (low bits first): 4-bit weights two per byte,
  2-bit weights four per byte;
* ``signed``: the field is the weight in two's complement (sign-extended when
  loaded); this holds the symmetric grids (``-qmax..qmax``);
* ``offset``: the field is ``q - lo[c]`` (unsigned), with the per-channel
  minimum ``lo[c]`` (output channel: axis 0 of a conv weight, axis 1 of a
  dense weight) appended after the data as one int8 byte per channel; this
  holds the asymmetric grids (``2^bits`` levels that need not straddle 0).

The kernel is the one TVM's legalization gives the original call
(``topi.nn.conv`` for ``conv2d``, an int matmul for ``matmul``) applied to a
``w_unpack`` stage that computes the int8 weight from the packed bytes; a
schedule that inlines the stages before the reduction (as
:class:`~hwnas.targets.mcu.schedule_mcu.ScheduleMcu` does) puts the decode in the
weight load, so no unpacked copy of the weight exists at run time. The choice
of bits comes from the values, which makes the packing exact by construction:
a weight is packed at the fewest of :data:`PACK_BITS` bits that represent all of
it (checked by decoding it again); per-channel grids put the extreme codes
in every non-zero channel, so a 4-bit layer packs at 4 bits and an 8-bit or
6-bit layer stays one weight per byte. The ``hwnas.quantization`` record gets
``weight_bytes_stored`` (the quantized weights as now stored) and
``packed_weights`` (``[[bits, mode], ...]`` per packed weight).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import tvm
from tvm import relax, te, tirx, topi

from hwnas.errors import InvalidConfigError
from hwnas.passes.quantize import QUANT_ATTR
from hwnas.ir.relax_util import rewrite_functions

#: the field widths weights may be packed at, fewest first (each divides 8)
PACK_BITS = (2, 4)


def choose_packing(q: np.ndarray, axis: int, widths=PACK_BITS) -> tuple[int, str] | None:
    """(bits, mode) of the tightest exact packing of the int8 weight ``q`` (per-channel along ``axis``),
    or None when no width of ``widths`` holds it."""
    q = np.asarray(q)
    if q.dtype != np.int8 or q.size == 0:
        return None
    moved = np.moveaxis(q.astype(np.int32), axis, 0).reshape(q.shape[axis], -1)
    lo, hi = moved.min(axis=1), moved.max(axis=1)
    for bits in widths:
        if 8 % bits:
            raise InvalidConfigError(f"packed weights need a width that divides 8, got {bits}")
        if lo.min() >= -(1 << (bits - 1)) and hi.max() < (1 << (bits - 1)):
            return bits, "signed"
        if (hi - lo).max() < (1 << bits):
            return bits, "offset"
    return None


def pack(q: np.ndarray, bits: int, mode: str, axis: int) -> np.ndarray:
    """The packed bytes of ``q`` (see the module doc): data, then per-channel minima for ``offset``."""
    q = np.asarray(q, dtype=np.int32)
    per = 8 // bits
    mask = (1 << bits) - 1
    if mode == "signed":
        fields = q & mask
        tail = np.zeros(0, dtype=np.uint8)
    elif mode == "offset":
        shape = [1] * q.ndim
        shape[axis] = q.shape[axis]
        lo = np.moveaxis(q, axis, 0).reshape(q.shape[axis], -1).min(axis=1)
        fields = q - lo.reshape(shape)
        tail = (lo & 0xFF).astype(np.uint8)
    else:
        raise InvalidConfigError(f"unknown packing mode {mode!r}")
    flat = fields.ravel()
    flat = np.concatenate([flat, np.zeros((-len(flat)) % per, dtype=np.int32)])
    data = np.zeros(len(flat) // per, dtype=np.int32)
    for j in range(per):
        data |= (flat[j::per] & mask) << (j * bits)
    out = np.concatenate([data.astype(np.uint8), tail])
    if not np.array_equal(unpack(out, q.shape, bits, mode, axis), q):
        raise InvalidConfigError(f"a weight with values in {q.min()}..{q.max()} does not fit {bits}-bit {mode} fields")
    return out


def unpack(packed: np.ndarray, shape, bits: int, mode: str, axis: int) -> np.ndarray:
    """The int8 weight of ``shape`` that :func:`pack` stored (numpy; the kernels do the same in TIR)."""
    per = 8 // bits
    n = int(np.prod(shape))
    data = np.asarray(packed, dtype=np.int32)
    i = np.arange(n)
    v = (data[i // per] >> ((i % per) * bits)) & ((1 << bits) - 1)
    if mode == "signed":
        half = 1 << (bits - 1)
        v = (v ^ half) - half
        return v.reshape(shape).astype(np.int8)
    nbytes = -(-n // per)
    lo = data[nbytes: nbytes + shape[axis]]
    lo = lo - ((lo & 0x80) << 1)
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]
    return (v.reshape(shape) + lo.reshape(bshape)).astype(np.int8)


def unpack_te(packed: te.Tensor, shape, bits: int, mode: str, axis: int) -> te.Tensor:
    """The ``w_unpack`` stage: the int8 weight of ``shape`` decoded from the packed bytes."""
    per = 8 // bits
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    n = int(np.prod(shape))
    nbytes = -(-n // per)
    strides = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]

    def decode(*idx):
        flat = idx[0] * strides[0]
        for i in range(1, len(idx)):
            flat = flat + idx[i] * strides[i]
        byte = tirx.Cast("int32", packed[flat // per])
        # the field's bit offset as a sum of int32 constants selected by the index's low bits: TVM computes
        # index arithmetic in int64, and a 64-bit shift by a variable is a library call on a 32-bit core
        shift = tirx.const(0, "int32")
        for j in range(per.bit_length() - 1):
            low = tirx.bitwise_and(flat, tirx.const(1 << j, flat.ty.dtype)) == tirx.const(0, flat.ty.dtype)
            shift = shift + tirx.Select(low, tirx.const(0, "int32"), tirx.const(bits << j, "int32"))
        v = tirx.bitwise_and(tirx.RShift(byte, shift), tirx.const(mask, "int32"))
        if mode == "signed":
            v = tirx.bitwise_xor(v, tirx.const(half, "int32")) - tirx.const(half, "int32")
        else:
            lo = tirx.Cast("int32", packed[nbytes + idx[axis]])
            v = v + lo - tirx.bitwise_and(lo, tirx.const(0x80, "int32")) * 2
        return tirx.Cast("int8", v)

    return te.compute(tuple(shape), decode, name="w_unpack")


def _matmul_te(x: te.Tensor, w: te.Tensor, out_dtype: str) -> te.Tensor:
    """``x (M, K) @ w (K, N)`` accumulated in ``out_dtype`` (the block is named ``matmul``, as TVM's)."""
    k = te.reduce_axis((0, w.shape[0]), name="k")
    return te.compute((x.shape[0], w.shape[1]),
                      lambda i, j: te.sum(tirx.Cast(out_dtype, x[i, k]) * tirx.Cast(out_dtype, w[k, j]), axis=k),
                      name="matmul")


@relax.expr_functor.mutator
class _Packer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, widths) -> None:
        super().__init__(mod)
        self.widths = tuple(widths)
        self.conv2d = tvm.ir.Op.get("relax.nn.conv2d")
        self.matmul = tvm.ir.Op.get("relax.matmul")
        #: per packed weight: (elements, bytes before, bytes after, bits, mode)
        self.packed: list[tuple[int, int, int, int, str]] = []

    def _weight(self, expr) -> np.ndarray | None:
        if isinstance(expr, tvm.ir.GenericConst):
            value = expr.value.numpy()
            return value if value.dtype == np.int8 else None
        return None

    def _packed_const(self, q: np.ndarray, axis: int):
        choice = choose_packing(q, axis, self.widths)
        if choice is None:
            return None
        bits, mode = choice
        data = pack(q, bits, mode, axis)  # checks that the bytes decode to q again
        self.packed.append((int(q.size), int(q.size), int(data.size), bits, mode))
        return relax.const(data, "uint8"), bits, mode

    def visit_call_(self, call):  # noqa: D102 (the mutator's hook)
        call = super().visit_call_(call)
        if not isinstance(call, relax.Call):
            return call
        if call.op.same_as(self.conv2d):
            a = call.attrs
            q = self._weight(call.args[1])
            if (q is None or q.ndim != 4 or str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW"
                    or str(a.out_layout) != "NCHW"):
                return call
            found = self._packed_const(q, 0)
            if found is None:
                return call
            const, bits, mode = found
            shape = q.shape
            out_dtype = str(a.out_dtype) or None

            strides, padding, dilation = ([int(v) for v in vs] for vs in (a.strides, a.padding, a.dilation))

            def conv(inp, wp):
                return topi.nn.conv(inp, unpack_te(wp, shape, bits, mode, 0), strides, padding, dilation,
                                    int(a.groups), "NCHW", "OIHW", out_dtype)

            return self.builder_.call_te(conv, call.args[0], const, primfunc_name_hint="conv2d")
        if call.op.same_as(self.matmul):
            q = self._weight(call.args[1])
            x_ty = call.args[0].ty
            if q is None or q.ndim != 2 or not isinstance(x_ty, relax.TensorType) or x_ty.ndim != 2:
                return call
            found = self._packed_const(q, 1)
            if found is None:
                return call
            const, bits, mode = found
            shape = q.shape
            out_dtype = str(call.attrs.out_dtype) or str(call.ty.dtype)
            return self.builder_.call_te(lambda x, wp: _matmul_te(x, unpack_te(wp, shape, bits, mode, 1), out_dtype),
                                         call.args[0], const, primfunc_name_hint="matmul")
        return call


@tvm.transform.module_pass(opt_level=0, name="PackWeights")
class PackWeights:
    """Pack the int8 weights of conv2d/matmul that fit ``widths`` bits (see the module doc)."""

    def __init__(self, widths=PACK_BITS) -> None:
        widths = tuple(widths)
        if not widths or any(isinstance(b, bool) or b not in (1, 2, 4) for b in widths):
            raise InvalidConfigError(f"packed weight widths must be among 1, 2, 4, got {widths!r}")
        self.widths = tuple(sorted(widths))

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        packer = _Packer(mod, self.widths)
        out = rewrite_functions(packer, mod)
        main_gv = out.get_global_var("main")
        attrs = out[main_gv].attrs
        if packer.packed and attrs is not None and QUANT_ATTR in attrs:
            info: dict[str, Any] = json.loads(str(attrs[QUANT_ATTR]))
            saved = sum(before - after for _, before, after, _, _ in packer.packed)
            info["weight_bytes_stored"] = int(info.get("weight_bytes_stored", 0)) - saved
            info["packed_weights"] = [[bits, mode] for _, _, _, bits, mode in packer.packed]
            out[main_gv] = out[main_gv].with_attr(QUANT_ATTR, json.dumps(info))
        return relax.transform.DeadCodeElimination()(out)
