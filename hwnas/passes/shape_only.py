"""Lowering for what needs only the kernels' shapes: a target's passes with the value computations left out.

A kernel-level latency estimate (:mod:`hwnas.cost.kernel_model`) reads each
kernel's workload record (:func:`hwnas.ir.workloads.extract`: loop extents,
bytes, MACs, the fused epilogue), which depends on the shapes and dtypes of
the module, never on the values of its weights or on the ranges calibration
measures. Two passes of the compile path spend most of its time on values:

* TVM's ``FoldConstant`` compiles and runs every call whose arguments are all
  constants (a weight's layout transform, Winograd's weight transform, the
  packing of quantized weights): seconds per network;
* :class:`~hwnas.passes.quantize.QuantizeModule` compiles the float network
  and runs it on calibration inputs to find each tensor's range.

:func:`shape_only` swaps them for :class:`FoldConstantShapes` (the same
folding, with the result a constant of the right shape and dtype filled with
seeded random values instead of computed ones) and no calibration (each
tensor a seeded range in [1, 32], distinct, so no two scales are equal by
accident where calibrated ones would differ). The module that comes out has the kernels of the
compile path, without running any of them: the same records call for call
(``tests/cost/test_kernel_model.py``), but for one value-dependent choice of
quantization: a layer whose calibrated input scale is tiny adds its bias in
int64 instead of int32 (a few bytes of its weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from hwnas.ir.relax_util import rewrite_functions, static_shape

#: calls never folded (they call out of the module or carry effects)
_NOT_FOLDED = ("relax.call_packed", "relax.call_dps_packed", "relax.call_builtin_with_ctx", "relax.call_pure_packed",
               "relax.call_tir_inplace", "relax.print", "relax.assert_op", "relax.null_value")


def _random(shape: list[int], dtype: str, rng: np.random.Generator) -> np.ndarray:
    """Seeded filler of a folded constant: no special value (0, 1) the simplifier could exploit, no two alike."""
    if dtype.startswith(("float", "bfloat")):
        return rng.uniform(0.25, 0.75, size=shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    info = np.iinfo(np.dtype(dtype))
    return rng.integers(max(info.min, -8), min(info.max, 7) + 1, size=shape).astype(dtype)


@mutator
class _ShapeFolder(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, seed: int) -> None:
        super().__init__(mod)
        self.rng = np.random.default_rng(seed)
        self.call_tir = tvm.ir.Op.get("relax.call_tir")
        self.folded = 0

    def _constant(self, expr) -> bool:
        if isinstance(expr, relax.Var):
            try:
                expr = self.lookup_binding(expr)
            except Exception:  # a parameter, or a var bound outside this function
                return False
        return isinstance(expr, tvm.ir.GenericConst)

    def _tensors(self, call: relax.Call) -> list | None:
        """The tensor arguments of a foldable call (None: not a call this pass folds)."""
        if not isinstance(call.op, tvm.ir.Op) or call.op.name in _NOT_FOLDED:
            return None
        if call.op.same_as(self.call_tir):
            args = call.args[1]
            return list(args.fields) if isinstance(args, relax.Tuple) else None
        return [a for a in call.args if isinstance(getattr(a, "ty", None), relax.TensorType)]

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's name)
        call = super().visit_call_(call)
        if not isinstance(call, relax.Call):
            return call
        tensors = self._tensors(call)
        shape = static_shape(call) if isinstance(call.ty, relax.TensorType) else None
        if not tensors or shape is None or call.ty.dtype in ("", "void") or not all(map(self._constant, tensors)):
            return call
        self.folded += 1
        return relax.const(_random(shape, str(call.ty.dtype), self.rng), str(call.ty.dtype))


@tvm.transform.module_pass(opt_level=0, name="FoldConstantShapes")
class FoldConstantShapes:
    """``FoldConstant`` without computing: a call of constants becomes a constant of its shape (seeded values)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        # a folded call can make the next one foldable in the same visit (bindings are visited in order)
        return rewrite_functions(_ShapeFolder(mod, self.seed), mod)


def _is_fold_constant(p) -> bool:
    info = getattr(p, "info", None)
    return info is not None and getattr(info, "name", None) == "FoldConstant"


def shape_only(passes: Sequence) -> list:
    """``passes`` with TVM's ``FoldConstant`` replaced by :class:`FoldConstantShapes` and every
    :class:`~hwnas.passes.quantize.QuantizeModule` set to skip calibration (seeded ranges)."""
    from hwnas.passes.quantize import QuantizeModule

    out = []
    for p in passes:
        if _is_fold_constant(p):
            p = FoldConstantShapes()
        elif isinstance(p, QuantizeModule):
            p = QuantizeModule(p.calibration, source=p.source, count=p.count, seed=p.seed, spec=p.spec,
                               calibrated=False)
        out.append(p)
    return out
