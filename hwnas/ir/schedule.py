"""Helpers every schedule pass shares (CPU, GPU, MCU): loop and block queries, vectorize, unroll, the driver.

:func:`schedule_prim_funcs` is the one driver (CPU, GPU and MCU passes): it
applies a rule to each unscheduled PrimFunc of a fused module, marks what it
scheduled with :data:`SCHEDULED_ATTR`, which later schedule passes respect,
and what its rule failed on with :data:`UNSCHEDULED_ATTR`, which the
evaluation reports (:func:`unscheduled_functions`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tvm
from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad

from hwnas.errors import HwnasError, InvalidConfigError
from hwnas.util import error_line

log = logging.getLogger(__name__)


#: Function attribute set on every PrimFunc a hwnas schedule pass scheduled.
SCHEDULED_ATTR = "hwnas.scheduled"
#: Function attribute set on a PrimFunc whose schedule rule raised: ``"PASS: one-line error"``.
UNSCHEDULED_ATTR = "hwnas.unscheduled"
#: TVM's mark of a scheduled PrimFunc (dlight and the default GPU schedule skip it).
IS_SCHEDULED = "tirx.is_scheduled"


def config_fields(config: Mapping[str, Any], cls: type, *, what: str) -> dict[str, Any]:
    """The knobs of a hardware-config dict that the dataclass ``cls`` declares (others are ignored), with
    numpy ints (from a decoded search vector) made Python ints; ``what`` names the config in the error."""
    if not isinstance(config, Mapping):
        raise InvalidConfigError(f"{what} must be a mapping, got {type(config).__name__}")
    values: dict[str, Any] = {}
    for key, value in config.items():
        if key not in cls.__dataclass_fields__:
            continue
        if hasattr(value, "__index__") and not isinstance(value, bool):
            value = int(value)
        values[key] = value
    return values


def divisor_tile(extent: int, tile: int) -> int:
    """The largest divisor of ``extent`` that is at most ``tile`` (clamped to ``extent``)."""
    tile = max(1, min(int(tile), int(extent)))
    for t in range(tile, 0, -1):
        if extent % t == 0:
            return t
    return 1


def iter_kinds(sch: s_tir.Schedule, block: s_tir.SBlockRV) -> str:
    """The iterator kinds of a block as a string: ``S`` spatial, ``R`` reduction, ``O`` other."""
    kinds = {0: "S", 2: "R"}
    return "".join(kinds.get(int(iv.iter_type), "O") for iv in sch.get(block).iter_vars)


def loop_extents(sch: s_tir.Schedule, loops: Sequence[s_tir.LoopRV]) -> list[int]:
    """Constant extents of ``loops`` (ValueError for a symbolic one)."""
    extents = []
    for loop in loops:
        extent = sch.get(loop).extent
        if not isinstance(extent, tirx.IntImm):
            raise ValueError("symbolic loop extent")
        extents.append(int(extent.value))
    return extents


def root_blocks(sch: s_tir.Schedule) -> list[s_tir.SBlockRV]:
    """The blocks directly under the root block of the function being scheduled."""
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def has_one_loop_per_iter(sch: s_tir.Schedule, block: s_tir.SBlockRV) -> bool:
    """Whether ``block`` sits under exactly one loop per iterator, with the same extents (unscheduled)."""
    ivs = sch.get(block).iter_vars
    loops = sch.get_loops(block)
    if len(loops) != len(ivs):
        return False
    try:
        extents = loop_extents(sch, loops)
    except ValueError:
        return False
    return all(
        isinstance(iv.dom.extent, tirx.IntImm) and int(iv.dom.extent.value) == e
        for iv, e in zip(ivs, extents)
    )


def is_plain_copy(sch: s_tir.Schedule, block: s_tir.SBlockRV) -> bool:
    """Whether ``block`` stores one element it loads, unchanged (a padding stage that pads nothing)."""
    body = sch.get(block).body
    return isinstance(body, tirx.BufferStore) and isinstance(body.value, TensorLoad)


def vectorize_inner(sch: s_tir.Schedule, loop: s_tir.LoopRV, width: int) -> s_tir.LoopRV | None:
    """Vectorize ``loop`` with the largest lane count <= ``width`` that divides it.

    A loop longer than the lane count is split first (the outer part stays
    serial, for the unroller). Returns the vectorized loop, or None when
    ``width`` or the divisor is 1.
    """
    if width <= 1:
        return None
    (extent,) = loop_extents(sch, [loop])
    lanes = divisor_tile(extent, width)
    if lanes <= 1:
        return None
    if lanes < extent:
        loop = sch.split(loop, [None, lanes])[1]
    sch.vectorize(loop)
    return loop


def annotate_unroll(sch: s_tir.Schedule, loop: s_tir.LoopRV, max_step: int) -> None:
    """Ask TIR's unroller to unroll loop nests of at most ``max_step`` steps under ``loop``."""
    if max_step > 0:
        sch.annotate(loop, "pragma_auto_unroll_max_step", max_step)
        sch.annotate(loop, "pragma_unroll_explicit", 1)


def schedule_prim_funcs(
    mod: tvm.IRModule,
    pass_name: str,
    rule: Callable[[s_tir.Schedule], bool],
    logger: logging.Logger = log,
    *,
    mark_tir_scheduled: bool = False,
) -> tvm.IRModule:
    """Apply ``rule`` to each unscheduled PrimFunc of a copy of ``mod``: the one driver of every schedule pass.

    ``rule`` gets a schedule of the function (as ``main``) and returns True when
    it scheduled it, False when the function is not its kind. A scheduled
    function is marked with :data:`SCHEDULED_ATTR` (and ``tirx.is_scheduled``
    with ``mark_tir_scheduled``, so that dlight leaves it alone); functions
    carrying either mark are skipped.

    A function whose rule raises a :class:`~hwnas.errors.HwnasError` fails the
    pass. One whose rule raises anything else is left as it was (a later
    fallback, such as the CPU's ScheduleInjective or the GPU's dlight, or no
    schedule at all takes it) and marked with :data:`UNSCHEDULED_ATTR`
    (``"PASS: one-line error"``, the first failing pass); the mark stays when a
    fallback schedules the function, since that is still not the asked-for
    configuration. The evaluation reports the marked functions
    (:func:`unscheduled_functions`); a warning is logged once per (pass,
    reason) and process.
    """
    out = mod.clone()
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        if func.attrs is not None and (SCHEDULED_ATTR in func.attrs or IS_SCHEDULED in func.attrs):
            continue
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        try:
            matched = rule(sch)
        except HwnasError:
            raise
        except Exception as exc:  # one odd function must not fail the module: it is recorded instead
            reason = error_line(exc, with_type=True)
            if func.attrs is None or UNSCHEDULED_ATTR not in func.attrs:  # the first failure is the one to report
                out.update_func(gv, func.with_attr(UNSCHEDULED_ATTR, f"{pass_name}: {reason}"))
            _warn_once(logger, pass_name, reason, gv.name_hint)
            continue
        if matched:
            new = sch.mod["main"].with_attr(SCHEDULED_ATTR, pass_name)
            if mark_tir_scheduled:
                new = new.with_attr(IS_SCHEDULED, True)
            out.update_func(gv, new)
            logger.debug("%s: scheduled %s", pass_name, gv.name_hint)
    return out


#: (pass, reason) pairs already warned about in this process
_WARNED: set[tuple[str, str]] = set()


def _warn_once(logger: logging.Logger, pass_name: str, reason: str, func_name: str) -> None:
    key = (pass_name, reason)
    if key in _WARNED:
        logger.debug("%s: left %s unscheduled: %s", pass_name, func_name, reason)
        return
    _WARNED.add(key)
    logger.warning("%s could not schedule %s (left with the default schedule, not the asked-for configuration; "
                   "further functions failing the same way are not warned about): %s", pass_name, func_name, reason)


def unscheduled_functions(mod: tvm.IRModule) -> list[dict[str, str]]:
    """The PrimFuncs of ``mod`` a schedule rule failed on: ``[{"function", "pass", "error"}]``, sorted by name."""
    out = []
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc) and func.attrs is not None and UNSCHEDULED_ATTR in func.attrs:
            pass_name, _, error = str(func.attrs[UNSCHEDULED_ATTR]).partition(": ")
            out.append({"function": gv.name_hint, "pass": pass_name, "error": error})
    return sorted(out, key=lambda r: r["function"])


#: Block names of dense / matmul computations after TVM's legalization.
DENSE_BLOCKS: frozenset[str] = frozenset(
    {"matmul", "T_matmul", "T_matmul_NT", "NT_matmul", "T_dense", "dense", "T_batch_matmul_NT",
     "T_batch_matmul_NN", "batch_matmul"}
)
