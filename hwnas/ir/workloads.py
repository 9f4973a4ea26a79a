"""The kernels of a compiled module, as workloads: what each computes, how often, and a key.

A fused Relax module calls a few dozen PrimFuncs (``fused_conv2d3_add2_...``);
Relax already deduplicates identical ones, and the same conv shape recurs
across thousands of candidates. :func:`extract` lists them as
:class:`Workload` records read from the TIR itself:

* ``key``: a content hash of the PrimFunc (TVM's structural hash, which
  ignores variable names), so the same computation in another candidate, run
  or process has the same key. Cost caches (lookup tables, tuned schedules)
  are keyed by it plus the hardware knobs that change the code.
* ``kind``: ``conv2d``, ``depthwise_conv2d``, ``group_conv2d``, ``dense``,
  ``pool``, ``reduce`` or ``elementwise``, from the main block's name and its
  iterators.
* ``macs``: multiply-accumulates of the main block of a conv or dense (the
  product of its iteration domain; 0 for other kinds); ``flops``: TVM's estimate for the whole PrimFunc.
* ``input_bytes``, ``weight_bytes``, ``output_bytes``: the bytes of the
  call's arguments, split by what the call passes (a bound constant is a
  weight), and of its result; ``workspace_bytes``: its internal buffers.
* ``conv``: for a (group) convolution in NCHW, its loop dimensions in the
  accelerator literature's names (``N K C P Q R S``, stride, groups, input
  ``H W``); ``None`` otherwise.

* ``schedule``: what the schedule made of the loops (:func:`schedule_summary`).

The iteration domains are those of the blocks, which scheduling does not
change (splits and reorders act on loops), so the extraction reads a
scheduled module as well as an unscheduled one; ``workspace_bytes`` and
``schedule`` are those of the module read (scheduling inlines stages and
their buffers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

#: block name fragments -> kind, first match wins
_KINDS = (
    ("depthwise_conv2d", "depthwise_conv2d"),
    ("group_conv2d", "group_conv2d"),
    ("conv2d", "conv2d"),
    ("matmul", "dense"),
    ("dense", "dense"),
    ("pool", "pool"),
)


#: kinds whose main block is a multiply-accumulate (a pool's reduction adds or compares)
MAC_KINDS = ("conv2d", "depthwise_conv2d", "group_conv2d", "dense")


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """A 2-D convolution's dimensions: output ``N x K x P x Q`` from input ``N x C x H x W``, kernel ``R x S``."""

    n: int
    k: int
    c: int
    p: int
    q: int
    r: int
    s: int
    stride: int
    groups: int
    h: int
    w: int

    @property
    def c_per_group(self) -> int:
        return self.c // self.groups

    @property
    def macs(self) -> int:
        return self.n * self.k * self.p * self.q * self.c_per_group * self.r * self.s


@dataclasses.dataclass(frozen=True)
class Workload:
    """One PrimFunc of a compiled module and what it computes (per call)."""

    func: str
    key: str
    kind: str
    calls: int
    macs: int
    flops: int
    input_bytes: int
    weight_bytes: int
    output_bytes: int
    workspace_bytes: int
    spatial: tuple[int, ...]
    reduction: tuple[int, ...]
    dtype: str
    conv: ConvShape | None = None
    #: what the schedule made of the loops (:func:`schedule_summary`), as ``(name, value)`` pairs
    schedule: tuple[tuple[str, int], ...] = ()

    @property
    def bytes_moved(self) -> int:
        """Compulsory traffic of one call: every input, weight and output byte once."""
        return self.input_bytes + self.weight_bytes + self.output_bytes

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["spatial"], d["reduction"] = list(self.spatial), list(self.reduction)
        d["schedule"] = dict(self.schedule)
        return d


def nbytes(shape, dtype: str) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * np.dtype(str(dtype)).itemsize


def prim_funcs(mod) -> dict[str, Any]:
    """The TIR functions of ``mod`` by name."""
    import tvm

    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def walk(stmt) -> Iterator[Any]:
    """Every statement under ``stmt`` (TVM 0.27 exposes no TIR visitor to Python: walk the fields)."""
    stack = [stmt]
    while stack:
        node = stack.pop()
        yield node
        for field in ("body", "block", "then_case", "else_case", "init"):
            child = getattr(node, field, None)
            if child is not None and not isinstance(child, (int, float, str)):
                stack.append(child)
        stack.extend(getattr(node, "seq", None) or ())


def blocks(func) -> list[Any]:
    """The blocks of a PrimFunc (those with iterators), in no particular order."""
    return [node for node in walk(func.body) if getattr(node, "iter_vars", None) is not None
            and getattr(node, "name_hint", None) not in (None, "root")]


def _extent(iv) -> int:
    ext = iv.dom.extent
    return int(ext.value) if hasattr(ext, "value") else -1


def block_domain(block) -> tuple[tuple[int, ...], tuple[int, ...]]:
    spatial, reduction = [], []
    for iv in block.iter_vars:
        (reduction if int(iv.iter_type) == 2 else spatial).append(_extent(iv))
    return tuple(spatial), tuple(reduction)


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


def main_block(func):
    """The block doing the work: the reduction block with the largest domain, else the largest block."""
    bs = blocks(func)
    if not bs:
        return None
    def size(b):
        s, r = block_domain(b)
        return (bool(r), _prod(s) * _prod(r))
    return max(bs, key=size)


def _kind(block, reduction) -> str:
    name = block.name_hint
    for fragment, kind in _KINDS:
        if fragment in name:
            return kind
    return "reduce" if reduction else "elementwise"


def is_mac_kernel(func) -> bool:
    """Whether a PrimFunc's main block is a convolution or a dense (matmul)."""
    block = main_block(func)
    return block is not None and _kind(block, block_domain(block)[1]) in MAC_KINDS


def domain(func) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """The main block of a PrimFunc: (its name, spatial extents, reduction extents); ("", (), ()) if none."""
    block = main_block(func)
    if block is None:
        return "", (), ()
    return (block.name_hint, *block_domain(block))


def iterations(func) -> int:
    """Iterations of a PrimFunc's main block (spatial x reduction): its MACs for a conv or a dense."""
    block = main_block(func)
    if block is None:
        return 0
    spatial, reduction = block_domain(block)
    return _prod(spatial) * _prod(reduction)


def _buffer_shape(buf) -> tuple[int, ...]:
    return tuple(int(v.value) if hasattr(v, "value") else int(v) for v in buf.shape)


def _conv_shape(func, block, kind: str, args_shapes) -> ConvShape | None:
    """NCHW conv dimensions from the block's domain and the call's argument shapes (None when not NCHW)."""
    spatial, reduction = block_domain(block)
    if len(spatial) != 4 or len(reduction) != 3 or not args_shapes:
        return None
    n, k, p, q = spatial
    cg, r, s = reduction
    data = args_shapes[0]
    if len(data) != 4:
        return None
    c, h, w = data[1], data[2], data[3]
    if kind == "depthwise_conv2d" or (kind == "group_conv2d" and cg == 1):
        groups = c
    else:
        groups = max(1, c // max(cg, 1))
    # stride from the padded input the conv reads (pad_temp) when there is one, else from the input
    padded = h
    for b in blocks(func):
        if b.name_hint == "pad_temp" or b.name_hint.startswith("pad"):
            bs, _ = block_domain(b)
            if len(bs) == 4:
                padded = bs[2]
    stride = max(1, (padded - r) // (p - 1)) if p > 1 else 1
    return ConvShape(n=n, k=k, c=c, p=p, q=q, r=r, s=s, stride=stride, groups=groups, h=h, w=w)


def workload_key(func) -> str:
    import tvm_ffi

    return format(int(tvm_ffi.structural_hash(func)) & (2**64 - 1), "016x")


def _calls(mod) -> list[tuple[str, list[tuple[tuple[int, ...], str, bool]], list[tuple[tuple[int, ...], str]]]]:
    """Each ``call_tir`` of ``main``: (callee, [(arg shape, dtype, is constant)], [(out shape, dtype)])."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    out = []

    def tensor(t):
        return tuple(int(v) for v in t.shape.values), str(t.dtype)

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op == call_tir:
            callee = expr.args[0].name_hint
            args = []
            for a in expr.args[1].fields:
                ty = a.ty
                if isinstance(ty, relax.TensorType) and ty.shape is not None and hasattr(ty.shape, "values"):
                    shape, dtype = tensor(ty)
                else:
                    shape, dtype = (), "float32"
                args.append((shape, dtype, isinstance(a, tvm.ir.GenericConst)))
            ret = expr.ty
            rets = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
            out.append((callee, args, [tensor(t) for t in rets]))

    relax.analysis.post_order_visit(mod["main"], visit)
    return out


def extract(mod) -> list[Workload]:
    """The workloads of a fused (scheduled or not) Relax module, in the order ``main`` first calls them."""
    import tvm
    from tvm import s_tir


    funcs = prim_funcs(mod)
    calls = _calls(mod)
    counts: dict[str, int] = {}
    first: dict[str, tuple] = {}
    for callee, args, rets in calls:
        counts[callee] = counts.get(callee, 0) + 1
        first.setdefault(callee, (args, rets))
    workloads = []
    for name, (args, rets) in first.items():
        func = funcs.get(name)
        if func is None:
            continue
        block = main_block(func)
        if block is None:
            spatial, reduction, kind = (), (), "elementwise"
        else:
            spatial, reduction = block_domain(block)
            kind = _kind(block, reduction)
        macs = _prod(spatial) * _prod(reduction) if kind in MAC_KINDS else 0
        try:
            flops = int(s_tir.analysis.estimate_tir_flops(tvm.IRModule({"main": func})))
        except Exception:  # symbolic or opaque bodies: count the multiply-adds
            flops = 2 * macs
        consts = [(s, d) for s, d, c in args if c]
        acts = [(s, d) for s, d, c in args if not c]
        conv = None
        if kind in ("conv2d", "depthwise_conv2d", "group_conv2d") and block is not None:
            conv = _conv_shape(func, block, kind, [s for s, _ in acts])
            if conv is not None and kind == "group_conv2d" and conv.groups == conv.c and conv.c == conv.k:
                kind = "depthwise_conv2d"
        dtype = rets[0][1] if rets else "float32"
        workloads.append(Workload(
            func=name, key=workload_key(func), kind=kind, calls=counts[name], macs=macs, flops=flops,
            input_bytes=sum(nbytes(s, d) for s, d in acts),
            weight_bytes=sum(nbytes(s, d) for s, d in consts),
            output_bytes=sum(nbytes(s, d) for s, d in rets),
            workspace_bytes=workspace_bytes(func),
            spatial=spatial, reduction=reduction, dtype=dtype, conv=conv,
            schedule=tuple(schedule_summary(func).items()),
        ))
    return workloads


def schedule_summary(func) -> dict[str, int]:
    """The loops a schedule left in a PrimFunc: how many (``loops``), the largest parallel, vectorized and
    unrolled extents, the ``auto_unroll`` step asked for, and the blocks (``stages``) left after inlining.
    An unscheduled function has serial loops only."""
    summary = {"loops": 0, "parallel": 0, "vector": 0, "unrolled": 0, "auto_unroll": 0, "stages": 0}
    kinds = {1: "parallel", 2: "vector", 3: "unrolled"}
    for node in walk(func.body):
        if getattr(node, "iter_vars", None) is not None and getattr(node, "name_hint", None) not in (None, "root"):
            summary["stages"] += 1
        if not hasattr(node, "loop_var"):
            continue
        summary["loops"] += 1
        extent = int(node.extent.value) if hasattr(node.extent, "value") else 0
        name = kinds.get(int(node.kind))
        if name is not None:
            summary[name] = max(summary[name], extent)
        for key, value in (getattr(node, "annotations", None) or {}).items():
            if "auto_unroll" in str(key) and hasattr(value, "value"):
                summary["auto_unroll"] = max(summary["auto_unroll"], int(value.value))
    return summary


def total_macs(workloads) -> int:
    return sum(w.macs * w.calls for w in workloads)


def workspace_bytes(func) -> int:
    """Bytes of the buffers a PrimFunc allocates for itself (padding, caches)."""
    return sum(nbytes(buf.shape, buf.dtype) for node in walk(func.body)
               for buf in (getattr(node, "alloc_buffers", None) or ()))
