"""GpuDefaultSchedule: dlight's default CUDA schedules for the PrimFuncs no hwnas GPU pass scheduled.

Every kernel of a CUDA module must bind its loops to blocks and threads, or
the build fails. After :class:`~hwnas.targets.gpu.tile_conv2d.GpuTileConv2d`
and :class:`~hwnas.targets.gpu.tile_dense.GpuTileDense`, the remaining
functions (pooling, reductions such as a global mean, elementwise glue, and
any conv/dense the hwnas rules did not match) get TVM's dlight rules, tried
in order: ``Matmul``, ``GEMV``, ``Reduction``, ``GeneralReduction``,
``Fallback`` (the last one binds any loop nest). dlight skips functions
marked ``tirx.is_scheduled``, which the hwnas passes set. The threads dlight
uses per block are the target's ``max_threads_per_block``.
"""

from __future__ import annotations

import tvm

from hwnas.ir.workloads import block_domain, main_block

#: reductions up to this many elements per output are computed by one thread
SHORT_REDUCTION = 64


@tvm.transform.module_pass(opt_level=0, name="GpuDefaultSchedule")
class GpuDefaultSchedule:
    """Apply dlight's default GPU rules to every unscheduled PrimFunc (needs a CUDA target in scope)."""

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from tvm.s_tir import dlight as dl


        short = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs is not None and "tirx.is_scheduled" in func.attrs):
                continue
            block = main_block(func)
            if block is not None:
                _, red = block_domain(block)
                size = 1
                for r in red:
                    size *= r
                if red and 0 < size <= SHORT_REDUCTION:
                    short[gv] = func
        if short:
            done = dl.ApplyDefaultSchedule(dl.gpu.Fallback())(tvm.IRModule(dict(short)))
            mod = mod.clone()
            for gv in short:
                mod.update_func(gv, done[gv.name_hint])
        rules = dl.ApplyDefaultSchedule(
            dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()
        )
        return rules(mod)
