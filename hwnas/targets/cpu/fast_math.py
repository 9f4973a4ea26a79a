"""FastSigmoid: sigmoid and SiLU through a vectorizable exponential.

TVM legalizes ``relax.sigmoid`` to ``1 / (1 + exp(-x))`` with the ``exp``
intrinsic, which LLVM lowers to one scalar ``expf`` call per element even in
a vectorized loop (x86 has no vector exp and no vector math library is
linked). EfficientNet's and MobileNetV3's SiLU epilogues spent most of their
time there. This pass rewrites every float32 ``relax.sigmoid`` and
``relax.nn.silu`` into a ``call_te`` of TVM's ``topi.fast_exp`` (range
reduction to ``2^n * e^r`` and a polynomial in ``r``: plain arithmetic that
vectorizes): at most 4.1e-6 relative error against ``exp`` over
``[-87, 87]``, inputs clamped to float32's range of ``exp`` outside it.

The rewritten calls are elementwise PrimFuncs, so fusion still merges them
into the producing conv's epilogue. Run it after :class:`ConvertLayoutNCHWc`
(which propagates layouts through the high-level ``relax.sigmoid`` only).
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx, topi
from tvm.relax.expr_functor import PyExprMutator, mutator

from hwnas.ir.relax_util import rewrite_functions

SIGMOID = "fast_sigmoid"
SILU = "fast_silu"


def sigmoid_compute(x: te.Tensor) -> te.Tensor:
    """``1 / (1 + fast_exp(-x))``."""
    e = topi.fast_exp(te.compute(x.shape, lambda *i: -x(*i), name="neg"))
    one = tirx.const(1.0, x.dtype)
    return te.compute(x.shape, lambda *i: one / (one + e(*i)), name="T_sigmoid")


def silu_compute(x: te.Tensor) -> te.Tensor:
    """``x * sigmoid(x)``."""
    s = sigmoid_compute(x)
    return te.compute(x.shape, lambda *i: x(*i) * s(*i), name="T_silu")


@mutator
class _FastSigmoid(PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.ops = {tvm.ir.Op.get("relax.sigmoid"): (sigmoid_compute, SIGMOID),
                    tvm.ir.Op.get("relax.nn.silu"): (silu_compute, SILU)}

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's name)
        call = super().visit_call_(call)
        rule = self.ops.get(call.op) if isinstance(call.op, tvm.ir.Op) else None
        x = call.args[0] if rule is not None else None
        if rule is None or not isinstance(x.ty, relax.TensorType) or x.ty.dtype != "float32":
            return call
        compute, name = rule
        return self.builder_.call_te(compute, x, primfunc_name_hint=name)


@tvm.transform.module_pass(opt_level=0, name="FastSigmoid")
class FastSigmoid:
    """Rewrite float32 ``relax.sigmoid`` and ``relax.nn.silu`` to ``fast_exp``-based PrimFuncs."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_FastSigmoid(mod), mod)
