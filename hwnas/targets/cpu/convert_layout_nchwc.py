"""ConvertLayoutNCHWc: rewrite regular 2D convolutions to the packed NCHW{pack}c layout.

A Relax-level pass, run on the imported module *before* legalization and
fusion. It does four things, in order:

1. Clip bounds that the ONNX importer emits as ``call_tir`` to a
   ``maximum``/``minimum`` PrimFunc with a scalar bound (ReLU6, Clip), and
   the ``relax.clip`` of HardSwish and HardSigmoid (which ``ConvertLayout``
   does not carry a layout through: MobileNetV3 went back to NCHW around each
   hard-swish), are turned into the Relax ops ``relax.maximum``/``relax.minimum``. Those are
   layout-agnostic broadcast ops that TVM's ``ConvertLayout`` can carry the
   packed layout through, so a conv -> bias -> ReLU6 -> conv chain does not
   bounce back to NCHW in the middle.
2. Conv outputs whose channel count ``pack`` does not divide are padded with
   zero channels up to a multiple of it where that adds at most an eighth of
   their work (:mod:`hwnas.passes.pad_channels`; ``pad=False`` turns it off):
   FBNet's 72, 184 and 552 channels become 80, 192 and 560, which run in
   full ``pack``-lane blocks instead of ``pack/2``.
3. TVM's ``ConvertLayout`` with a per-call choice. Each tensor of C channels
   gets the channel block ``b(C)``: the largest of ``pack``, ``pack/2`` and
   ``pack/4`` (at least 4) that divides C, so a 24-channel tensor is NCHW8c
   and a 144-channel one NCHW16c under ``pack`` 16 (no layout transform
   between them); a C with no block (3 colour channels, odd counts) stays
   NCHW. A ``relax.nn.conv2d`` in NCHW/OIHW with ``groups == 1`` and static
   shapes gets data layout ``NCHW{b(C)}c``, kernel layout
   ``OIHW{b(C)}i{b(O)}o`` and output ``NCHW{b(O)}c``. ``ConvertLayout``
   propagates the packed layout through the elementwise, broadcast, pooling,
   concatenation and reduction ops that follow, and inserts
   ``relax.layout_transform`` only where an op needs another layout. A
   depthwise convolution (``groups`` equal to its input and output channel
   counts) gets data layout ``NCHW{b(C)}c`` and kernel layout
   ``OIHW{b(C)}o``, so a MobileNet block stays packed from its expansion
   through the depthwise to its projection. Other grouped convolutions keep
   NCHW/OIHW. A conv whose input channels have no block (the stem of a
   network) keeps its NCHW input and writes ``NCHW{b(O)}c`` (kernel
   ``OIHW{b(O)}o``): its output is packed without a layout transform. Where
   TVM's layout inference fails with every qualifying conv packed, the convs
   are packed greedily, one at a time, keeping those that still convert.
4. TVM 0.27's legalization of ``relax.nn.conv2d`` refuses sub-indexed layouts,
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
from hwnas.targets.cpu import winograd
from hwnas.passes.pad_channels import pad_channels
from hwnas.ir.relax_util import rewrite_functions, static_shape

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


def _pad_spatial(data: te.Tensor, pt: int, pl: int, pb: int, pr: int) -> te.Tensor:
    """Zero-pad the rows and columns (axes 2 and 3) of an NCHW or NCHWc tensor (block ``data_pad``)."""
    if not (pt or pl or pb or pr):
        return data
    shape = [int(x) for x in data.shape]
    height, width = shape[2], shape[3]
    zero = tirx.const(0, data.dtype)

    def pad_value(*idx):
        y, x = idx[2], idx[3]
        inside = tirx.all(y >= pt, y < pt + height, x >= pl, x < pl + width)
        return tirx.if_then_else(inside, data[(idx[0], idx[1], y - pt, x - pl, *idx[4:])], zero)

    padded = [*shape[:2], height + pt + pb, width + pl + pr, *shape[4:]]
    return te.compute(padded, pad_value, name="data_pad")


def _geometry(height: int, width: int, kh: int, kw: int, strides, padding, dilation):
    """Strides, dilations, paddings (top, left, bottom, right) as ints and the output size of a conv."""
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    pt, pl, pb, pr = (int(v) for v in padding)
    out_h = (height + pt + pb - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + pl + pr - (kw - 1) * dw - 1) // sw + 1
    return (sh, sw), (dh, dw), (pt, pl, pb, pr), out_h, out_w


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
    (sh, sw), (dh, dw), pads, out_h, out_w = _geometry(height, width, kh, kw, strides, padding, dilation)

    padded = _pad_spatial(data, *pads)

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
    (sh, sw), (dh, dw), pads, out_h, out_w = _geometry(height, width, kh, kw, strides, padding, dilation)
    padded = _pad_spatial(data, *pads)
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
    (sh, sw), (dh, dw), pads, out_h, out_w = _geometry(height, width, kh, kw, strides, padding, dilation)
    padded = _pad_spatial(data, *pads)
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
    dshape = static_shape(call.args[0])
    wshape = static_shape(call.args[1])
    return (groups > 1 and dshape is not None and wshape is not None and len(wshape) == 4
            and dshape[1] == groups == wshape[0] and wshape[1] == 1)


@mutator
class _ClipToRelaxOps(PyExprMutator):
    """``call_tir(maximum|minimum, (x, scalar))`` -> ``relax.maximum|minimum(x, scalar)``."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.call_tir_op = tvm.ir.Op.get("relax.call_tir")
        self.clip_op = tvm.ir.Op.get("relax.clip")
        self.kinds: dict[str, str] = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc):
                kind = _scalar_clip_kind(func)
                if kind is not None:
                    self.kinds[gv.name_hint] = kind

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's name)
        call = super().visit_call_(call)
        if call.op == self.clip_op:
            return self._clip(call)
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

    @staticmethod
    def _clip(call: relax.Call) -> relax.Expr:
        """``relax.clip(x, lo, hi)`` (hard-swish's and hard-sigmoid's clip) -> ``minimum(maximum(x, lo), hi)``."""
        x = call.args[0]
        sinfo = x.ty
        bounds = [getattr(b, "value", None) for b in call.args[1:3]]  # IntImm / FloatImm bounds
        if not isinstance(sinfo, relax.TensorType) or not all(isinstance(b, (int, float)) for b in bounds):
            return call
        lo, hi = (relax.const(b, sinfo.dtype) for b in bounds)
        return relax.op.minimum(relax.op.maximum(x, lo), hi)


@mutator
class _PackedConvToTIR(PyExprMutator):
    """Replace every packed ``relax.nn.conv2d`` by a ``call_tir`` of :func:`_conv2d_nchwc_compute`."""

    def __init__(self, mod: tvm.IRModule, winograd: bool = False) -> None:
        super().__init__(mod)
        self.winograd = winograd
        self.conv2d_op = tvm.ir.Op.get("relax.nn.conv2d")

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
        elif not (_PACKED_DATA_LAYOUT.match(data_layout) and _PACKED_DATA_LAYOUT.match(out_layout)):
            return call
        elif int(attrs.groups) == 1 and _PACKED_KERNEL_LAYOUT.match(kernel_layout):
            compute, name = _conv2d_nchwc_compute, CONV2D_NCHWC
        elif (int(attrs.groups) > 1 and _PACKED_DEPTHWISE_KERNEL_LAYOUT.match(str(attrs.kernel_layout))
              and out_layout == data_layout):
            compute, name = _depthwise_conv2d_nchwc_compute, DEPTHWISE_CONV2D_NCHWC
        else:
            return call
        data, weight = call.args
        out_dtype = str(attrs.out_dtype) if attrs.out_dtype is not None else ""
        if out_dtype in ("", "void", "None"):
            out_dtype = str(data.ty.dtype)
        if (self.winograd and name == CONV2D_NCHWC
                and winograd.qualifies(static_shape(data), static_shape(weight), attrs.strides, attrs.padding,
                                       attrs.dilation, out_dtype)):
            # the weights' transform is a call on constants: FoldConstant computes it at build time
            _, c_blocks, height, width, c_pack = static_shape(data)
            o_blocks, _, _, _, _, o_pack = static_shape(weight)
            m = winograd.tile_size(height, width, c_blocks * c_pack, o_blocks * o_pack)
            u = self.builder_.emit(self.builder_.call_te(winograd.weight_transform_compute, weight, m,
                                                         primfunc_name_hint=winograd.WEIGHT_TRANSFORM))
            return self.builder_.call_te(winograd.conv_compute, data, u, out_dtype=out_dtype,
                                         primfunc_name_hint=winograd.CONV2D_NCHWC_WINOGRAD)
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
        The largest channel block: the innermost dimension of the packed
        activations and weights, for channel counts it divides; others take
        ``pack/2`` or ``pack/4`` (:meth:`block_of`). Convolutions whose output
        channels have no block, and grouped ones that are not depthwise, stay
        in NCHW. A larger ``pack`` gives wider contiguous vectors along output
        channels (the natural SIMD axis of the packed layout); ``pack`` 8 fills
        an AVX2 register of float32, 16 an AVX-512 one.
    winograd:
        Packed 3x3 convs that qualify (:func:`hwnas.targets.cpu.winograd.qualifies`)
        become a ``conv2d_NCHWc_winograd`` call on weights transformed by a
        ``winograd_weight_transform`` call (folded by ``FoldConstant``).
    pad:
        Pad conv outputs with zero channels up to a multiple of ``pack`` where
        that adds little work (:mod:`hwnas.passes.pad_channels`), so their
        kernels run with ``pack`` lanes instead of ``pack/2``.
    """

    def __init__(self, pack: int, winograd: bool = False, pad: bool = True) -> None:
        if isinstance(pack, bool) or not isinstance(pack, int) or pack < 2:
            raise InvalidConfigError(f"ConvertLayoutNCHWc: pack must be an int >= 2, got {pack!r}")
        self.pack = pack
        self.winograd = winograd
        self.pad = pad

    def block_of(self, channels: int) -> int | None:
        """The channel block of a tensor with ``channels`` channels: the largest of ``pack``, ``pack/2``,
        ``pack/4`` (at least 4) dividing it; None when none does (the tensor stays NCHW)."""
        for block in (self.pack, self.pack // 2, self.pack // 4):
            if block >= min(4, self.pack) and channels % block == 0:
                return block
        return None

    def _qualifies(self, call: relax.Call) -> bool:
        """Whether ``call`` is a conv2d this pass packs (see the class docstring)."""
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
            return False
        attrs = call.attrs
        layouts = [str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)]
        if layouts != ["NCHW", "OIHW", "NCHW"]:
            return False
        dshape = static_shape(call.args[0])
        wshape = static_shape(call.args[1])
        if dshape is None or wshape is None or len(dshape) != 4 or len(wshape) != 4:
            return False
        if int(attrs.groups) != 1:
            return _is_depthwise(call) and self.block_of(dshape[1]) is not None
        return self.block_of(wshape[0]) is not None  # with an unblocked input it reads NCHW (the stem)

    def _layouts(self, call: relax.Call) -> list[str]:
        """The (data, kernel, out) layouts a qualifying conv is converted to."""
        cin, cout = static_shape(call.args[0])[1], static_shape(call.args[1])[0]
        p, q = self.block_of(cin), self.block_of(cout)
        if _is_depthwise(call):
            return [f"NCHW{q}c", f"OIHW{q}o", f"NCHW{q}c"]
        if p is None:
            return ["NCHW", f"OIHW{q}o", f"NCHW{q}c"]
        return [f"NCHW{p}c", f"OIHW{p}i{q}o", f"NCHW{q}c"]

    def _convert(self, mod: tvm.IRModule, chosen: list[relax.Call]) -> tvm.IRModule | None:
        """``ConvertLayout`` packing exactly the conv calls in ``chosen``; None if TVM fails on it."""

        def choose(call: relax.Call) -> dict[str, list[str]]:
            if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
                return {}
            if any(call.same_as(c) for c in chosen):
                return {"relax.nn.conv2d": self._layouts(call)}
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
        mod = rewrite_functions(_ClipToRelaxOps(mod), mod)
        if self.pad:
            mod = pad_channels(mod, self.pack)
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
        converted = rewrite_functions(_PackedConvToTIR(converted, self.winograd), converted)
        return relax.transform.DeadCodeElimination()(converted)
