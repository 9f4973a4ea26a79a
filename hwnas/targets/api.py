"""The one surface a target backend imports: everything a new target needs, and nothing it should not.

A plugin (an installed package with a ``hwnas.targets`` entry point, see
``docs/writing-a-target.md``) imports from here only; what is here keeps its
name and meaning across releases. In short:

* the contract: :class:`Target` (subclass it), :class:`Built` (what ``build`` returns), :func:`register`,
  :func:`get_target` (an instance by name, e.g. to check a plugin);
* the hardware search space as data: :class:`HardwareSpace`, :class:`ChoiceParam`, :class:`IntParam`,
  :class:`Pow2Param`, :class:`Constraint`;
* the errors a target raises: :class:`InvalidConfigError` (bad config), :class:`CompileError`,
  :class:`RunError`;
* compiling: :func:`compile_module` (a fused, scheduled module for a ``tvm.target.Target``) and
  :func:`build_module` (the same, into a :class:`Built`);
* reading the compiled module: :func:`extract` (one :class:`Workload` per kernel: kind, shapes, MACs,
  FLOPs, bytes, calls), :func:`prim_funcs`, :func:`planned_memory`, :func:`param_bytes`,
  :func:`io_signature`;
* running it on this machine: :func:`random_inputs`, :func:`run_vm`, :func:`measure_vm`
  (:class:`Timing`), :func:`host_cpu`, :func:`host_cores`;
* quantization knobs: :func:`quantization_params`; the metric vocabulary: :data:`METRICS`.
"""

from __future__ import annotations

from hwnas.errors import CompileError, HwnasError, InvalidConfigError, RunError
from hwnas.hss import ChoiceParam, Constraint, HardwareSpace, IntParam, Param, Pow2Param
from hwnas.hss.quant import quantization_params
from hwnas.ir.analysis import io_signature, param_bytes, planned_memory
from hwnas.ir.built import Built
from hwnas.ir.lower import build_module, compile_module
from hwnas.ir.runtime import Timing, host_cores, host_cpu, measure_vm, random_inputs, run_vm
from hwnas.ir.workloads import Workload, extract, prim_funcs
from hwnas.metrics import METRICS
from hwnas.targets import get_target, register
from hwnas.targets.base import MeasureOptions, Target

__all__ = [
    "MeasureOptions",
    "METRICS",
    "Built",
    "ChoiceParam",
    "CompileError",
    "Constraint",
    "HardwareSpace",
    "HwnasError",
    "IntParam",
    "InvalidConfigError",
    "Param",
    "Pow2Param",
    "RunError",
    "Target",
    "Timing",
    "Workload",
    "build_module",
    "compile_module",
    "extract",
    "get_target",
    "host_cores",
    "host_cpu",
    "io_signature",
    "measure_vm",
    "param_bytes",
    "planned_memory",
    "prim_funcs",
    "quantization_params",
    "random_inputs",
    "register",
    "run_vm",
]
