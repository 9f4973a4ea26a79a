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
  at the layer's weight bit-width (``qmax = 2^(bits-1) - 1``), stored as int8
  (one weight per byte whatever its bit-width; :class:`~hwnas.passes.pack_weights.PackWeights`
  packs the 4- and 2-bit ones afterwards);
  ``symmetric=False`` puts the sub-8-bit layers on an asymmetric per-channel
  grid (``s_w = (max - min) / (2^bits - 1)``, zero point ``z = round(-min / s_w)``;
  the stored integer is ``code - z``, which fits int8 up to 7 bits; 8-bit layers
  stay symmetric, as the zero-point range would not fit int8);
* activations: per tensor, ``s = max|x| / qmax`` (127 for 8 bits, 32767 for 16
  bits: int16 tensors, int64 accumulators) over a calibration batch
  (the float module, compiled for the host, is run on it; every intermediate
  tensor is recorded);
* the accumulator (int32) has the scale ``s_x * s_w[c]``; a bias is added as
  int32 at that scale; ReLU/ReLU6 clips are folded into the requantization
  bounds; requantization to int8 is ``(acc * M[c] + 2^(S-1)) >> S`` in int64
  with ``M[c] = round(s_x s_w[c] / s_out * 2^S)``, then a clip and a cast;
* residual ``add`` and ``concat``: the int8 inputs rescaled to the output
  scale the same way; ``mean``: an int32 sum requantized with ``1/n`` folded into ``M``;
  ``avg_pool2d``: the window sums (a depthwise conv with a kernel of ones) requantized with
  ``1/count`` per output position; an inference ``batch_norm`` not after a conv (after a
  residual add, say): a per-channel integer affine map (scale ``s_x * gamma / sqrt(var + eps)``
  and an integer bias), requantized like a conv's accumulator;
  shape-only ops (reshape, permute, squeeze, ...) and clips pass int8 through;
* the network input becomes an int8 parameter and the output an int8 tensor;
  their scales are in the function attribute ``hwnas.quantization`` (JSON):
  ``{"input_scale": s_in, "output_scale": s_out, ...}`` (``x_q =
  clip(round(x / s_in))``, ``y = y_q * s_out``);
* a batch norm after a convolution is first folded into the convolution's
  weights and bias (:class:`~hwnas.passes.fold_batch_norm.FoldBatchNorm`);
* any other operator runs in float: its int8 inputs are dequantized first and
  its output is quantized again where an integer consumer needs it.

Bit-widths are per layer (:class:`QuantSpec`: a global default, overrides for
the groups ``first``, ``last`` and ``depthwise`` layers, or an explicit list),
so targets make them knobs; a layer whose bit-width is None stays float (its
input is dequantized). ``activation_bits=None`` is weight-only quantization
for accuracy: every weight is rounded to its grid but stored and computed in
float32 (no saving in bytes or time).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tvm
from tvm import relax

from hwnas.errors import InvalidConfigError
from hwnas.hss.quant import DEFAULT, FLOAT, GROUP_KNOBS
from hwnas.ir.lower import compile_module
from hwnas.passes.fold_batch_norm import FoldBatchNorm
from hwnas.util import filtered_native_stderr

#: the function attribute that carries the input/output scales (JSON)
QUANT_ATTR = "hwnas.quantization"
#: calibration sources :func:`calibration_batch` knows
CALIBRATION_SOURCES = ("digits", "normal")
#: ops that only move int8 values (the scale passes through)
_SHAPE_OPS = frozenset({"relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims",
                        "relax.flatten", "relax.nn.max_pool2d"})


#: layer groups a :class:`QuantSpec` may override, in precedence order (the first that applies wins)
LAYER_GROUPS = ("first", "last", "depthwise")
#: weight and activation bit-widths the pass implements (None: float)
WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8)
ACTIVATION_BITS = (8, 16, None)


def _check_bits(bits, what: str) -> None:
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or bits not in WEIGHT_BITS):
        raise InvalidConfigError(f"{what} must be an integer in 2..8 or None (float), got {bits!r}")


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """Bit-widths of a quantized network.

    ``weight_bits``: for every layer (an int; None keeps the layers float) or per layer (a tuple, in
    graph order; layers beyond its end take its last value); ``overrides``: group -> bits for the
    groups of :data:`LAYER_GROUPS` (``first``/``last``: the first/last conv or dense layer;
    ``depthwise``: convs with one input channel per group), which win over ``weight_bits``;
    ``activation_bits``: 8 or 16 (integer tensors) or None (float: weights rounded only);
    ``symmetric``: False puts sub-8-bit weights on an asymmetric per-channel grid.
    """

    weight_bits: int | None | tuple[int | None, ...] = 8
    activation_bits: int | None = 8
    overrides: Any = ()
    symmetric: bool = True

    def __post_init__(self) -> None:
        bits = self.weight_bits if isinstance(self.weight_bits, (tuple, list)) else (self.weight_bits,)
        if not bits:
            raise InvalidConfigError("weight bit-widths: an empty list")
        for b in bits:
            _check_bits(b, "weight bit-widths")
        if self.activation_bits not in ACTIVATION_BITS or isinstance(self.activation_bits, bool):
            raise InvalidConfigError(f"activation bit-width must be 8, 16 or None (float), got {self.activation_bits!r}")
        overrides = dict(self.overrides)
        for group, b in overrides.items():
            if group not in LAYER_GROUPS:
                raise InvalidConfigError(f"unknown layer group {group!r}; groups: {', '.join(LAYER_GROUPS)}")
            _check_bits(b, f"bit-width of the {group} layers")
        object.__setattr__(self, "weight_bits", bits[0] if len(bits) == 1 else tuple(bits))
        object.__setattr__(self, "overrides", tuple((g, overrides[g]) for g in LAYER_GROUPS if g in overrides))

    @classmethod
    def from_config(cls, hw: Mapping[str, Any]) -> QuantSpec | None:
        """The spec of a hardware config's quantization knobs (:mod:`hwnas.hss.quant`); None when the
        config quantizes nothing (float weights everywhere and float activations)."""
        def bits(v):
            return None if v == FLOAT else int(v)

        overrides = {g: bits(hw[k]) for g, k in GROUP_KNOBS.items() if hw.get(k, DEFAULT) != DEFAULT}
        weight = bits(hw.get("weight_bits", 8))
        act = hw.get("activation_bits", 8)
        act = None if act == FLOAT else int(act)
        if act is None and weight is None and all(b is None for b in overrides.values()):
            return None
        return cls(weight_bits=weight, activation_bits=act, overrides=overrides,
                   symmetric=hw.get("weight_scheme", "symmetric") == "symmetric")

    def key(self) -> str:
        """A JSON text naming the numerics (for caches of the deployed network's accuracy)."""
        return json.dumps({"quantization": {"weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
                                            "overrides": dict(self.overrides), "symmetric": self.symmetric}},
                          sort_keys=True)

    def weight_bits_of(self, layer: int) -> int | None:
        """The bit-width of ``layer`` before group overrides."""
        if not isinstance(self.weight_bits, tuple):
            return self.weight_bits
        return self.weight_bits[min(layer, len(self.weight_bits) - 1)]

    def layer_bits(self, kinds: Sequence[str]) -> tuple[int | None, ...]:
        """Bits of each layer of a network whose layers (in graph order) are ``kinds``
        (``conv``, ``depthwise``, ``dense``)."""
        overrides = dict(self.overrides)
        out = []
        for i, kind in enumerate(kinds):
            groups = {"first": i == 0, "last": i == len(kinds) - 1, "depthwise": kind == "depthwise"}
            bits = self.weight_bits_of(i)
            for g in LAYER_GROUPS:
                if groups[g] and g in overrides:
                    bits = overrides[g]
                    break
            out.append(bits)
        return tuple(out)


def quantize_weights(w: np.ndarray, bits: int, *, axis: int = 0,
                     symmetric: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (along ``axis``) integer weights and their scales: ``w ~= q * scale``.

    Symmetric: ``q`` in ``-qmax..qmax`` with ``qmax = 2^(bits-1) - 1`` and
    ``scale = max|w| / qmax``; the error is at most ``scale / 2``. Asymmetric
    (``bits < 8``): ``2^bits`` levels spanning ``[min(w, 0), max(w, 0)]`` per channel,
    ``q = code - zero_point``; the error is at most ``scale / 2`` with
    ``scale = (max - min) / (2^bits - 1)``. ``q`` is int8.
    """
    _check_bits(bits, "weight bit-width")
    if bits is None:
        raise InvalidConfigError("quantize_weights needs a bit-width, got None")
    w = np.asarray(w, dtype=np.float64)
    other = tuple(i for i in range(w.ndim) if i != axis % max(w.ndim, 1))
    if symmetric or bits >= 8:
        qmax = 2 ** (bits - 1) - 1
        top = np.abs(w).max(axis=other, keepdims=True)
        scale = np.where(top > 0, top, 1.0) / qmax
        return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8), scale
    levels = 2**bits - 1
    lo = np.minimum(w.min(axis=other, keepdims=True), 0.0)
    hi = np.maximum(w.max(axis=other, keepdims=True), 0.0)
    scale = np.where(hi > lo, hi - lo, 1.0) / levels
    zero = np.round(-lo / scale)
    code = np.clip(np.round(w / scale) + zero, 0, levels)
    return (code - zero).astype(np.int8), scale


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
    def __init__(self, mod, ranges: dict[str, float], spec: QuantSpec,
                 layer_bits: Sequence[int | None] | None = None) -> None:
        self.mod = mod
        self.ranges = ranges
        self.spec = spec
        #: bits per layer (None: a dry run, which finds the layers and the tensors to calibrate)
        self.layer_bits = None if layer_bits is None else tuple(layer_bits)
        #: activations: None (float), else integer tensors of ``adtype`` accumulated in ``accdtype``
        self.abits = spec.activation_bits
        self.qmax = 2 ** ((self.abits or 8) - 1) - 1
        self.adtype = "int16" if self.abits == 16 else "int8"
        self.accdtype = "int64" if self.abits == 16 else "int32"
        #: bits of the fixed-point multipliers: |acc| * M must stay below 2^63 (int16 x int8 sums reach ~2^36)
        self.mbits = 22 if self.abits == 16 else 30
        #: the kind of each conv/dense layer met (``conv``, ``depthwise``, ``dense``), in graph order
        self.kinds: list[str] = []
        #: per quantized layer: (weights, bytes as stored, bits)
        self.weights: list[tuple[int, int, int]] = []
        #: id of a float/acc value -> (the value, its integer version)
        self.int_of: dict[int, tuple[_Value, _Value]] = {}
        # the other functions (PrimFuncs a fallback call may use) without the float main
        self.bb = relax.BlockBuilder(tvm.IRModule({gv: f for gv, f in mod.functions_items()
                                                   if gv.name_hint != "main"}))
        self.values: dict[Any, _Value] = {}
        self.float_ops: list[str] = []
        #: vars whose value the rewriter folded to a constant
        self.consts: dict[Any, np.ndarray] = {}
        #: vars whose calibrated range the rewrite asked for
        self.requested: set = set()
        #: batch norms rewritten to integer: tuple var -> (the value of field 0, the call)
        self.norms: dict[Any, tuple[_Value, Any]] = {}

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

    def requantize(self, expr, m: np.ndarray, lo: int, hi: int, dtype: str | None = None):
        """``clip((expr * M + 2^(S-1)) >> S, lo, hi)`` cast to ``dtype``, with ``M = round(m 2^S)``."""
        m = np.asarray(m, dtype=np.float64)
        top = float(np.abs(m).max()) if m.size else 1.0
        shift = int(min(46, max(1, self.mbits - math.ceil(math.log2(top))))) if top > 0 else self.mbits
        mq = np.round(m * 2.0**shift).astype(np.int64)
        x = expr if str(expr.ty.dtype) == "int64" else self.emit(relax.op.astype(expr, "int64"))
        x = self.emit(relax.op.multiply(x, self.const(mq, "int64")))
        x = self.emit(relax.op.add(x, self.const(np.int64(1) << np.int64(shift - 1), "int64")))
        x = self.emit(relax.op.right_shift(x, self.const(np.int64(shift), "int64")))
        x = self.emit(relax.op.clip(x, lo, hi))
        return self.emit(relax.op.astype(x, dtype or self.adtype))

    def bounds(self, s: float, lo: float, hi: float) -> tuple[int, int]:
        qlo = -self.qmax - 1 if not math.isfinite(lo) else max(-self.qmax - 1, round(lo / s))
        qhi = self.qmax if not math.isfinite(hi) else min(self.qmax, round(hi / s))
        return int(qlo), int(max(qlo, qhi))

    def as_int(self, v: _Value) -> _Value:
        if v.kind == "int":
            return v
        done = self.int_of.get(id(v))
        if done is not None:  # requantized once, whatever the number of consumers
            return done[1]
        out = self._as_int(v)
        self.int_of[id(v)] = (v, out)  # keeps ``v`` alive, so its id stays its own
        return out

    def _as_int(self, v: _Value) -> _Value:
        s = self.scale_of(v.src)
        if v.kind == "acc":
            qlo, qhi = self.bounds(s, v.lo, v.hi)
            expr = self.requantize(v.expr, np.asarray(v.scale) / s, qlo, qhi)
        else:
            x = self.emit(relax.op.divide(v.expr, relax.const(s, "float32")))
            x = self.emit(relax.op.round(x))
            x = self.emit(relax.op.clip(x, -self.qmax - 1, self.qmax))
            expr = self.emit(relax.op.astype(x, self.adtype))
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
    def next_layer(self, kind: str) -> int | None:
        """Record a conv/dense layer of ``kind``; its bit-width (8 in a dry run; None: float)."""
        i = len(self.kinds)
        self.kinds.append(kind)
        if self.layer_bits is None:
            return 8
        return self.layer_bits[i] if i < len(self.layer_bits) else self.layer_bits[-1]

    def weight_only(self, var, call, index: int, w: np.ndarray, bits: int, axis: int) -> _Value:
        """The call in float with its weight rounded to ``bits`` (weight-only quantization)."""
        wq, ws = quantize_weights(w, bits, axis=axis, symmetric=self.spec.symmetric)
        self.weights.append((int(w.size), int(w.size) * np.dtype(str(call.args[index].ty.dtype)).itemsize, bits))
        args = list(call.args)
        args[index] = self.const(wq * ws, str(args[index].ty.dtype))
        new = relax.Call(call.op, [self.as_float(self.arg(a)) if self.arg(a) is not None else a for a in args],
                         call.attrs, call.ty_args)
        return _Value(self.emit(new), "float", None, var)

    def rewrite(self, var, call) -> _Value:
        op = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
        args = list(call.args)
        if op == "relax.nn.conv2d":
            w = self.const_array(args[1])
            a = call.attrs
            x = self.arg(args[0])
            if w is not None and x is not None and str(a.data_layout) == "NCHW" and str(a.kernel_layout) == "OIHW":
                groups = int(a.groups)
                bits = self.next_layer("depthwise" if groups > 1 and w.shape[1] == 1 else "conv")
                if bits is None:
                    return self.fallback(var, call, op)
                if self.abits is None:
                    return self.weight_only(var, call, 1, w, bits, 0)
                xq = self.as_int(x)
                wq, ws = quantize_weights(w, bits, axis=0, symmetric=self.spec.symmetric)
                self.weights.append((int(w.size), int(w.size), bits))
                out = self.emit(relax.op.nn.conv2d(
                    xq.expr, self.const(wq, "int8"), strides=[int(v) for v in a.strides],
                    padding=[int(v) for v in a.padding], dilation=[int(v) for v in a.dilation],
                    groups=groups, data_layout="NCHW", kernel_layout="OIHW", out_dtype=self.accdtype))
                return _Value(out, "acc", xq.scale * ws.reshape(1, -1, 1, 1), var)
        if op == "relax.matmul":
            w = self.const_array(args[1])
            x = self.arg(args[0])
            if w is not None and w.ndim == 2 and x is not None:
                bits = self.next_layer("dense")
                if bits is None:
                    return self.fallback(var, call, op)
                if self.abits is None:
                    return self.weight_only(var, call, 1, w, bits, 1)
                xq = self.as_int(x)
                wq, ws = quantize_weights(w, bits, axis=1, symmetric=self.spec.symmetric)
                self.weights.append((int(w.size), int(w.size), bits))
                out = self.emit(relax.op.matmul(xq.expr, self.const(wq, "int8"), out_dtype=self.accdtype))
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
                if str(acc.expr.ty.dtype) == "int64":
                    out = self.emit(relax.op.add(acc.expr, self.const(np.clip(bq, -2.0**62, 2.0**62), "int64")))
                elif np.abs(bq).max(initial=0) < 2**31:
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
                shift = int(min(46, max(1, self.mbits - math.ceil(math.log2(top))))) if top > 0 else self.mbits
                xa = self.emit(relax.op.astype(qa.expr, "int64"))
                xa = self.emit(relax.op.multiply(xa, self.const(round(ma * 2**shift), "int64")))
                xb = self.emit(relax.op.astype(qb.expr, "int64"))
                xb = self.emit(relax.op.multiply(xb, self.const(round(mb * 2**shift), "int64")))
                x = self.emit(relax.op.add(xa, xb))
                x = self.emit(relax.op.add(x, self.const(1 << (shift - 1), "int64")))
                x = self.emit(relax.op.right_shift(x, self.const(shift, "int64")))
                x = self.emit(relax.op.clip(x, -self.qmax - 1, self.qmax))
                return _Value(self.emit(relax.op.astype(x, self.adtype)), "int", s, var)
        if op == "relax.nn.avg_pool2d":
            x = self.arg(args[0])
            pooled = self.avg_pool(var, call, x) if x is not None and x.kind != "float" else None
            if pooled is not None:
                return pooled
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
                wide = self.emit(relax.op.astype(xq.expr, self.accdtype))
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

    def avg_pool(self, var, call, x: _Value) -> _Value | None:
        """An NCHW average pooling of an integer tensor: a depthwise conv with a kernel of ones (the window
        sums, in the accumulator type) whose scale divides by each output's window count (padding excluded
        unless ``count_include_pad``); None when it does not apply (``ceil_mode``, other layouts)."""
        a = call.attrs
        if bool(a.ceil_mode) or str(a.layout) != "NCHW" or str(a.out_layout) != "NCHW":
            return None
        (kh, kw), (sh, sw), (dh, dw) = ([int(v) for v in t] for t in (a.pool_size, a.strides, a.dilation))
        pt, pl, pb, pr = [int(v) for v in a.padding]
        xq = self.as_int(x)
        _, c, h, w = _shape(xq.expr)
        _, _, p, q = _shape(var)

        def counts(n_out, n_in, k, stride, dil, before):
            start = np.arange(n_out) * stride - before
            taps = start[:, None] + np.arange(k)[None, :] * dil
            return ((taps >= 0) & (taps < n_in)).sum(axis=1)

        if bool(a.count_include_pad):
            count = np.full((p, q), float(kh * kw))
        else:
            count = np.outer(counts(p, h, kh, sh, dh, pt), counts(q, w, kw, sw, dw, pl)).astype(np.float64)
        if (count <= 0).any():
            return None
        total = self.emit(relax.op.nn.conv2d(
            xq.expr, self.const(np.ones((c, 1, kh, kw)), "int8"), strides=[sh, sw], padding=[pt, pl, pb, pr],
            dilation=[dh, dw], groups=c, data_layout="NCHW", kernel_layout="OIHW", out_dtype=self.accdtype))
        return _Value(total, "acc", xq.scale / count.reshape(1, 1, p, q), var)

    def batch_norm(self, var, call) -> _Value | None:
        """An inference batch norm (axis 1, constant parameters) of an integer tensor as a per-channel integer
        affine map: the input widened to the accumulator type, with scale ``s_x * a[c]`` and the bias
        ``b[c] / (s_x a[c])`` added; None when it does not apply (a batch norm after a conv is folded into
        the conv before this pass, see :class:`~hwnas.passes.fold_batch_norm.FoldBatchNorm`)."""
        a = call.attrs
        x = self.arg(call.args[0])
        params = [self.const_array(p) for p in call.args[1:5]]
        if (x is None or x.kind == "float" or bool(a.training) or int(a.axis) != 1
                or any(p is None or p.ndim != 1 for p in params)):
            return None
        gamma, beta, mean, variance = (p.astype(np.float64) for p in params)
        gamma = gamma if bool(a.scale) else np.ones_like(mean)
        beta = beta if bool(a.center) else np.zeros_like(mean)
        mul = gamma / np.sqrt(variance + float(a.epsilon))
        if np.abs(mul).min(initial=np.inf) < 1e-12 or len(_shape(call.args[0])) != 4:
            return None
        xq = self.as_int(x)
        shift = beta - mul * mean
        scale = xq.scale * mul.reshape(1, -1, 1, 1)
        wide = self.emit(relax.op.astype(xq.expr, self.accdtype))
        bias = np.round(shift.reshape(1, -1, 1, 1) / scale)
        if self.accdtype == "int32" and np.abs(bias).max(initial=0) >= 2**31:
            wide = self.emit(relax.op.astype(wide, "int64"))
        out = self.emit(relax.op.add(wide, self.const(np.clip(bias, -2.0**62, 2.0**62), str(wide.ty.dtype))))
        return _Value(out, "acc", scale, var)

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
        if self.abits is None:  # weight-only: the input stays float
            x = relax.Var(param.name, relax.TensorType(shape, str(param.ty.dtype)))
            s_in = None
            self.values[param] = _Value(x, "float", None, param)
        else:
            x = relax.Var(param.name, relax.TensorType(shape, self.adtype))
            s_in = self.scale_of(param)
            self.values[param] = _Value(x, "int", s_in, param)
        with self.bb.function("main", [x], attrs={"num_input": 1}):
            with self.bb.dataflow():
                for block in main.body.blocks:
                    for b in block.bindings:
                        value = b.value
                        if isinstance(value, relax.Call):
                            norm = (self.batch_norm(b.var, value) if isinstance(value.op, tvm.ir.Op)
                                    and value.op.name == "relax.nn.batch_norm" else None)
                            if norm is not None:
                                self.norms[b.var] = (norm, value)
                            elif not self.fold(b.var, value):
                                self.values[b.var] = self.rewrite(b.var, value)
                        elif isinstance(value, relax.TupleGetItem) and value.tuple_value in self.norms:
                            norm, call = self.norms[value.tuple_value]
                            if value.index == 0:
                                self.values[b.var] = norm
                            else:  # the moving statistics of an inference batch norm: its inputs, unchanged
                                self.consts[b.var] = self.const_array(call.args[2 + value.index])
                        elif isinstance(value, relax.Var) and value in self.values:
                            self.values[b.var] = self.values[value]
                        elif isinstance(value, relax.TupleGetItem) and value.tuple_value in self.values:
                            # a field of a tuple a float operator returned (batch_norm, split)
                            src = self.values[value.tuple_value]
                            self.values[b.var] = _Value(self.emit(relax.TupleGetItem(self.as_float(src), value.index)),
                                                        "float", None, b.var)
                        elif isinstance(value, relax.Tuple):
                            fields = [self.as_float(self.values[f]) if f in self.values else f for f in value.fields]
                            self.values[b.var] = _Value(self.emit(relax.Tuple(fields)), "float", None, b.var)
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
        bits = self.layer_bits if self.layer_bits is not None else (8,) * len(self.kinds)
        info = {
            "input_scale": None if s_in is None else float(s_in),
            "output_scale": out_scale,
            "weight_bits": self.spec.weight_bits,
            "activation_bits": self.spec.activation_bits,
            "symmetric": self.spec.symmetric,
            "layers": len(self.kinds),
            "layer_kinds": list(self.kinds),
            "layer_bits": [None if b is None else int(b) for b in bits[: len(self.kinds)]],
            # the quantized layers' weights: bytes as the module stores them, and if packed at their bits
            "weight_bytes_stored": sum(stored for _, stored, _ in self.weights),
            "weight_bytes_packed": sum(-(-n * b // 8) for n, _, b in self.weights),
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
                 seed: int = 0, spec: QuantSpec | None = None, calibrated: bool = True) -> None:
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
        #: False: no calibration, each tensor a seeded range in [1, 32]: the kernels' shapes without their values
        #: (:func:`hwnas.passes.shape_only.shape_only`)
        self.calibrated = calibrated

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if quantization_info(mod) is not None:
            return mod
        if len(mod["main"].params) != 1:
            raise InvalidConfigError(f"quantization needs a model with one input, got {len(mod['main'].params)}")

        mod = FoldBatchNorm()(mod)  # a conv's batch norm becomes its weights and bias: integer, not float
        shape = _shape(mod["main"].params[0])
        batch = self.calibration
        if batch is None:
            source = self.source if (self.source != "digits" or len(shape) == 4) else "normal"
            batch = calibration_batch(shape, source=source, count=self.count, seed=self.seed)
        if tuple(batch.shape[1:]) != tuple(shape[1:]):
            raise InvalidConfigError(
                f"calibration inputs have shape {tuple(batch.shape[1:])}, the model takes {shape[1:]}")
        dry = _Rewriter(mod, {}, self.spec)  # the layers, and which tensors need a range
        dry.run()
        layer_bits = self.spec.layer_bits(dry.kinds)
        if self.spec.activation_bits is None:
            return _Rewriter(mod, {}, self.spec, layer_bits).run()
        if not self.calibrated:  # distinct ranges: equal scales would let the rewrite drop a rescale
            spread = np.random.default_rng(self.seed).uniform(0.0, 5.0, size=len(dry.requested) + 1)
            ranges = dict(zip([mod["main"].params[0], *dry.requested], np.exp2(spread).tolist()))
        else:
            ranges = calibrate(mod, batch, dry.requested)
        return _Rewriter(mod, ranges, self.spec, layer_bits).run()


def quantize_input(x: np.ndarray, scale: float | None, bits: int | None = 8) -> np.ndarray:
    """``clip(round(x / scale))`` as int8 (int16 for ``bits=16``): the quantized module's input;
    ``x`` as float32 when the module's activations are float (``scale`` or ``bits`` None)."""
    if scale is None or bits is None:
        return np.asarray(x, dtype=np.float32)
    q = 2 ** (bits - 1) - 1
    return np.clip(np.round(np.asarray(x, dtype=np.float64) / scale), -q - 1, q).astype(
        np.int16 if bits > 8 else np.int8)
