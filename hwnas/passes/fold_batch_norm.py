"""FoldBatchNorm: fold an inference-mode batch norm into the convolution before it.

``batch_norm(conv2d(x, W) [+ bias])`` with constant parameters computes, per
output channel ``c``, ``a[c] * (conv + bias)[c] + b[c]`` with
``a = gamma / sqrt(var + eps)`` and ``b = beta - a * mean``; the pass replaces
it by ``conv2d(x, W * a[c]) + (a * bias + b)``, one convolution and one bias
add, which :class:`~hwnas.passes.quantize.QuantizeModule` turns into integer
arithmetic (a batch norm left standing runs in float between two integer
layers). Run it on the imported module, before quantization.

PyTorch's TorchScript ONNX exporter (``hwnas``'s own export) already folds a
batch norm that follows a convolution in eval mode; this pass does the same
for ONNX files from elsewhere (other exporters, ``--onnx`` models). It folds
only when the convolution (and the bias add) feed nothing but the batch norm,
the convolution is NCHW/OIHW with a constant weight, and the batch norm
normalises axis 1 in inference mode; anything else is left as it is, or, with
``FoldBatchNorm(scale_shift=True)`` (the CPU target's packed layout), becomes
``x * a + b`` with per-channel constants.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import tvm
from tvm import relax

from hwnas.ir.relax_util import static_shape


def _uses(func) -> Counter:
    """How many times each var is used as an operand in ``func``'s bindings and result."""
    counts: Counter = Counter()

    def visit(expr):
        if isinstance(expr, relax.Call):
            for a in expr.args:
                for field in (a.fields if isinstance(a, relax.Tuple) else [a]):
                    if isinstance(field, relax.Var):
                        counts[field] += 1
        elif isinstance(expr, relax.TupleGetItem) and isinstance(expr.tuple_value, relax.Var):
            counts[expr.tuple_value] += 1

    relax.analysis.post_order_visit(func, visit)
    if isinstance(func.body.body, relax.Var):
        counts[func.body.body] += 1
    return counts


@relax.expr_functor.mutator
class _Folder(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, scale_shift: bool) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self.scale_shift = scale_shift
        self.uses: Counter = Counter()
        self.folded = 0
        self.bn = tvm.ir.Op.get("relax.nn.batch_norm")
        self.conv2d = tvm.ir.Op.get("relax.nn.conv2d")
        self.add = tvm.ir.Op.get("relax.add")
        self.reshape = tvm.ir.Op.get("relax.reshape")

    def _call(self, expr, op):
        """The call ``expr`` (a var) is bound to, if it calls ``op``."""
        if not isinstance(expr, relax.Var):
            return None
        value = self.lookup_binding(expr)
        return value if isinstance(value, relax.Call) and value.op.same_as(op) else None

    def _const(self, expr) -> np.ndarray | None:
        if isinstance(expr, tvm.ir.GenericConst):
            return expr.value.numpy()
        reshaped = self._call(expr, self.reshape)
        if reshaped is not None and isinstance(reshaped.args[0], tvm.ir.GenericConst):
            return reshaped.args[0].value.numpy().reshape([int(v) for v in reshaped.ty.shape.values])
        return None

    def visit_tuple_getitem_(self, op):  # noqa: D102 (the mutator's hook)
        op = super().visit_tuple_getitem_(op)
        if not isinstance(op, relax.TupleGetItem) or op.index != 0:
            return op
        bn = self._call(op.tuple_value, self.bn)
        if bn is None or bool(bn.attrs.training) or int(bn.attrs.axis) != 1:
            return op
        params = [self._const(a) for a in bn.args[1:5]]
        if any(p is None or p.ndim != 1 for p in params):
            return op
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        if not bool(bn.attrs.scale):
            gamma = np.ones_like(mean)
        if not bool(bn.attrs.center):
            beta = np.zeros_like(mean)
        scale = gamma / np.sqrt(var + float(bn.attrs.epsilon))
        folded = self._into_conv(bn.args[0], scale, beta - scale * mean)
        if folded is not None:
            return folded
        x = bn.args[0]
        shape = static_shape(x)
        if not self.scale_shift or shape is None or len(shape) < 2 or shape[1] != scale.size:
            return op
        dtype = str(x.ty.dtype)
        per_channel = [1, scale.size] + [1] * (len(shape) - 2)
        self.folded += 1
        return relax.op.add(relax.op.multiply(x, relax.const(scale.reshape(per_channel).astype(dtype), dtype)),
                            relax.const((beta - scale * mean).reshape(per_channel).astype(dtype), dtype))

    def _into_conv(self, x, scale: np.ndarray, shift: np.ndarray):
        """``conv2d(x', W * scale) + (scale * bias + shift)`` when ``x`` is a conv (plus a bias) that feeds
        nothing but the batch norm; None otherwise."""
        bias = None
        add = self._call(x, self.add)
        if add is not None:
            c = self._const(add.args[1])
            if c is None or self.uses[x] != 1:
                return None
            bias, x = c, add.args[0]
        conv = self._call(x, self.conv2d)
        if conv is None or self.uses[x] != 1 or not isinstance(conv.args[1], tvm.ir.GenericConst):
            return None
        a_ = conv.attrs
        if str(a_.data_layout) != "NCHW" or str(a_.kernel_layout) != "OIHW" or str(a_.out_layout) != "NCHW":
            return None
        w = conv.args[1].value.numpy()
        k = w.shape[0]
        if scale.shape != (k,) or (bias is not None and bias.size != k):
            return None
        shift = shift + (scale * bias.reshape(-1) if bias is not None else 0.0)
        dtype = str(w.dtype)
        new_conv = self.builder_.emit(relax.op.nn.conv2d(
            conv.args[0], relax.const((w * scale.reshape(-1, 1, 1, 1)).astype(dtype), dtype),
            strides=a_.strides, padding=a_.padding, dilation=a_.dilation, groups=int(a_.groups),
            data_layout="NCHW", kernel_layout="OIHW", out_layout="NCHW",
            out_dtype=a_.out_dtype))
        self.folded += 1
        return relax.op.add(new_conv, relax.const(shift.reshape(1, k, 1, 1).astype(dtype), dtype))

    def run(self) -> tvm.IRModule:
        for gv, func in self.mod_.functions_items():
            if isinstance(func, relax.Function):
                self.uses = _uses(func)
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Fold inference-mode batch norms into the convolutions before them (see the module doc).

    ``scale_shift``: a batch norm that cannot be folded (it follows no conv, e.g. DenseNet's pre-activation
    ones after a concatenation) becomes ``x * a + b`` with per-channel constants, elementwise ops that
    fuse with what follows and that a packed layout passes through (``relax.nn.batch_norm`` has no packed
    layout). Off by default: the quantizer keeps such a batch norm as its own float step."""

    def __init__(self, scale_shift: bool = False) -> None:
        self.scale_shift = scale_shift

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        folder = _Folder(mod, self.scale_shift)
        out = folder.run()
        return relax.transform.DeadCodeElimination()(out) if folder.folded else mod
