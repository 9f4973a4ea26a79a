"""Small helpers the Relax-level passes share."""

from __future__ import annotations

import tvm
from tvm import relax


def static_shape(expr: relax.Expr) -> list[int] | None:
    """The shape of a tensor expression as ints, or None if it is not static."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    dims = []
    for d in ty.shape.values:
        if not isinstance(d, tvm.tirx.IntImm):
            return None
        dims.append(int(d.value))
    return dims


def rewrite_functions(mutator, mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with every Relax function visited by ``mutator`` (a ``PyExprMutator`` built on ``mod``)."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()
