"""ToFloat16: run a Relax module's compute in float16 (the ``precision == "fp16"`` knob of the GPU target).

Relax's ``ToMixedPrecision`` with ``out_dtype="float32"``: convolutions and
matmuls read float16 data and weights and accumulate in float32 (their
result is cast back to float16), elementwise ops run in float16, the
module's inputs and outputs stay float32 (a cast at each end). The weight
casts are constants, which fusion's ``FoldConstant`` turns into float16
weights: half the bytes to move and store. Run before legalization and fusion.
"""

from __future__ import annotations

import tvm


@tvm.transform.module_pass(opt_level=0, name="ToFloat16")
class ToFloat16:
    """Convert the compute of ``main`` to float16 with float32 accumulation."""

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from tvm import relax

        return relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
