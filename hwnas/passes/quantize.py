"""QuantizeModule: rewrite a float Relax module into integer arithmetic (post-training quantization).

Run on the imported module, before legalization and fusion. After it, the
compiled TIR *is* the integer computation (int8 x int8 -> int32 accumulation,
integer requantization), so a host build and a microcontroller build of the
same module give the same integers.

The scheme (after Jacob et al., "Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, and TFLite's
int8 specification), symmetric everywhere:

* weights of ``conv2d`` (OIHW) and ``matmul`` with a constant weight: per
  output channel, ``w_q = round(w / s_w[c])`` with ``s_w[c] = max|w[c]| / qmax``
  at the layer's weight bit-width (``qmax = 2^(bits-1) - 1``), stored as int8;
* activations: per tensor, ``s = max|x| / 127`` over a calibration batch
  (the float module, compiled for the host, is run on it; every intermediate
  tensor is recorded);
* the accumulator (int32) has the scale ``s_x * s_w[c]``; a bias is added as
  int32 at that scale; ReLU/ReLU6 clips are folded into the requantization
  bounds; requantization to int8 is ``(acc * M[c] + 2^(S-1)) >> S`` in int64
  with ``M[c] = round(s_x s_w[c] / s_out * 2^S)``, then a clip and a cast;
* residual ``add`` and ``concat``: the int8 inputs rescaled to the output
  scale the same way; ``mean``: an int32 sum requantized with ``1/n`` folded into ``M``;
  shape-only ops (reshape, permute, squeeze, ...) and clips pass int8 through;
* the network input becomes an int8 parameter and the output an int8 tensor;
  their scales are in the function attribute ``hwnas.quantization`` (JSON):
  ``{"input_scale": s_in, "output_scale": s_out, ...}`` (``x_q =
  clip(round(x / s_in))``, ``y = y_q * s_out``);
* any other operator runs in float: its int8 inputs are dequantized first and
  its output is quantized again where an integer consumer needs it.

Bit-widths are per layer (:class:`QuantSpec`), so other targets can make them a
knob; 8-bit activations are what is implemented here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tvm
from tvm import relax

from hwnas.errors import InvalidConfigError

#: the function attribute that carries the input/output scales (JSON)
QUANT_ATTR = "hwnas.quantization"
#: calibration sources :func:`calibration_batch` knows
CALIBRATION_SOURCES = ("digits", "normal")
#: ops that only move int8 values (the scale passes through)
_SHAPE_OPS = frozenset({"relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims",
                        "relax.flatten", "relax.nn.max_pool2d"})


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """Bit-widths: ``weight_bits`` for every layer (an int) or per layer (a tuple, in graph order;
    layers beyond its end take its last value), ``activation_bits`` for every tensor."""

    weight_bits: int | tuple[int, ...] = 8
    activation_bits: int = 8

    def __post_init__(self) -> None:
        bits = (self.weight_bits,) if isinstance(self.weight_bits, int) else tuple(self.weight_bits)
        if not bits or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8 for b in bits):
            raise InvalidConfigError(f"weight bit-widths must be integers in 2..8, got {self.weight_bits!r}")
        if self.activation_bits != 8:
            raise InvalidConfigError(f"only 8-bit activations are implemented, got {self.activation_bits!r}")
        object.__setattr__(self, "weight_bits", bits[0] if len(bits) == 1 else bits)

    def weight_bits_of(self, layer: int) -> int:
        if isinstance(self.weight_bits, int):
            return self.weight_bits
        return self.weight_bits[min(layer, len(self.weight_bits) - 1)]


def calibration_batch(input_shape: Sequence[int], *, source: str = "digits", count: int = 32,
                      seed: int = 0) -> np.ndarray:
    """``count`` float32 inputs of ``input_shape`` (batch 1) for calibration.

    ``digits``: scikit-learn's bundled digits (8x8 grey), standardised, resized
    (bilinear) to the input's height and width and repeated over its channels,
    as the ``train`` accuracy evaluator feeds them; ``normal``: standard normal
    noise drawn with ``seed``.
    """
    shape = tuple(int(d) for d in input_shape)
    if source not in CALIBRATION_SOURCES:
        raise InvalidConfigError(f"unknown calibration source {source!r}; known: {', '.join(CALIBRATION_SOURCES)}")
    if count < 1:
        raise InvalidConfigError(f"calibration needs at least one input, got count={count}")
    rng = np.random.default_rng(seed)
    if source == "normal" or len(shape) != 4:
        if source == "digits":
            raise InvalidConfigError(f"digits calibration needs an NCHW image input, got shape {shape}")
        return rng.standard_normal((count, *shape[1:])).astype(np.float32)
    import torch
    from sklearn.datasets import load_digits
    from torch.nn import functional as F

    images = np.asarray(load_digits().images, dtype=np.float64)[:, None]
    images = (images - images.mean()) / images.std()
    pick = rng.permutation(len(images))[:count]
    x = torch.from_numpy(images[pick].astype(np.float32))
    x = F.interpolate(x, size=shape[2:], mode="bilinear", align_corners=False)
    return x.expand(-1, shape[1], -1, -1).contiguous().numpy()


def quantization_info(mod) -> dict[str, Any] | None:
    """The ``hwnas.quantization`` record of ``main`` (None for a float module)."""
    attrs = mod["main"].attrs
    if attrs is None or QUANT_ATTR not in attrs:
        return None
    return json.loads(str(attrs[QUANT_ATTR]))


# --------------------------------------------------------------------------- calibration


def _tensor_vars(func) -> list:
    """Bound vars of ``func``'s body whose value is a float tensor, in binding order."""
    out = []
    for block in func.body.blocks:
        for b in block.bindings:
            ty = b.var.ty
            if isinstance(ty, relax.TensorType) and str(ty.dtype).startswith("float") and ty.shape is not None:
                out.append(b.var)
    return out


def calibrate(mod, batch: np.ndarray, wanted: set | None = None) -> dict[Any, float]:
    """Max |value| over ``batch`` of the input and of the float tensors bound in ``main`` (those in
    ``wanted``, or all), by var.

    The float module, with those tensors as extra outputs, is fused and compiled for the host (no
    constant folding: TVM's FoldConstant compiles every foldable call, seconds per network) and run
    once per input.
    """
    from hwnas.pipeline.lower import compile_module
    from hwnas.util import filtered_native_stderr

    flat = relax.transform.ToNonDataflow()(mod)
    main = flat["main"]
    # ToNonDataflow keeps the bindings in order: the i-th tensor of ``flat`` is the i-th of ``mod``
    pairs = [(o, v) for o, v in zip(_tensor_vars(mod["main"]), _tensor_vars(main))
             if wanted is None or o in wanted]
    originals = [o for o, _ in pairs]
    tensors = [v for _, v in pairs] or [main.body.body]
    probe = relax.Function(main.params, relax.SeqExpr(main.body.blocks, relax.Tuple(tensors)),
                           ret_ty=relax.TupleType([v.ty for v in tensors]), is_pure=True)
    probe = probe.with_attr("global_symbol", "main")
    probe_mod = tvm.IRModule({gv: f for gv, f in flat.functions_items() if gv.name_hint != "main"})
    probe_mod["main"] = probe
    seq = tvm.transform.Sequential([
        relax.transform.Normalize(), relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(), relax.transform.FuseTIR(), relax.transform.DeadCodeElimination()])
    target = tvm.target.Target({"kind": "llvm"})
    with filtered_native_stderr(), target:
        ex = compile_module(seq(probe_mod), target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    ranges = np.zeros(len(tensors) + 1)
    for x in batch:
        x = np.ascontiguousarray(x[None].astype(np.float32))
        outs = vm["main"](tvm.runtime.tensor(x))
        ranges[0] = max(ranges[0], float(np.abs(x).max()))
        for i, o in enumerate(outs):
            ranges[i + 1] = max(ranges[i + 1], float(np.abs(o.numpy()).max()))
    result = {mod["main"].params[0]: float(ranges[0])}
    result.update({v: float(r) for v, r in zip(originals, ranges[1:])})
    return result


# --------------------------------------------------------------------------- the rewrite


@dataclasses.dataclass
class _Value:
    """A rewritten value: float, int (int8, per-tensor ``scale``) or acc (int32, ``scale`` broadcastable)."""

    expr: Any
    kind: str
    scale: Any = None
    #: the original var whose calibrated range sets the scale when this value becomes int8
    src: Any = None
    lo: float = -math.inf
    hi: float = math.inf


#: calls on constants the rewriter evaluates in numpy (the importer's clip bounds, bias reshapes,
#: transposed weights), instead of TVM's FoldConstant, which compiles each of them
_FOLDABLE = {
    "relax.isnan": lambda a, call: np.isnan(a[0]),
    "relax.where": lambda a, call: np.where(a[0], a[1], a[2]),
    "relax.reshape": lambda a, call: a[0].reshape(tuple(int(v) for v in call.args[1].values)),
    "relax.permute_dims": lambda a, call: np.transpose(
        a[0], None if call.attrs.axes is None else [int(i) for i in call.attrs.axes]),
    "relax.add": lambda a, call: a[0] + a[1],
    "relax.subtract": lambda a, call: a[0] - a[1],
    "relax.multiply": lambda a, call: a[0] * a[1],
    "relax.divide": lambda a, call: a[0] / a[1],
    "relax.negative": lambda a, call: -a[0],
    "relax.sqrt": lambda a, call: np.sqrt(a[0]),
}


def _scalar(expr) -> float:
    """The number of a PrimValue / IntImm / FloatImm argument."""
    while hasattr(expr, "value") and not isinstance(expr, (int, float)):
        expr = expr.value
    return float(expr)


def _shape(expr) -> tuple[int, ...]:
    return tuple(int(v) for v in expr.ty.shape.values)


class _Rewriter:
    def __init__(self, mod, ranges: dict[str, float], spec: QuantSpec) -> None:
        self.mod = mod
        self.ranges = ranges
        self.spec = spec
        self.qmax = 2 ** (spec.activation_bits - 1) - 1
        # the other functions (PrimFuncs a fallback call may use) without the float main
        self.bb = relax.BlockBuilder(tvm.IRModule({gv: f for gv, f in mod.functions_items()
                                                   if gv.name_hint != "main"}))
        self.values: dict[Any, _Value] = {}
        self.layer = 0
        self.float_ops: list[str] = []
        #: vars whose value the rewriter folded to a constant
        self.consts: dict[Any, np.ndarray] = {}
        #: vars whose calibrated range the rewrite asked for
        self.requested: set = set()

    def const_array(self, expr) -> np.ndarray | None:
        if isinstance(expr, tvm.ir.GenericConst):
            return expr.value.numpy()
        if isinstance(expr, relax.Var):
            return self.consts.get(expr)
        return None

    def fold(self, var, call) -> bool:
        """Evaluate ``call`` in numpy when it is foldable and its tensor arguments are constants."""
        op = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
        rule = _FOLDABLE.get(op)
        if rule is None:
            return False
        n = 1 if op in ("relax.reshape", "relax.permute_dims", "relax.isnan", "relax.negative", "relax.sqrt") else (
            3 if op == "relax.where" else 2)
        arrays = [self.const_array(a) for a in call.args[:n]]
        if any(a is None for a in arrays):
            return False
        value = np.asarray(rule(arrays, call))
        dtype = str(var.ty.dtype)
        self.consts[var] = value.astype("bool" if dtype == "bool" else dtype)
        return True

    # ---- scales and conversions
    def scale_of(self, var) -> float:
        self.requested.add(var)
        r = self.ranges.get(var, 0.0)
        return (r if r > 0 else 1.0) / self.qmax

    def emit(self, expr):
        return self.bb.emit(expr)

    def const(self, array: np.ndarray, dtype: str):
        return relax.const(np.asarray(array).astype(dtype), dtype)

    def requantize(self, expr, m: np.ndarray, lo: int, hi: int, dtype: str = "int8"):
        """``clip((expr * M + 2^(S-1)) >> S, lo, hi)`` cast to ``dtype``, with ``M = round(m 2^S)``."""
        m = np.asarray(m, dtype=np.float64)
        top = float(m.max()) if m.size else 1.0
        shift = int(min(46, max(1, 30 - math.ceil(math.log2(top))))) if top > 0 else 30
        mq = np.round(m * 2.0**shift).astype(np.int64)
        x = expr if str(expr.ty.dtype) == "int64" else self.emit(relax.op.astype(expr, "int64"))
        x = self.emit(relax.op.multiply(x, self.const(mq, "int64")))
        x = self.emit(relax.op.add(x, self.const(np.int64(1) << np.int64(shift - 1), "int64")))
        x = self.emit(relax.op.right_shift(x, self.const(np.int64(shift), "int64")))
        x = self.emit(relax.op.clip(x, lo, hi))
        return self.emit(relax.op.astype(x, dtype))

    def bounds(self, s: float, lo: float, hi: float) -> tuple[int, int]:
        qlo = -self.qmax - 1 if not math.isfinite(lo) else max(-self.qmax - 1, round(lo / s))
        qhi = self.qmax if not math.isfinite(hi) else min(self.qmax, round(hi / s))
        return int(qlo), int(max(qlo, qhi))

    def as_int(self, v: _Value) -> _Value:
        if v.kind == "int":
            return v
        s = self.scale_of(v.src)
        if v.kind == "acc":
            qlo, qhi = self.bounds(s, v.lo, v.hi)
            expr = self.requantize(v.expr, np.asarray(v.scale) / s, qlo, qhi)
        else:
            x = self.emit(relax.op.divide(v.expr, relax.const(s, "float32")))
            x = self.emit(relax.op.round(x))
            x = self.emit(relax.op.clip(x, -self.qmax - 1, self.qmax))
            expr = self.emit(relax.op.astype(x, "int8"))
        return _Value(expr, "int", s, v.src)

    def as_float(self, v: _Value):
        if v.kind == "float":
            return v.expr
        x = self.emit(relax.op.astype(v.expr, "float32"))
        x = self.emit(relax.op.multiply(x, relax.const(np.asarray(v.scale, dtype=np.float32))))
        if v.kind == "acc" and (math.isfinite(v.lo) or math.isfinite(v.hi)):
            x = self.emit(relax.op.clip(x, v.lo if math.isfinite(v.lo) else -3e38,
                                        v.hi if math.isfinite(v.hi) else 3e38))
        return x

    def arg(self, expr) -> _Value | None:
        if isinstance(expr, relax.Var):
            return self.values.get(expr)
        return None

    # ---- the rules
    def weight_scales(self, w: np.ndarray, axis: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
        qmax = 2 ** (bits - 1) - 1
        other = tuple(i for i in range(w.ndim) if i != axis)
        top = np.abs(w).max(axis=other, keepdims=True).astype(np.float64)
        scale = np.where(top > 0, top, 1.0) / qmax
        wq = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)
        return wq, scale

    def rewrite(self, var, call) -> _Value:
        op = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
        args = list(call.args)
        if op == "relax.nn.conv2d":
            w = self.const_array(args[1])
            a = call.attrs
            x = self.arg(args[0])
            if w is not None and x is not None and str(a.data_layout) == "NCHW" and str(a.kernel_layout) == "OIHW":
                xq = self.as_int(x)
                wq, ws = self.weight_scales(w, 0, self.spec.weight_bits_of(self.layer))
                self.layer += 1
                out = self.emit(relax.op.nn.conv2d(
                    xq.expr, self.const(wq, "int8"), strides=[int(v) for v in a.strides],
                    padding=[int(v) for v in a.padding], dilation=[int(v) for v in a.dilation],
                    groups=int(a.groups), data_layout="NCHW", kernel_layout="OIHW", out_dtype="int32"))
                return _Value(out, "acc", xq.scale * ws.reshape(1, -1, 1, 1), var)
        if op == "relax.matmul":
            w = self.const_array(args[1])
            x = self.arg(args[0])
            if w is not None and w.ndim == 2 and x is not None:
                xq = self.as_int(x)
                wq, ws = self.weight_scales(w, 1, self.spec.weight_bits_of(self.layer))
                self.layer += 1
                out = self.emit(relax.op.matmul(xq.expr, self.const(wq, "int8"), out_dtype="int32"))
                nd = len(_shape(var))
                return _Value(out, "acc", xq.scale * ws.reshape((1,) * (nd - 1) + (-1,)), var)
        if op == "relax.add":
            a, b = self.arg(args[0]), self.arg(args[1])
            ca, cb = self.const_array(args[0]), self.const_array(args[1])
            acc, bias = (a, cb) if a is not None and a.kind == "acc" and cb is not None else (
                (b, ca) if b is not None and b.kind == "acc" and ca is not None else (None, None))
            if acc is not None and not math.isfinite(acc.lo) and not math.isfinite(acc.hi):
                scale = np.broadcast_to(acc.scale, np.broadcast_shapes(np.shape(acc.scale), bias.shape))
                bq = np.round(bias / scale)
                if np.abs(bq).max(initial=0) < 2**31:
                    out = self.emit(relax.op.add(acc.expr, self.const(bq, "int32")))
                else:  # a bias far above the accumulator's range (a tiny input scale): add it in int64
                    wide = self.emit(relax.op.astype(acc.expr, "int64"))
                    out = self.emit(relax.op.add(wide, self.const(np.clip(bq, -2.0**62, 2.0**62), "int64")))
                return _Value(out, "acc", acc.scale, var)
            if a is not None and b is not None and a.kind != "float" and b.kind != "float":
                qa, qb = self.as_int(a), self.as_int(b)
                s = self.scale_of(var)
                ma, mb = qa.scale / s, qb.scale / s
                top = max(ma, mb)
                shift = int(min(46, max(1, 30 - math.ceil(math.log2(top))))) if top > 0 else 30
                xa = self.emit(relax.op.astype(qa.expr, "int64"))
                xa = self.emit(relax.op.multiply(xa, self.const(round(ma * 2**shift), "int64")))
                xb = self.emit(relax.op.astype(qb.expr, "int64"))
                xb = self.emit(relax.op.multiply(xb, self.const(round(mb * 2**shift), "int64")))
                x = self.emit(relax.op.add(xa, xb))
                x = self.emit(relax.op.add(x, self.const(1 << (shift - 1), "int64")))
                x = self.emit(relax.op.right_shift(x, self.const(shift, "int64")))
                x = self.emit(relax.op.clip(x, -self.qmax - 1, self.qmax))
                return _Value(self.emit(relax.op.astype(x, "int8")), "int", s, var)
        clip = self.clip_bounds(op, call)
        if clip is not None:
            lo, hi, source = clip
            x = self.arg(source)
            if x is not None and x.kind == "acc":
                return _Value(x.expr, "acc", x.scale, var, max(x.lo, lo), min(x.hi, hi))
            if x is not None and x.kind == "int":
                qlo, qhi = self.bounds(x.scale, lo, hi)
                return _Value(self.emit(relax.op.clip(x.expr, qlo, qhi)), "int", x.scale, var)
        if op == "relax.mean":
            x = self.arg(args[0])
            axes = call.attrs.axis
            if x is not None and x.kind != "float" and axes is not None:
                xq = self.as_int(x)
                shape = _shape(args[0])
                axes = [int(i) % len(shape) for i in axes]
                n = int(np.prod([shape[i] for i in axes]))
                wide = self.emit(relax.op.astype(xq.expr, "int32"))
                total = self.emit(relax.op.sum(wide, axis=axes,
                                               keepdims=bool(call.attrs.keepdims)))
                return _Value(total, "acc", np.asarray(xq.scale / n), var)
        if op == "relax.concat" and isinstance(args[0], relax.Tuple):
            parts = [self.arg(f) for f in args[0].fields]
            if all(p is not None and p.kind != "float" for p in parts):
                s = self.scale_of(var)
                fields = []
                for p in parts:
                    pq = self.as_int(p)
                    fields.append(self.requantize(pq.expr, np.asarray(pq.scale / s), -self.qmax - 1, self.qmax))
                out = self.emit(relax.op.concat(fields, axis=int(call.attrs.axis)))
                return _Value(out, "int", s, var)
        if op in _SHAPE_OPS:
            x = self.arg(args[0])
            if x is not None and x.kind != "float":
                xq = self.as_int(x)
                out = self.emit(relax.Call(call.op, [xq.expr, *args[1:]], call.attrs, call.ty_args))
                return _Value(out, "int", xq.scale, var)
        return self.fallback(var, call, op)

    def clip_bounds(self, op: str, call) -> tuple[float, float, Any] | None:
        """(lo, hi, clipped input) of a clip-like call (ReLU, clip, max/min with a scalar), else None."""
        if op == "relax.nn.relu":
            return 0.0, math.inf, call.args[0]
        if op == "relax.clip":
            return _scalar(call.args[1]), _scalar(call.args[2]), call.args[0]
        if op == "relax.call_tir" and isinstance(call.args[0], tvm.ir.GlobalVar):
            # TVM's ONNX importer lowers Clip to TOPI maximum/minimum with a scalar bound
            name = call.args[0].name_hint.rstrip("0123456789")
            inner = list(call.args[1].fields) if isinstance(call.args[1], relax.Tuple) else []
            bound = self.const_array(inner[1]) if len(inner) == 2 else None
            if bound is not None and bound.size == 1 and name in ("maximum", "minimum"):
                v = float(bound.reshape(()))
                return (v, math.inf, inner[0]) if name == "maximum" else (-math.inf, v, inner[0])
        return None

    def fallback(self, var, call, op: str) -> _Value:
        """The call as it was, in float, on dequantized inputs."""
        def sub(expr):
            if isinstance(expr, relax.Tuple):
                return relax.Tuple([sub(f) for f in expr.fields])
            if expr in self.consts:
                value = self.consts[expr]
                return relax.const(value, str(value.dtype))
            v = self.arg(expr)
            return self.as_float(v) if v is not None else expr

        if op == "relax.call_tir":
            new = relax.Call(call.op, [call.args[0], sub(call.args[1]), *call.args[2:]], call.attrs, call.ty_args)
        else:
            new = relax.Call(call.op, [sub(a) for a in call.args], call.attrs, call.ty_args)
        self.float_ops.append(op or str(call.op))
        return _Value(self.emit(new), "float", None, var)

    def run(self):
        main = self.mod["main"]
        if len(main.params) != 1:
            raise InvalidConfigError(f"quantization needs a model with one input, got {len(main.params)}")
        param = main.params[0]
        shape = _shape(param)
        x = relax.Var(param.name, relax.TensorType(shape, "int8"))
        s_in = self.scale_of(param)
        self.values[param] = _Value(x, "int", s_in, param)
        with self.bb.function("main", [x], attrs={"num_input": 1}):
            with self.bb.dataflow():
                for block in main.body.blocks:
                    for b in block.bindings:
                        value = b.value
                        if isinstance(value, relax.Call):
                            if not self.fold(b.var, value):
                                self.values[b.var] = self.rewrite(b.var, value)
                        elif isinstance(value, relax.Var) and value in self.values:
                            self.values[b.var] = self.values[value]
                        else:
                            raise InvalidConfigError(
                                f"quantization: unsupported binding {type(value).__name__} for {b.var.name}")
                ret = main.body.body
                result = self.values.get(ret) if isinstance(ret, relax.Var) else None
                if result is None:
                    raise InvalidConfigError("quantization needs a model with one tensor output")
                out_scale = None
                if result.kind != "float":
                    result = self.as_int(result)
                    out_scale = float(result.scale)
                gv = self.bb.emit_output(result.expr)
            self.bb.emit_func_output(gv)
        info = {
            "input_scale": float(s_in),
            "output_scale": out_scale,
            "weight_bits": self.spec.weight_bits,
            "activation_bits": self.spec.activation_bits,
            "layers": self.layer,
            "float_ops": sorted(set(self.float_ops)),
        }
        mod = self.bb.get()
        gvar = mod.get_global_var("main")
        mod[gvar] = mod[gvar].with_attr(QUANT_ATTR, json.dumps(info))
        return relax.transform.DeadCodeElimination()(mod)


@tvm.transform.module_pass(opt_level=0, name="QuantizeModule")
class QuantizeModule:
    """Post-training quantization of ``main`` to integer arithmetic (see the module doc).

    ``calibration``: float inputs (N, ...) matching ``main``'s input (batch 1
    each), e.g. from :func:`calibration_batch`; ``spec``: the bit-widths.
    """

    def __init__(self, calibration: np.ndarray | None = None, *, source: str = "digits", count: int = 16,
                 seed: int = 0, spec: QuantSpec | None = None) -> None:
        if calibration is not None:
            batch = np.asarray(calibration, dtype=np.float32)
            if batch.ndim < 2 or len(batch) == 0:
                raise InvalidConfigError("calibration needs a non-empty batch of inputs")
            self.calibration = batch
        else:
            self.calibration = None
            if source not in CALIBRATION_SOURCES:
                raise InvalidConfigError(
                    f"unknown calibration source {source!r}; known: {', '.join(CALIBRATION_SOURCES)}")
        self.source, self.count, self.seed = source, count, seed
        self.spec = spec or QuantSpec()

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if quantization_info(mod) is not None:
            return mod
        if len(mod["main"].params) != 1:
            raise InvalidConfigError(f"quantization needs a model with one input, got {len(mod['main'].params)}")
        shape = _shape(mod["main"].params[0])
        batch = self.calibration
        if batch is None:
            source = self.source if (self.source != "digits" or len(shape) == 4) else "normal"
            batch = calibration_batch(shape, source=source, count=self.count, seed=self.seed)
        if tuple(batch.shape[1:]) != tuple(shape[1:]):
            raise InvalidConfigError(
                f"calibration inputs have shape {tuple(batch.shape[1:])}, the model takes {shape[1:]}")
        dry = _Rewriter(mod, {}, self.spec)  # which tensors need a range
        dry.run()
        ranges = calibrate(mod, batch, dry.requested)
        return _Rewriter(mod, ranges, self.spec).run()


def quantize_input(x: np.ndarray, scale: float, bits: int = 8) -> np.ndarray:
    """``clip(round(x / scale))`` as int8: the quantized module's input."""
    q = 2 ** (bits - 1) - 1
    return np.clip(np.round(np.asarray(x, dtype=np.float64) / scale), -q - 1, q).astype(np.int8)
