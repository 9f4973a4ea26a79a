"""The static memory plan of a fused module on a microcontroller: kernel order and one arena.

:func:`kernel_graph` reads the calls of a fused module's ``main`` (each
``call_tir`` is a kernel; bound constants are weights, kept in flash).
:func:`plan_memory` then

* chooses the execution order: ``program`` (the module's order) or
  ``min_memory``: among the topological orders of the kernel graph (networkx),
  one whose live activation bytes peak lowest; exact when the graph has at
  most :data:`EXACT_ORDERS` orders, else a greedy choice (run the ready kernel
  that leaves the fewest bytes live; ties by program order);
* lets a depthwise conv write its output over its input when ``inplace_dw``
  (the input dies there; the MCU schedule makes this safe, see
  :mod:`hwnas.targets.mcu.schedule_mcu`);
* places every activation (input and output included) at an offset in one
  arena, greedily by size (largest first, lowest offset that does not overlap
  a tensor alive at the same time), as TFLite Micro's greedy planner does.

``arena_bytes`` plus the largest kernel workspace (the kernels' allocations in
TVM's lowered TIR, see :func:`kernel_workspace`) is the SRAM one inference
needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import networkx as nx
import numpy as np

from hwnas.errors import CompileError
from hwnas.ir.workloads import nbytes, walk

#: tensors are placed at multiples of this many bytes
ALIGN = 8
#: up to this many topological orders are compared exactly
EXACT_ORDERS = 2000
ORDERS = ("program", "min_memory")


@dataclasses.dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    #: ``input``, ``activation``, ``output`` or ``weight``
    role: str
    #: the value of a weight
    value: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclasses.dataclass
class KernelCall:
    func: str
    args: list[str]
    out: str


@dataclasses.dataclass
class KernelGraph:
    tensors: dict[str, TensorInfo]
    calls: list[KernelCall]
    input: str
    output: str


@dataclasses.dataclass
class MemoryPlan:
    #: indices into ``graph.calls`` in execution order
    order: list[int]
    #: activation tensor -> byte offset in the arena
    offsets: dict[str, int]
    arena_bytes: int
    #: the sum of live activation bytes at the worst step (a lower bound of ``arena_bytes``)
    peak_live_bytes: int
    #: (call index, input tensor) pairs whose output overwrites the input
    inplace: list[tuple[int, str]]


def _shape(ty) -> tuple[int, ...]:
    return tuple(int(v) for v in ty.shape.values)


def kernel_graph(mod) -> KernelGraph:
    """The kernels, activations and weights of a fused module's ``main``."""
    import tvm
    from tvm import relax

    main = mod["main"]
    tensors: dict[str, TensorInfo] = {}
    calls: list[KernelCall] = []
    names: dict[Any, str] = {}
    weights: dict[int, str] = {}
    if len(main.params) != 1:
        raise CompileError(f"an MCU bundle takes one input tensor, the model has {len(main.params)}")
    p = main.params[0]
    names[p] = "input"
    tensors["input"] = TensorInfo("input", _shape(p.ty), str(p.ty.dtype), "input")
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def ref(expr) -> str:
        if isinstance(expr, tvm.ir.GenericConst):
            key = expr.value.data_ptr()
            if key not in weights:
                name = f"w{len(weights)}"
                weights[key] = name
                value = expr.value.numpy()
                tensors[name] = TensorInfo(name, tuple(value.shape), str(value.dtype), "weight", value)
            return weights[key]
        if expr in names:
            return names[expr]
        raise CompileError(f"MCU bundle: unsupported argument {type(expr).__name__} in main")

    for block in main.body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Var):
                names[b.var] = ref(v)
                continue
            if not (isinstance(v, relax.Call) and v.op.same_as(call_tir)):
                op = getattr(v, "op", None)
                raise CompileError(f"MCU bundle: main has a {getattr(op, 'name', type(v).__name__)} that is not a "
                                   "kernel call; only call_tir kernels can run on the device")
            args = [ref(a) for a in v.args[1].fields]
            out = f"t{len(calls)}"
            ty = b.var.ty
            if not isinstance(ty, relax.TensorType):
                raise CompileError("MCU bundle: a kernel with several outputs is not supported")
            tensors[out] = TensorInfo(out, _shape(ty), str(ty.dtype), "activation")
            names[b.var] = out
            calls.append(KernelCall(v.args[0].name_hint, args, out))
    ret = main.body.body
    if not isinstance(ret, relax.Var) or ret not in names:
        raise CompileError("MCU bundle: main must return one tensor")
    output = names[ret]
    if tensors[output].role == "input" or tensors[output].role == "weight":
        raise CompileError("MCU bundle: the output must be computed by a kernel")
    tensors[output].role = "output"
    return KernelGraph(tensors, calls, "input", output)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _lifetimes(graph: KernelGraph, order: list[int], alias: dict[str, str]) -> dict[str, list[int]]:
    """buffer -> [first step, last step] (aliased tensors share their root's buffer)."""
    step = {c: i for i, c in enumerate(order)}
    life: dict[str, list[int]] = {}

    def touch(t: str, s: int) -> None:
        root = alias.get(t, t)
        lo_hi = life.setdefault(root, [s, s])
        lo_hi[0] = min(lo_hi[0], s)
        lo_hi[1] = max(lo_hi[1], s)

    touch(graph.input, 0)
    for c in order:
        call = graph.calls[c]
        for a in call.args:
            if graph.tensors[a].role != "weight":
                touch(a, step[c])
        touch(call.out, step[c])
    touch(graph.output, len(order))
    return life


def _sizes(graph: KernelGraph, alias: dict[str, str]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, t in graph.tensors.items():
        if t.role == "weight":
            continue
        root = alias.get(name, name)
        sizes[root] = max(sizes.get(root, 0), _align(t.nbytes))
    return sizes


def _peak_live(graph: KernelGraph, order: list[int], alias: dict[str, str]) -> int:
    life = _lifetimes(graph, order, alias)
    sizes = _sizes(graph, alias)
    peak = 0
    for s in range(len(order) + 1):
        peak = max(peak, sum(sizes[b] for b, (lo, hi) in life.items() if lo <= s <= hi))
    return peak


def _dag(graph: KernelGraph) -> nx.DiGraph:
    producer = {c.out: i for i, c in enumerate(graph.calls)}
    g = nx.DiGraph()
    g.add_nodes_from(range(len(graph.calls)))
    for i, c in enumerate(graph.calls):
        for a in c.args:
            if a in producer:
                g.add_edge(producer[a], i)
    return g


def _inplace_pairs(graph: KernelGraph, order: list[int], depthwise: set[int]) -> dict[str, str]:
    """output -> input aliases for the depthwise calls whose input dies at them."""
    step = {c: i for i, c in enumerate(order)}
    last_use: dict[str, int] = {}
    for c in order:
        for a in graph.calls[c].args:
            last_use[a] = max(last_use.get(a, -1), step[c])
    alias: dict[str, str] = {}
    for c in order:
        if c not in depthwise:
            continue
        call = graph.calls[c]
        acts = [a for a in call.args if graph.tensors[a].role != "weight"]
        if len(acts) != 1:
            continue
        x = acts[0]
        if (last_use.get(x) == step[c] and x != graph.output
                and graph.tensors[x].nbytes >= graph.tensors[call.out].nbytes):
            alias[call.out] = alias.get(x, x)
    return alias


def _greedy_order(graph: KernelGraph, dag: nx.DiGraph) -> list[int]:
    """Run next the ready kernel that leaves the fewest activation bytes live."""
    consumers = {t: 0 for t in graph.tensors}
    for c in graph.calls:
        for a in c.args:
            consumers[a] += 1
    remaining = dict(consumers)
    indeg = {n: dag.in_degree(n) for n in dag.nodes}
    ready = sorted(n for n, d in indeg.items() if d == 0)
    order: list[int] = []
    while ready:
        def delta(c: int) -> tuple[int, int]:
            call = graph.calls[c]
            freed = sum(graph.tensors[a].nbytes for a in set(call.args)
                        if graph.tensors[a].role != "weight" and a != graph.output
                        and remaining[a] == call.args.count(a))
            return graph.tensors[call.out].nbytes - freed, c

        best = min(ready, key=delta)
        ready.remove(best)
        order.append(best)
        for a in graph.calls[best].args:
            remaining[a] -= 1
        for nxt in dag.successors(best):
            indeg[nxt] -= 1
            if indeg[nxt] == 0:
                ready.append(nxt)
        ready.sort()
    return order


def choose_order(graph: KernelGraph, mode: str, depthwise: set[int], inplace: bool) -> list[int]:
    """The execution order for ``mode`` (see the module doc)."""
    program = list(range(len(graph.calls)))
    if mode == "program":
        return program
    if mode != "min_memory":
        raise CompileError(f"unknown execution order {mode!r}; known: {', '.join(ORDERS)}")
    dag = _dag(graph)

    def cost(order: list[int]) -> int:
        alias = _inplace_pairs(graph, order, depthwise) if inplace else {}
        return _peak_live(graph, order, alias)

    candidates: list[list[int]] = []
    for k, order in enumerate(nx.all_topological_sorts(dag)):
        if k >= EXACT_ORDERS:
            candidates = []
            break
        candidates.append(list(order))
    if not candidates:
        candidates = [_greedy_order(graph, dag), program]
    return min(candidates, key=lambda o: (cost(o), o != program))


def plan_memory(graph: KernelGraph, *, order_mode: str = "program", inplace_dw: bool = False,
                depthwise: set[int] | None = None) -> MemoryPlan:
    """Order the kernels and place every activation in one arena (see the module doc)."""
    depthwise = depthwise or set()
    order = choose_order(graph, order_mode, depthwise, inplace_dw)
    alias = _inplace_pairs(graph, order, depthwise) if inplace_dw else {}
    life = _lifetimes(graph, order, alias)
    sizes = _sizes(graph, alias)
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    root_offset: dict[str, int] = {}
    for buf in sorted(sizes, key=lambda b: (-sizes[b], life[b][0])):
        lo, hi = life[buf]
        size = sizes[buf]
        clashes = sorted((o, s) for o, s, a, b in placed if not (b < lo or hi < a))
        offset = 0
        for o, s in clashes:
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, lo, hi))
        root_offset[buf] = offset
    offsets = {name: root_offset[alias.get(name, name)] for name, t in graph.tensors.items() if t.role != "weight"}
    arena = max((o + s for o, s, _, _ in placed), default=0)
    inplace = [(c, next(a for a in graph.calls[c].args if graph.tensors[a].role != "weight"))
               for c in order if graph.calls[c].out in alias]
    return MemoryPlan(order=order, offsets=offsets, arena_bytes=arena,
                      peak_live_bytes=_peak_live(graph, order, alias), inplace=inplace)


#: a CPU allocation of fewer bytes stays a stack array, a larger one is a TVMBackendAllocWorkspace call: TVM's
#: ``runtime::kMaxStackAlloca`` (include/tvm/runtime/device_api.h), applied by the ``LowerTVMBuiltin`` pass
MAX_STACK_ALLOCA = 1024


def kernel_workspace(lowered) -> dict[str, dict[str, int]]:
    """Per PrimFunc of ``lowered`` (the kernels after TVM's default TIR pipeline, before ``LowerTVMBuiltin``):
    ``heap`` (the TVMBackendAllocWorkspace bytes its allocations become, each rounded to :data:`ALIGN`, all
    live at once at worst) and ``stack`` (its stack arrays) bytes, read from its ``AllocBuffer`` statements
    and split as ``LowerTVMBuiltin`` splits them (:data:`MAX_STACK_ALLOCA`)."""
    out: dict[str, dict[str, int]] = {}
    for gv, func in lowered.functions.items():
        sizes = [nbytes(node.buffer.shape, node.buffer.dtype) for node in walk(func.body)
                 if type(node).__name__ == "AllocBuffer"]
        out[gv.name_hint] = {"heap": sum(_align(n) for n in sizes if not 0 < n < MAX_STACK_ALLOCA),
                             "stack": sum(n for n in sizes if 0 < n < MAX_STACK_ALLOCA)}
    return out


def compile_c(funcs: dict[str, Any]) -> tuple[str, dict[str, dict[str, int]]]:
    """TVM's C source of the kernels ``funcs`` (name -> PrimFunc) and their :func:`kernel_workspace`: the steps
    of ``tvm.tirx.build`` for the ``c`` target, with the workspace read between the TIR pipeline and the
    host finalization (runtime asserts left out: the bundle has no error path)."""
    import tvm
    from tvm.tirx.build import codegen_build, split_host_device_mods

    target = tvm.target.Target({"kind": "c"})
    mod = tvm.IRModule({n: f.with_attr("global_symbol", n) for n, f in funcs.items()})
    with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
        mod = tvm.tirx.transform.BindTarget(target.with_host(target))(mod)
        pipeline, finalize_host, _ = tvm.tirx.get_default_tir_pipeline(target)
        mod = pipeline(mod)
        workspace = kernel_workspace(mod)
        host, device = split_host_device_mods(mod)
        if any(len(m.functions) for m in device.values()):
            raise CompileError("the C target produced device code")
        source = codegen_build(finalize_host()(host), target).inspect_source()
    return source, workspace
