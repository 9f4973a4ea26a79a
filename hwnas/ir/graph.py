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
