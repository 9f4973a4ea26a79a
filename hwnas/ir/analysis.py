"""Static figures of a compiled module: parameter bytes, planned activation memory.

Both read the Relax module that is compiled, so they follow what the passes
did (layouts, bit-widths, fusion) rather than the source network.
"""

from __future__ import annotations

import numpy as np

from hwnas.ir.workloads import nbytes, workspace_bytes


def param_bytes(mod) -> int:
    """Bytes of the constants bound in ``main`` (the weights, as compiled)."""
    import tvm
    from tvm import relax

    total = 0
    seen: set[int] = set()

    def visit(expr):
        nonlocal total
        if isinstance(expr, tvm.ir.GenericConst):
            key = expr.value.data_ptr()  # one weight bound twice is stored once
            if key not in seen:
                seen.add(key)
                total += nbytes(expr.value.shape, expr.value.dtype)

    relax.analysis.post_order_visit(mod["main"], visit)
    return total


def memory_planning_passes() -> list:
    """The first passes of the build: out of dataflow, explicit outputs, static memory plan.

    The build (:func:`hwnas.ir.lower.lowering_pipeline`) starts with
    these, so :func:`planned_memory` reads the plan the compiled module uses.
    """
    from tvm import relax

    return [
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
    ]


def planned_memory(mod) -> dict[str, int]:
    """Activation memory of the fused module after TVM's static memory planning.

    ``arena``: the storages StaticPlanBlockMemory allocates (it already shares
    a storage between tensors whose lifetimes do not overlap); ``io``: input
    and output tensors; ``workspace``: the largest internal buffer set of any
    one kernel (kernels run one at a time). ``peak`` is their sum: the
    activation memory one inference needs at most, weights excluded.
    """
    import tvm
    from tvm import relax

    planned = tvm.transform.Sequential(memory_planning_passes())(mod)
    main = planned["main"]
    arena = 0
    io = 0
    storage_op = tvm.ir.Op.get("relax.memory.alloc_storage")
    builtin_alloc = tvm.ir.Op.get("relax.builtin.alloc_tensor")

    def visit(expr):
        nonlocal arena, io
        if isinstance(expr, relax.Call) and expr.op == storage_op:
            arena += int(expr.args[0].values[0])  # alloc_storage sizes are in bytes
        elif isinstance(expr, relax.Call) and expr.op == builtin_alloc:
            shape = [int(v) for v in expr.args[0].values]
            io += nbytes(shape, expr.args[1].value)

    relax.analysis.post_order_visit(main, visit)
    for p in main.params:
        io += nbytes(_shape(p.ty), p.ty.dtype)
    workspace = 0
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            workspace = max(workspace, workspace_bytes(func))
    return {"arena": arena, "io": io, "workspace": workspace, "peak": arena + io + workspace}


def io_signature(mod) -> tuple[dict[str, tuple[tuple[int, ...], str]], list[tuple[tuple[int, ...], str]]]:
    """Input name -> (shape, dtype), and the output (shape, dtype) list, of ``main``."""
    from tvm import relax

    main = mod["main"]
    inputs = {p.name: (_shape(p.ty), str(p.ty.dtype)) for p in main.params}
    ret = main.ret_ty
    outs = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    outputs = [(_shape(t), str(t.dtype)) for t in outs]
    return inputs, outputs


def _shape(tensor_type) -> tuple[int, ...]:
    return tuple(int(v) for v in tensor_type.shape.values)


