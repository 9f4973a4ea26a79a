"""The ``lut`` (lookup table) cost method: kernels measured alone once, cached by workload, summed.

Each kernel of the compiled module (a :class:`~hwnas.ir.workloads.Workload`,
keyed by its content hash, which covers the schedule the hardware knobs gave
it) is compiled alone and measured once; the result is kept in a cache (the
run's results store, see :mod:`hwnas.cost.cache`) and reused by every later
candidate that contains the same kernel. A network's latency is the sum over
its kernel calls plus the runtime's measured overhead (a fixed part per
inference and a part per kernel call, see :func:`runtime_overhead`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from hwnas.ir import runtime as measure
from hwnas.ir.lower import compile_module
from hwnas.ir.runtime import measure_kernel
from hwnas.ir.workloads import extract, prim_funcs


def _chain_module(n_calls: int):
    """A Relax module calling a trivial one-element kernel ``n_calls`` times in a chain."""
    import tvm
    from tvm import relax
    from tvm.script import tirx as T

    @T.prim_func(private=True)
    def bump(a: T.Buffer((1,), "float32"), b: T.Buffer((1,), "float32")):
        b[0] = a[0] + T.float32(1.0)

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1,), "float32"))
    with bb.function("main", [x]):
        gv = bb.add_func(bump, "bump")
        y = x
        for _ in range(n_calls):
            y = bb.emit(relax.call_tir(gv, (y,), relax.TensorType((1,), "float32")))
        bb.emit_func_output(y)
    return bb.get()


def runtime_overhead(tvm_target, *, cache, namespace: str, num_threads: int) -> dict[str, float]:
    """The VM's cost of one inference beyond its kernels: ``{"per_inference_ms", "per_call_ms"}``.

    Measured once (per namespace: target and thread count) on two chains of a
    trivial kernel, 1 and 65 calls long (the fastest of 15 repeats each), and
    cached: the per-call part is the slope, the per-inference part what is
    left of the short chain.
    """
    cached = cache.get(namespace, "overhead")
    if cached is not None:
        return cached
    measure.set_num_threads(num_threads)
    times = {}
    for n in (1, 65):
        with tvm_target:
            ex = compile_module(_chain_module(n), tvm_target)
        # the fastest repeat: the overhead is a small difference of two times, and other work only adds
        times[n] = min(measure.measure_vm(ex, [np.zeros(1, "float32")], repeats=15, min_repeat_ms=10).samples_ms)
    per_call = max(0.0, (times[65] - times[1]) / 64)
    value = {"per_inference_ms": max(0.0, times[1] - per_call), "per_call_ms": per_call}
    cache.put(namespace, "overhead", value)
    return value


def kernel_entry(workload, ms: float, hw: dict[str, Any]) -> dict[str, Any]:
    """The lookup table's record of one measured kernel: its time, its workload record, the knobs."""
    return {"ms": float(ms), **workload.as_dict(), "hw": dict(hw)}


@dataclasses.dataclass
class LutResult:
    latency_ms: float
    hits: int
    misses: int
    #: per workload: (func, key, calls, ms per call)
    rows: list[tuple[str, str, int, float]]


def lut_latency(built, *, cache, namespace: str, num_threads: int,
                measure_fn: Callable[[Any, Any], float] | None = None) -> LutResult:
    """Latency of a built module as the sum of its kernels' cached (else measured) times plus overhead.

    ``namespace`` names the machine and settings the times belong to (the
    target, its LLVM cpu, the thread count); a kernel is looked up by its
    content key and measured only when absent.
    """
    measure_fn = measure_fn or (lambda func, tgt: measure_kernel(func, tgt))
    overhead = runtime_overhead(built.tvm_target, cache=cache, namespace=namespace, num_threads=num_threads)
    funcs = prim_funcs(built.module)
    total = overhead["per_inference_ms"]
    hits = misses = 0
    rows = []
    measured_threads = False
    for w in built.fact("workloads", lambda b: extract(b.module)):
        entry = cache.get(namespace, w.key)
        if entry is None:
            if not measured_threads:
                measure.set_num_threads(num_threads)
                measured_threads = True
            # the entry says what was measured, for whoever reads the table
            # (the whole workload record and the knobs: the kernel predictor trains on these entries)
            entry = kernel_entry(w, measure_fn(funcs[w.func], built.tvm_target), built.hw)
            cache.put(namespace, w.key, entry)
            misses += 1
        else:
            hits += 1
        ms = float(entry["ms"])
        total += w.calls * (ms + overhead["per_call_ms"])
        rows.append((w.func, w.key, w.calls, ms))
    return LutResult(latency_ms=total, hits=hits, misses=misses, rows=rows)


