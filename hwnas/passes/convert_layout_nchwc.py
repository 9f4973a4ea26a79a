"""ConvertLayoutNCHWc: rewrite regular 2D convolutions to the packed NCHW{pack}c layout.

A Relax-level pass, run on the imported module *before* legalization and
fusion. It does three things, in order:

1. Clip bounds that the ONNX importer emits as ``call_tir`` to a
   ``maximum``/``minimum`` PrimFunc with a scalar bound (ReLU6, Clip) are
   turned back into the Relax ops ``relax.maximum``/``relax.minimum``. Those are
   layout-agnostic broadcast ops that TVM's ``ConvertLayout`` can carry the
   packed layout through, so a conv -> bias -> ReLU6 -> conv chain does not
   bounce back to NCHW in the middle.
2. TVM's ``ConvertLayout`` with a per-call choice: a ``relax.nn.conv2d`` in
   NCHW/OIHW with ``groups == 1``, static shapes and input and output channel
   counts both divisible by ``pack`` gets data layout ``NCHW{pack}c`` and kernel
   layout ``OIHW{pack}i{pack}o`` (output ``NCHW{pack}c``). Depthwise and grouped
   convolutions and odd channel counts keep NCHW/OIHW. ``ConvertLayout``
   propagates the packed layout through the elementwise, broadcast, pooling,
   concatenation and reduction ops that follow, and inserts
   ``relax.layout_transform`` only where an op needs another layout. A
   depthwise convolution (``groups`` equal to its input and output channel
   counts, a multiple of ``pack``) gets data layout ``NCHW{pack}c`` and kernel
   layout ``OIHW{pack}o``, so a MobileNet block stays packed from its
   expansion through the depthwise to its projection. A conv with fewer
   input channels than ``pack`` (the stem of a network: 3 colour channels)
   keeps its NCHW input and writes NCHW{pack}c (kernel ``OIHW{pack}o``): its
   output is packed without a layout transform. Where
   TVM's layout inference fails with every qualifying conv packed, the convs
   are packed greedily, one at a time, keeping those that still convert.
3. TVM 0.27's legalization of ``relax.nn.conv2d`` refuses sub-indexed layouts,
   so every packed convolution is replaced here by a ``call_tir`` to our own
   TE compute (PrimFunc ``conv2d_NCHWc``; blocks ``data_pad`` when it pads and
   ``conv2d_NCHWc``; for depthwise ones ``depthwise_conv2d_NCHWc``; for
   the narrow-input ones ``conv2d_NCHW_NCHWc``). Its reduction over input channels is split into the
   block of channels (``rco``) and the channel inside a block (``rci``), so no
   division or modulo is left in the indices.

The weight ``layout_transform`` calls take constants: run
``relax.transform.FoldConstant`` after this pass (``cpu_graph_passes`` does) to
fold them into packed constants, so no weight is transformed at run time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import tvm
from tvm import relax, s_tir, te, tirx
from tvm.ir.expr import TensorLoad
from tvm.relax.expr_functor import PyExprMutator, mutator

from hwnas.errors import InvalidConfigError

log = logging.getLogger(__name__)

#: Name of the PrimFunc (and of its main block) that computes a packed convolution.
CONV2D_NCHWC = "conv2d_NCHWc"
#: Name of the PrimFunc (and of its main block) that computes a packed depthwise convolution.
DEPTHWISE_CONV2D_NCHWC = "depthwise_conv2d_NCHWc"
#: Name of the PrimFunc (and of its main block) of a convolution from NCHW input to packed output.
CONV2D_NCHW_NCHWC = "conv2d_NCHW_NCHWc"

_PACKED_DATA_LAYOUT = re.compile(r"^NCHW(\d+)c$")
_PACKED_KERNEL_LAYOUT = re.compile(r"^OIHW(\d+)i(\d+)o$")
_PACKED_DEPTHWISE_KERNEL_LAYOUT = re.compile(r"^OIHW(\d+)o$")


def _static_shape(expr: relax.Expr) -> list[int] | None:
    """The shape of a tensor expression as ints, or None if it is not static."""
    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        return None
    shape = sinfo.shape
    if not isinstance(shape, relax.ShapeExpr):
        return None
    dims = []
    for d in shape.values:
        if not isinstance(d, tirx.IntImm):
            return None
        dims.append(int(d.value))
    return dims


def _pad_packed(data: te.Tensor, pt: int, pl: int, pb: int, pr: int) -> te.Tensor:
    """Zero-pad the rows and columns of a packed ``(N, C/p, H, W, p)`` tensor (block ``data_pad``)."""
    if not (pt or pl or pb or pr):
        return data
    n, c_blocks, height, width, c_pack = (int(x) for x in data.shape)
    zero = tirx.const(0, data.dtype)

    def pad_value(b, cb, y, x, ci):
        inside = tirx.all(y >= pt, y < pt + height, x >= pl, x < pl + width)
        return tirx.if_then_else(inside, data[b, cb, y - pt, x - pl, ci], zero)

    return te.compute((n, c_blocks, height + pt + pb, width + pl + pr, c_pack), pad_value, name="data_pad")


def _conv2d_nchwc_compute(
    data: te.Tensor,
    weight: te.Tensor,
    strides: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    out_dtype: str,
) -> te.Tensor:
    """TE compute of a packed convolution.

    ``data`` is ``(N, C/p, H, W, p)``, ``weight`` is ``(O/q, C/p, KH, KW, p, q)``
    (OIHW{p}i{q}o), the result is ``(N, O/q, OH, OW, q)``. ``padding`` is
    ``(top, left, bottom, right)``.
    """
    n, c_blocks, height, width, c_pack = (int(x) for x in data.shape)
    o_blocks, wc_blocks, kh, kw, wc_pack, o_pack = (int(x) for x in weight.shape)
    if (wc_blocks, wc_pack) != (c_blocks, c_pack):
        raise InvalidConfigError(
            f"packed conv2d: weight input channels {wc_blocks}x{wc_pack} do not match "
            f"data channels {c_blocks}x{c_pack}"
        )
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    pt, pl, pb, pr = (int(p) for p in padding)
    out_h = (height + pt + pb - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + pl + pr - (kw - 1) * dw - 1) // sw + 1

    padded = _pad_packed(data, pt, pl, pb, pr)

    rco = te.reduce_axis((0, c_blocks), name="rco")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rci = te.reduce_axis((0, c_pack), name="rci")

    def conv_value(b, ob, y, x, oi):
        lhs = padded[b, rco, y * sh + ry * dh, x * sw + rx * dw, rci].astype(out_dtype)
        rhs = weight[ob, rco, ry, rx, rci, oi].astype(out_dtype)
        return te.sum(lhs * rhs, axis=[rco, ry, rx, rci])

    return te.compute((n, o_blocks, out_h, out_w, o_pack), conv_value, name=CONV2D_NCHWC)


def _depthwise_conv2d_nchwc_compute(
    data: te.Tensor,
    weight: te.Tensor,
    strides: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    out_dtype: str,
) -> te.Tensor:
    """TE compute of a packed depthwise convolution.

    ``data`` is ``(N, C/p, H, W, p)``, ``weight`` is ``(C/p, 1, KH, KW, p)``
    (OIHW{p}o), the result is ``(N, C/p, OH, OW, p)``: each channel lane is
    convolved with its own filter, so the lane axis is the vector axis with
    no reduction across it.
    """
    n, c_blocks, height, width, c_pack = (int(x) for x in data.shape)
    w_blocks, multiplier, kh, kw, w_pack = (int(x) for x in weight.shape)
    if (w_blocks, multiplier, w_pack) != (c_blocks, 1, c_pack):
        raise InvalidConfigError(
            f"packed depthwise conv2d: weight {tuple(int(x) for x in weight.shape)} does not match "
            f"data channels {c_blocks}x{c_pack}"
        )
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    pt, pl, pb, pr = (int(p) for p in padding)
    out_h = (height + pt + pb - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + pl + pr - (kw - 1) * dw - 1) // sw + 1
    padded = _pad_packed(data, pt, pl, pb, pr)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def conv_value(b, cb, y, x, ci):
        lhs = padded[b, cb, y * sh + ry * dh, x * sw + rx * dw, ci].astype(out_dtype)
        rhs = weight[cb, 0, ry, rx, ci].astype(out_dtype)
        return te.sum(lhs * rhs, axis=[ry, rx])

    return te.compute((n, c_blocks, out_h, out_w, c_pack), conv_value, name=DEPTHWISE_CONV2D_NCHWC)


def _conv2d_nchw_nchwc_compute(
    data: te.Tensor,
    weight: te.Tensor,
    strides: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    out_dtype: str,
) -> te.Tensor:
    """TE compute of a convolution from unpacked input to packed output.

    ``data`` is ``(N, C, H, W)``, ``weight`` is ``(O/q, C, KH, KW, q)``
    (OIHW{q}o), the result is ``(N, O/q, OH, OW, q)``: the output-channel lane
    is the vector axis and every input element is broadcast to it.
    """
    n, channels, height, width = (int(x) for x in data.shape)
    o_blocks, w_channels, kh, kw, o_pack = (int(x) for x in weight.shape)
    if w_channels != channels:
        raise InvalidConfigError(f"conv2d NCHW->NCHWc: weight input channels {w_channels} != data channels {channels}")
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    pt, pl, pb, pr = (int(p) for p in padding)
    out_h = (height + pt + pb - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + pl + pr - (kw - 1) * dw - 1) // sw + 1
    if pt or pl or pb or pr:
        zero = tirx.const(0, data.dtype)

        def pad_value(b, c, y, x):
            inside = tirx.all(y >= pt, y < pt + height, x >= pl, x < pl + width)
            return tirx.if_then_else(inside, data[b, c, y - pt, x - pl], zero)

        padded = te.compute((n, channels, height + pt + pb, width + pl + pr), pad_value, name="data_pad")
    else:
        padded = data
    rc = te.reduce_axis((0, channels), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def conv_value(b, ob, y, x, oi):
        lhs = padded[b, rc, y * sh + ry * dh, x * sw + rx * dw].astype(out_dtype)
        rhs = weight[ob, rc, ry, rx, oi].astype(out_dtype)
        return te.sum(lhs * rhs, axis=[rc, ry, rx])

    return te.compute((n, o_blocks, out_h, out_w, o_pack), conv_value, name=CONV2D_NCHW_NCHWC)


def _scalar_clip_kind(func: tirx.PrimFunc) -> str | None:
    """``"max"``/``"min"`` if ``func`` is ``out[i] = max|min(x[i], scalar[()])``, else None.

    This is how the ONNX importer writes each bound of Clip (and so ReLU6).
    """
    if len(func.params) != 3:
        return None
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if len(blocks) != 1:
        return None
    store = sch.get(blocks[0]).body
    if not isinstance(store, tirx.BufferStore):
        return None
    value = store.value
    kind = "max" if isinstance(value, tirx.Max) else "min" if isinstance(value, tirx.Min) else None
    if kind is None:
        return None
    loads = [value.a, value.b]
    if not all(isinstance(x, TensorLoad) for x in loads):
        return None
    scalars = [x for x in loads if len(x.source.shape) == 0]
    tensors = [x for x in loads if len(x.source.shape) != 0]
    if len(scalars) != 1 or len(tensors) != 1:
        return None
    same_index = len(tensors[0].indices) == len(store.indices) and all(
        a.same_as(b) for a, b in zip(tensors[0].indices, store.indices)
    )
    return kind if same_index else None


def _is_depthwise(call: relax.Call) -> bool:
    """Whether a conv2d call (NCHW/OIHW, static shapes) is depthwise: one filter per input channel."""
    groups = int(call.attrs.groups)
    dshape = _static_shape(call.args[0])
    wshape = _static_shape(call.args[1])
    return (groups > 1 and dshape is not None and wshape is not None and len(wshape) == 4
            and dshape[1] == groups == wshape[0] and wshape[1] == 1)


def _is_narrow_input(call: relax.Call, pack: int) -> bool:
    """Whether a regular conv2d has fewer input channels than ``pack`` (its input stays NCHW)."""
    dshape = _static_shape(call.args[0])
    return int(call.attrs.groups) == 1 and dshape is not None and len(dshape) == 4 and dshape[1] < pack


@mutator
class _ClipToRelaxOps(PyExprMutator):
    """``call_tir(maximum|minimum, (x, scalar))`` -> ``relax.maximum|minimum(x, scalar)``."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self.call_tir_op = tvm.ir.Op.get("relax.call_tir")
        self.kinds: dict[str, str] = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc):
                kind = _scalar_clip_kind(func)
                if kind is not None:
                    self.kinds[gv.name_hint] = kind

    def transform(self) -> tvm.IRModule:
        for gv, func in self.mod_.functions_items():
            if isinstance(func, relax.Function):
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's name)
        call = super().visit_call_(call)
        if call.op != self.call_tir_op or not isinstance(call.args[0], relax.GlobalVar):
            return call
        kind = self.kinds.get(call.args[0].name_hint)
        args = call.args[1]
        if kind is None or not isinstance(args, relax.Tuple) or len(args.fields) != 2:
            return call
        x, bound = args.fields
        sinfo = bound.ty
        if not isinstance(sinfo, relax.TensorType) or sinfo.ndim != 0:
            return call
        op = relax.op.maximum if kind == "max" else relax.op.minimum
        return op(x, bound)


@mutator
class _PackedConvToTIR(PyExprMutator):
    """Replace every packed ``relax.nn.conv2d`` by a ``call_tir`` of :func:`_conv2d_nchwc_compute`."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self.conv2d_op = tvm.ir.Op.get("relax.nn.conv2d")

    def transform(self) -> tvm.IRModule:
        for gv, func in self.mod_.functions_items():
            if isinstance(func, relax.Function):
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's name)
        call = super().visit_call_(call)
        if call.op != self.conv2d_op:
            return call
        attrs = call.attrs
        data_layout, kernel_layout, out_layout = (str(attrs.data_layout), str(attrs.kernel_layout),
                                                  str(attrs.out_layout))
        if (int(attrs.groups) == 1 and data_layout == "NCHW" and _PACKED_DATA_LAYOUT.match(out_layout)
                and _PACKED_DEPTHWISE_KERNEL_LAYOUT.match(kernel_layout)):
            compute, name = _conv2d_nchw_nchwc_compute, CONV2D_NCHW_NCHWC
        elif not (_PACKED_DATA_LAYOUT.match(data_layout) and out_layout == data_layout):
            return call
        elif int(attrs.groups) == 1 and _PACKED_KERNEL_LAYOUT.match(kernel_layout):
            compute, name = _conv2d_nchwc_compute, CONV2D_NCHWC
        elif int(attrs.groups) > 1 and _PACKED_DEPTHWISE_KERNEL_LAYOUT.match(str(attrs.kernel_layout)):
            compute, name = _depthwise_conv2d_nchwc_compute, DEPTHWISE_CONV2D_NCHWC
        else:
            return call
        data, weight = call.args
        out_dtype = str(attrs.out_dtype) if attrs.out_dtype is not None else ""
        if out_dtype in ("", "void", "None"):
            out_dtype = str(data.ty.dtype)
        return self.builder_.call_te(
            compute,
            data,
            weight,
            strides=[int(s) for s in attrs.strides],
            padding=[int(p) for p in attrs.padding],
            dilation=[int(d) for d in attrs.dilation],
            out_dtype=out_dtype,
            primfunc_name_hint=name,
        )


@tvm.transform.module_pass(opt_level=0, name="ConvertLayoutNCHWc")
class ConvertLayoutNCHWc:
    """Convert regular conv2d to the packed NCHW{pack}c / OIHW{pack}i{pack}o layouts.

    Parameters
    ----------
    pack:
        The channel block: the innermost dimension of the packed activations and
        the innermost dimensions of the packed weights. Convolutions whose
        input or output channel count is not a multiple of ``pack``, and
        grouped ones that are not depthwise, stay in NCHW. A larger ``pack`` gives wider
        contiguous vectors along output channels (the natural SIMD axis of the
        packed layout); ``pack`` 8 fills an AVX2 register of float32.
    """

    def __init__(self, pack: int) -> None:
        if isinstance(pack, bool) or not isinstance(pack, int) or pack < 2:
            raise InvalidConfigError(f"ConvertLayoutNCHWc: pack must be an int >= 2, got {pack!r}")
        self.pack = pack

    def _qualifies(self, call: relax.Call) -> bool:
        """Whether ``call`` is a conv2d this pass packs (see the class docstring)."""
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
            return False
        attrs = call.attrs
        layouts = [str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)]
        if layouts != ["NCHW", "OIHW", "NCHW"]:
            return False
        dshape = _static_shape(call.args[0])
        wshape = _static_shape(call.args[1])
        if dshape is None or wshape is None or len(dshape) != 4 or len(wshape) != 4:
            return False
        p = self.pack
        if int(attrs.groups) != 1:
            return _is_depthwise(call) and dshape[1] % p == 0
        if _is_narrow_input(call, p):
            return wshape[0] % p == 0
        return dshape[1] % p == 0 and wshape[0] % p == 0 and wshape[1] % p == 0

    def _convert(self, mod: tvm.IRModule, chosen: list[relax.Call]) -> tvm.IRModule | None:
        """``ConvertLayout`` packing exactly the conv calls in ``chosen``; None if TVM fails on it."""
        packed = [f"NCHW{self.pack}c", f"OIHW{self.pack}i{self.pack}o"]
        packed_depthwise = [f"NCHW{self.pack}c", f"OIHW{self.pack}o"]
        packed_output = ["NCHW", f"OIHW{self.pack}o", f"NCHW{self.pack}c"]

        def choose(call: relax.Call) -> dict[str, list[str]]:
            if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
                return {}
            if any(call.same_as(c) for c in chosen):
                if _is_depthwise(call):
                    return {"relax.nn.conv2d": packed_depthwise}
                return {"relax.nn.conv2d": packed_output if _is_narrow_input(call, self.pack) else packed}
            return {"relax.nn.conv2d": [str(call.attrs.data_layout), str(call.attrs.kernel_layout)]}

        try:
            return relax.transform.ConvertLayout({}, choose)(mod)
        except (RuntimeError, ValueError) as exc:  # TVM's layout inference gives up on some op chains
            log.debug("ConvertLayout failed with %d packed convs: %s", len(chosen), exc)
            return None

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Rewrite ``mod``; see the module docstring for the steps.

        If TVM's layout inference fails on the module with every qualifying
        conv packed (it does for a few op chains, e.g. a mean over the channel
        axis multiplied into a packed tensor), convs are packed greedily one
        at a time, keeping each that still converts; at worst the module
        stays in NCHW.
        """
        mod = _ClipToRelaxOps(mod).transform()
        candidates: list[relax.Call] = []

        def collect(expr: relax.Expr) -> None:
            if isinstance(expr, relax.Call) and self._qualifies(expr):
                candidates.append(expr)

        for _, func in mod.functions_items():
            if isinstance(func, relax.Function):
                relax.analysis.post_order_visit(func, collect)
        converted = self._convert(mod, candidates) if candidates else mod
        if converted is None:
            chosen: list[relax.Call] = []
            converted = mod
            for call in candidates:
                trial = self._convert(mod, chosen + [call])
                if trial is not None:
                    chosen.append(call)
                    converted = trial
            log.info(
                "ConvertLayoutNCHWc: TVM could pack only %d of %d convs", len(chosen), len(candidates)
            )
        converted = _PackedConvToTIR(converted).transform()
        return relax.transform.DeadCodeElimination()(converted)
