"""Pad the channels of conv outputs up to a multiple of the NCHWc pack, where that costs little.

A step of :class:`hwnas.passes.ConvertLayoutNCHWc`, run on the NCHW module
before TVM's ``ConvertLayout``. A tensor whose channel count the ``pack``
does not divide gets a smaller channel block (``pack/2`` or ``pack/4``), and
every packed kernel writing it runs with that many vector lanes: FBNet's 72,
184 and 552 channels run at 8 lanes under ``pack`` 16, at about half the
rate of the 16-lane kernels. Here such a conv gets zero output channels up
to the next multiple of ``pack`` when that adds at most :data:`MAX_OVERHEAD`
of its work (72 -> 80, 184 -> 192, 552 -> 560; 24 -> 32 would add a third
and is left alone), and the padded tensor is carried as far as it can go:

* a regular conv (``groups == 1``) reading a padded tensor takes zero weights
  for the extra input channels, so they add nothing to its result; its own
  output is padded by the same rule;
* a depthwise conv reading a padded tensor gets zero filters for the extra
  channels and stays depthwise over all of them;
* elementwise ops keep the padding: unary ones (ReLU, clip, sigmoid, tanh,
  SiLU), a binary op of two tensors padded alike (a residual add), a binary
  op with an operand that does not vary along channels (a scalar bound of
  ReLU6), and one with a per-channel constant (padded with zeros);
* any other use reads ``strided_slice(x, channels 0..C)``: the tensor the
  unpadded graph had, so every op outside the list sees its original shapes.

The padded channels hold finite values (0 after a conv and its bias, then
whatever the elementwise ops make of 0) and meet only zero weights, so the
network's output is unchanged; only the summation order of the kernels that
now run on other blocks differs. A conv whose output is bound outside a
dataflow block, or whose weights are not constants, is left alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from hwnas.ir.relax_util import rewrite_functions, static_shape

#: The largest fraction of extra channels padding may add (72 -> 80 adds 1/9).
MAX_OVERHEAD = 1 / 8

_UNARY = frozenset({"relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.nn.silu"})
_BINARY = frozenset({"relax.add", "relax.subtract", "relax.multiply", "relax.maximum", "relax.minimum"})


def padded_channels(channels: int, multiple: int) -> int:
    """``channels`` rounded up to a multiple of ``multiple`` when that adds at most :data:`MAX_OVERHEAD`,
    else ``channels`` itself."""
    up = -(-channels // multiple) * multiple
    return up if up - channels <= channels * MAX_OVERHEAD else channels


def _pad_axis(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``array`` with zeros appended along ``axis`` up to ``size``."""
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, size - array.shape[axis])
    return np.pad(array, widths)


@mutator
class _PadChannels(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, multiple: int) -> None:
        super().__init__(mod)
        self.multiple = multiple
        #: original var -> (padded var, real channel count)
        self.padded: dict[relax.Var, tuple[relax.Var, int]] = {}

    def _constant(self, arg: relax.Expr) -> np.ndarray | None:
        """The value of ``arg`` when it is a constant, directly, through a binding, or reshaped (the ONNX
        importer's conv bias is ``reshape(bias, (1, C, 1, 1))``)."""
        if isinstance(arg, relax.Var):
            bound = self.lookup_binding(arg)
            arg = arg if bound is None else bound
        if isinstance(arg, tvm.ir.GenericConst):
            return arg.value.numpy()
        if (isinstance(arg, relax.Call) and isinstance(arg.op, tvm.ir.Op) and arg.op.name == "relax.reshape"
                and static_shape(arg) is not None):
            value = self._constant(arg.args[0])
            return None if value is None else value.reshape(static_shape(arg))
        return None

    def _conv(self, call: relax.Call) -> tuple[relax.Expr, int | None] | None:
        attrs = call.attrs
        if [str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)] != ["NCHW", "OIHW", "NCHW"]:
            return None
        data, weight = call.args
        dshape = static_shape(data)
        w = self._constant(weight)
        if dshape is None or len(dshape) != 4 or w is None or w.ndim != 4:
            return None
        groups = int(attrs.groups)
        source = self.padded.get(data)
        if groups > 1:
            depthwise = groups == dshape[1] == w.shape[0] and w.shape[1] == 1
            if source is None or not depthwise:
                return None
            data_new, real = source
            channels = int(static_shape(data_new)[1])
            w, groups, out_real = _pad_axis(w, 0, channels), channels, real
        else:
            out = padded_channels(w.shape[0], self.multiple)
            if source is None and out == w.shape[0]:
                return None
            data_new = data if source is None else source[0]
            if source is not None:
                w = _pad_axis(w, 1, int(static_shape(data_new)[1]))
            out_real = w.shape[0] if out != w.shape[0] else None
            w = _pad_axis(w, 0, out)
        out_dtype = str(attrs.out_dtype) if attrs.out_dtype is not None else ""
        conv = relax.op.nn.conv2d(
            data_new, relax.const(w), strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation,
            groups=groups, data_layout="NCHW", kernel_layout="OIHW", out_layout="NCHW",
            out_dtype=out_dtype if out_dtype not in ("", "void", "None") else None,
        )
        return conv, out_real

    def _binary(self, call: relax.Call) -> tuple[relax.Expr, int] | None:
        sources = [self.padded.get(a) for a in call.args]
        if all(s is not None for s in sources):
            (a, ra), (b, rb) = sources
            if ra != rb or static_shape(a) != static_shape(b):
                return None
            return relax.Call(call.op, [a, b], call.attrs), ra
        side = 0 if sources[0] is not None else 1
        x, real = sources[side]
        other = call.args[1 - side]
        xshape, oshape = static_shape(x), static_shape(other)
        if xshape is None or len(xshape) != 4 or oshape is None or len(oshape) > 4:
            return None
        full = [1] * (4 - len(oshape)) + oshape
        if any(d != 1 for i, d in enumerate(full) if i != 1):
            return None  # the operand varies along more than the channels: keep the original shapes
        if full[1] == 1:  # the same for every channel (a scalar bound of ReLU6), padded ones included
            operand = self.visit_expr(other)
        else:  # per channel: a constant, padded with zeros
            c = self._constant(other)
            if c is None or full[1] != real:
                return None
            operand = relax.const(_pad_axis(c.reshape(full), 1, xshape[1]), str(other.ty.dtype))
        args = [x, operand]
        return relax.Call(call.op, args if side == 0 else args[::-1], call.attrs), real

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802 (TVM's name)
        call = binding.value
        result = None
        if isinstance(binding.var, relax.DataflowVar) and isinstance(call, relax.Call) and isinstance(
                call.op, tvm.ir.Op):
            name = call.op.name
            if name == "relax.nn.conv2d":
                result = self._conv(call)
            elif name in _UNARY and call.args[0] in self.padded:
                x, real = self.padded[call.args[0]]
                result = relax.Call(call.op, [x, *call.args[1:]], call.attrs, call.ty_args), real
            elif name in _BINARY and len(call.args) == 2 and any(a in self.padded for a in call.args):
                result = self._binary(call)
        if result is None:
            super().visit_var_binding_(binding)
            return
        expr, real = result
        new = self.builder_.emit(expr)
        if real is None:  # a conv that reads a padded tensor and writes an unpadded one
            self.set_var_remap(binding.var, new)
            return
        self.padded[binding.var] = (new, real)
        # what other ops read: the original channels (dropped as dead code where nothing does)
        self.set_var_remap(binding.var, self.builder_.emit(relax.op.strided_slice(new, axes=[1], begin=[0],
                                                                                  end=[real])))


def pad_channels(mod: tvm.IRModule, multiple: int) -> tvm.IRModule:
    """``mod`` with the conv outputs padded to ``multiple`` channels where :func:`padded_channels` says so."""
    padder = _PadChannels(mod, multiple)
    out = rewrite_functions(padder, mod)
    if not padder.padded:
        return mod  # nothing to pad: the module as it came
    return relax.transform.DeadCodeElimination()(out)
