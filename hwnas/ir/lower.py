"""Lowering: torch module -> ONNX file -> Relax IRModule -> fused PrimFuncs -> compiled module.

The ONNX file is kept (it is part of every artifact and the reference that
ONNX Runtime runs in tests). Weights are bound as constants in ``main``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from hwnas.errors import CompileError, ModelImportError, UnsupportedOperatorError
from hwnas.ir.analysis import io_signature, memory_planning_passes
from hwnas.ir.built import Built
from hwnas.ir.workloads import prim_funcs
from hwnas.util import error_line

log = logging.getLogger(__name__)

#: ONNX opset used for every export.
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def export_onnx(module, input_shape: Sequence[int], path: str | os.PathLike) -> Path:
    """Export ``module`` (eval mode) to ONNX at ``path`` with one input and one output."""
    import torch

    path = Path(path)
    x = torch.zeros(tuple(input_shape), dtype=torch.float32)
    tmp = path.with_name(path.name + ".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (x,),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            do_constant_folding=True,
        )
    os.replace(tmp, path)
    return path


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file; one clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several unrelated types for a bad file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelImportError(f"{path} is not a valid ONNX model: {reason}") from None
    if len(model.graph.node) == 0:
        raise ModelImportError(f"{path} is not a valid ONNX model: the graph has no nodes")
    return model


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs of the graph (initializers listed as inputs by old exporters excluded)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def static_input_shapes(model: onnx.ModelProto, batch: int = 1) -> dict[str, list[int]]:
    """Input shapes with symbolic dimensions fixed: the first to ``batch``; any other is an error."""
    shapes: dict[str, list[int]] = {}
    for inp in graph_inputs(model):
        dims = []
        for k, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif k == 0:
                dims.append(batch)
            else:
                raise ModelImportError(
                    f"input {inp.name!r} has a symbolic dimension {k} ({d.dim_param or '?'}); "
                    "only the batch dimension may be symbolic"
                )
        shapes[inp.name] = dims
    return shapes


def check_operators(model: onnx.ModelProto) -> None:
    """Raise :class:`UnsupportedOperatorError` naming the first node TVM's importer cannot take."""
    from tvm.relax.frontend.onnx import onnx_frontend

    supported = onnx_frontend._get_convert_map()
    for i, node in enumerate(model.graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in supported:
            name = node.name or f"#{i}"
            domain = f" (domain {node.domain})" if node.domain not in ("", "ai.onnx") else ""
            raise UnsupportedOperatorError(
                f"operator {node.op_type}{domain} of node {name!r} is not supported by TVM's ONNX importer"
            )


#: a node whose inputs are all constants is folded when they hold at most this many elements (shape arithmetic,
#: not weights: those TVM's FoldConstant folds after the import)
SHAPE_FOLD_MAX_ELEMENTS = 64


def fold_shape_computations(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """``model`` with its shape arithmetic on static shapes replaced by constants.

    torch's exporter writes ``x.chunk(2, 1)`` or ``x.shape[1] // 2`` as
    ``Shape -> Gather -> Div -> Slice`` on the tensor's shape at run time; TVM's
    importer turns that into a dynamically shaped slice that its passes cannot
    fold ("emit_te now only supports Tensor that has ShapeExpr shape"). With
    the input ``shapes`` fixed, ONNX shape inference knows every such shape:
    each ``Shape`` of a static tensor, and then each node whose inputs are all
    small constants, becomes a ``Constant`` node (evaluated by ONNX's reference
    runtime). Nothing else changes; a model without such nodes is returned as is.
    """
    from onnx import helper, numpy_helper, shape_inference
    from onnx.reference import ReferenceEvaluator

    if not any(n.op_type == "Shape" for n in model.graph.node):
        return model
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in graph_inputs(fixed):  # the symbolic batch fixed, so that inference sees static shapes
        for d, value in zip(inp.type.tensor_type.shape.dim, shapes.get(inp.name, [])):
            d.dim_value = value
    try:
        inferred = shape_inference.infer_shapes(fixed)
    except Exception as exc:  # onnx raises its own error types for a graph it cannot infer
        log.debug("shape inference failed, shapes not folded: %s", exc)
        return model
    static: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            static[vi.name] = [int(d.dim_value) for d in t.shape.dim]
    consts = {i.name: numpy_helper.to_array(i) for i in fixed.graph.initializer}
    nodes, folded = [], 0
    for node in fixed.graph.node:
        value = None
        if node.domain in ("", "ai.onnx") and len(node.output) == 1:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Shape" and node.input[0] in static:
                value = np.array(static[node.input[0]][attrs.get("start", 0):attrs.get("end")], dtype=np.int64)
            elif node.op_type == "Constant" and not node.input:
                value = None  # already a constant: recorded below
            elif node.input and all(i in consts and consts[i].size <= SHAPE_FOLD_MAX_ELEMENTS
                                    for i in node.input if i):
                try:
                    value = ReferenceEvaluator(node).run(None, {i: consts[i] for i in node.input if i})[0]
                except Exception as exc:  # an op the reference runtime lacks: left to TVM
                    log.debug("not folded: %s (%s)", node.op_type, exc)
        if node.op_type == "Constant" and len(node.output) == 1 and node.attribute and \
                node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        if value is not None:
            value = np.asarray(value)
            consts[node.output[0]] = value
            node = helper.make_node("Constant", [], [node.output[0]], name=node.name,
                                    value=numpy_helper.from_array(value, node.output[0]))
            folded += 1
        nodes.append(node)
    if not folded:
        return model
    del fixed.graph.node[:]
    fixed.graph.node.extend(nodes)
    log.debug("folded %d shape computations", folded)
    return fixed


def to_relax(model: onnx.ModelProto, *, batch: int = 1):
    """Import an ONNX model into a Relax IRModule with its weights bound as constants."""
    import tvm.relax.frontend.onnx  # noqa: F401  (registers the frontend submodule)
    from tvm import relax

    check_operators(model)
    shapes = static_input_shapes(model, batch)
    model = fold_shape_computations(model, shapes)
    try:
        mod = relax.frontend.onnx.from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    except Exception as exc:  # the importer raises TVMError, ValueError, KeyError...
        raise ModelImportError(f"TVM could not import the ONNX model: {error_line(exc)}") from None
    return mod


def fuse(mod):
    """Legalize and fuse: the module whose PrimFuncs the hardware passes schedule.

    The same list as TVM's CPU legalization passes, run once here so that the
    build below does not fuse again (a second FuseOps would merge scheduled
    functions and lose their schedules).
    """
    import tvm
    from tvm import relax

    seq = tvm.transform.Sequential(
        [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
        ]
    )
    return seq(mod)


def lowering_pipeline():
    """The Relax pipeline :func:`tvm.compile` runs on an already fused, scheduled module."""
    import tvm
    from tvm import relax

    return tvm.transform.Sequential(
        memory_planning_passes()
        + [
            relax.transform.LowerAllocTensor(),
            relax.transform.KillAfterLastUse(),
            relax.transform.LowerRuntimeBuiltin(),
            relax.transform.ComputePrimValue(),
            relax.transform.VMShapeLower(),
            relax.transform.AttachGlobalSymbol(),
        ]
    )


def compile_module(mod, target):
    """Compile a fused (and scheduled) module for ``target`` with :func:`lowering_pipeline`."""
    import tvm

    return tvm.compile(mod, target, relax_pipeline=lowering_pipeline())


def build_module(mod, tgt, hw, *, what: str):
    """Compile a fused, scheduled module for the LLVM target ``tgt`` into a :class:`Built` (``what`` names
    the target in the error of a failed compile)."""
    try:
        with tgt:
            ex = compile_module(mod, tgt)
    except Exception as exc:  # TVM's errors are not typed usefully
        raise CompileError(f"compiling {what} failed: {error_line(exc)}") from None
    inputs, outputs = io_signature(mod)
    return Built(module=mod, executable=ex, tvm_target=tgt, hw=dict(hw), inputs=inputs, outputs=outputs)
