"""Architecture-level figures read from the ONNX graph (independent of any target)."""

from __future__ import annotations

import onnx
from onnx import shape_inference


def _dims(vi) -> list[int] | None:
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return dims


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of one inference: Conv, ConvTranspose, Gemm and MatMul nodes."""
    inferred = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        d = _dims(vi)
        if d is not None:
            shapes[vi.name] = d
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in inferred.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(node.input[1])
            y = shapes.get(node.output[0])
            x = shapes.get(node.input[0])
            if w is None or y is None:
                continue
            if node.op_type == "Conv":
                macs += _prod(y) * _prod(w[1:])  # each output: Cin/groups * kh * kw products
            elif x is not None:
                macs += _prod(x) * _prod(w[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            y = shapes.get(node.output[0])
            if a is None or y is None:
                continue
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if trans_a and len(a) >= 2 else a[-1]
            macs += _prod(y) * k
    return macs


#: ops whose result does not depend on the order of their inputs: their inputs are hashed as a multiset
_COMMUTATIVE = frozenset({"Add", "Mul", "Sum", "Max", "Min", "Mean", "And", "Or", "Xor", "Equal"})
#: associative ones too, by family: a chain of them is hashed as one op over all its operands, so
#: ``(a + b) + c`` and ``(a + c) + b`` are one sum
_ASSOCIATIVE = {"Add": "sum", "Sum": "sum", "Mul": "product", "Max": "max", "Min": "min"}
#: ops that pass their first input through at inference (ONNX Runtime and TVM drop them too)
_PASS_THROUGH = frozenset({"Identity", "Dropout"})
_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                          onnx.TensorProto.BFLOAT16})


def _digest(*parts) -> bytes:
    import hashlib

    h = hashlib.sha256()
    for p in parts:
        b = p if isinstance(p, bytes) else repr(p).encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.digest()


def _tensor_digest(t: onnx.TensorProto) -> bytes:
    """A weight (a float tensor of more than one element) by dtype and shape; anything else (shapes,
    axes, indices, scalars such as a clip bound) by value too."""
    dims = tuple(int(d) for d in t.dims)
    if t.data_type in _FLOAT_TYPES and _prod(dims) > 1:
        return _digest("weight", t.data_type, dims)
    from onnx import numpy_helper

    return _digest("value", t.data_type, dims, numpy_helper.to_array(t).tobytes())


def _attribute_digest(a: onnx.AttributeProto) -> bytes:
    from onnx import helper

    if a.type == onnx.AttributeProto.TENSOR:
        return _digest(a.name, _tensor_digest(a.t))
    if a.type == onnx.AttributeProto.TENSORS:
        return _digest(a.name, *[_tensor_digest(t) for t in a.tensors])
    if a.type == onnx.AttributeProto.GRAPH:
        return _digest(a.name, _graph_digest(a.g))
    if a.type == onnx.AttributeProto.GRAPHS:
        return _digest(a.name, *[_graph_digest(g) for g in a.graphs])
    return _digest(a.name, helper.get_attribute_value(a))


def _value_type(vi) -> tuple:
    t = vi.type.tensor_type
    return (t.elem_type, tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim))


def _graph_digest(g: onnx.GraphProto, shapes: dict[str, tuple] | None = None) -> bytes:
    """``shapes``: each value's inferred (dtype, shape), part of the digest of the node that makes it (a
    float constant that sets a shape, e.g. ``Resize``'s scales, counts through the shape it gives)."""
    shapes = shapes or {}
    inits = {t.name: _tensor_digest(t) for t in g.initializer}
    values: dict[str, bytes] = {"": _digest("absent")}
    values.update(inits)
    #: value -> (family, operands) for the values an associative op makes
    chains: dict[str, tuple[str, list[bytes]]] = {}
    for i, vi in enumerate(v for v in g.input if v.name not in inits):
        values[vi.name] = _digest("input", i, _value_type(vi))
    for node in g.node:  # ONNX lists nodes in topological order
        ins = [values.get(name, _digest("outer", name)) for name in node.input]  # "outer": a subgraph's capture
        if node.op_type in _PASS_THROUGH and node.domain in ("", "ai.onnx") and ins:
            values[node.output[0]] = ins[0]
            for extra in node.output[1:]:
                values[extra] = _digest("absent")
            continue
        family = _ASSOCIATIVE.get(node.op_type) if node.domain in ("", "ai.onnx") and not node.attribute else None
        if family is not None and len(node.output) == 1:
            operands = [d for name, digest in zip(node.input, ins)
                        for d in (chains[name][1] if chains.get(name, ("",))[0] == family else [digest])]
            chains[node.output[0]] = (family, operands)
            values[node.output[0]] = _digest("chain", family, shapes.get(node.output[0]), *sorted(operands))
            continue
        if node.op_type in _COMMUTATIVE and node.domain in ("", "ai.onnx"):
            ins = sorted(ins)
        d = _digest("node", node.domain, node.op_type, *sorted(_attribute_digest(a) for a in node.attribute),
                    "shapes", *[shapes.get(o) for o in node.output], "inputs", *ins)
        for k, out in enumerate(node.output):
            values[out] = _digest(d, k)
    return _digest("graph", *[values.get(o.name, _digest("outer", o.name)) for o in g.output])


def structural_key(model: onnx.ModelProto) -> str:
    """A hash of ``model``'s architecture: equal for two graphs that differ only in what does not change
    the architecture.

    Each value is hashed from the node that makes it and the hashes of that node's inputs, and the key
    is the outputs' hashes, so nodes on no path to an output (dead code) do not count, nor do names, the
    order the nodes are listed in, the order of a commutative op's inputs (``Add``, ``Mul``, ...), how
    a chain of one associative op is bracketed (``(a + b) + c`` and ``(a + c) + b`` are one sum), or
    ``Identity`` / ``Dropout`` nodes. Every value's inferred dtype and shape count. Weights (float
    tensors of more than one element) count by dtype and shape, not by value: one architecture with
    other weights is one architecture (a supernet or a training run gives it its weights). Every other
    constant (shapes, axes, scalars such as a clip bound) counts by value.
    """
    try:
        inferred = shape_inference.infer_shapes(model).graph
        shapes = {vi.name: _value_type(vi) for vi in [*inferred.value_info, *inferred.output]}
    except Exception:  # a model ONNX cannot infer: its structure alone
        shapes = {}
    return _digest("onnx", _graph_digest(model.graph, shapes)).hex()[:32]
