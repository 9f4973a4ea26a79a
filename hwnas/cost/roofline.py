"""The ``analytical`` cost method on a CPU: a roofline per kernel call on the machine's measured peaks.

Each kernel call takes ``max(flops / peak_flops, bytes / bandwidth)`` with the
kernel's FLOPs (TVM's estimate on the TIR) and its compulsory bytes (inputs,
weights, outputs once), plus the runtime's overhead (:func:`hwnas.cost.lut.runtime_overhead`).
It needs no kernel measurement and ignores what the schedule does (it prices
the work, not the code), so it ranks networks better than hardware configs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from hwnas.ir.workloads import Workload


def machine_peaks(*, cache, namespace: str, num_threads: int) -> dict[str, float]:
    """Attainable fp32 GFLOP/s and memory GB/s of this machine with ``num_threads`` threads, measured once.

    FLOPs: the best of a few 1024^3 fp32 matrix products through numpy's BLAS,
    limited to ``num_threads`` (threadpoolctl). Bandwidth: the best of a few
    copies of a 64 MiB array (bytes read + written), well beyond any cache.
    """
    cached = cache.get(namespace, "peaks")
    if cached is not None:
        return cached
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    best = math.inf
    with threadpool_limits(limits=int(num_threads)):
        a @ a
        for _ in range(5):
            t0 = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t0)
    gflops = 2 * 1024**3 / best / 1e9
    src = np.ones(16 * 1024 * 1024, dtype=np.float32)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    gbps = 2 * src.nbytes / best / 1e9
    value = {"gflops": gflops, "gbps": gbps}
    cache.put(namespace, "peaks", value)
    return value


def roofline_ms(workloads: Sequence[Workload], *, gflops: float, gbps: float, per_inference_ms: float = 0.0,
                per_call_ms: float = 0.0) -> float:
    """Sum over kernel calls of ``max(flops / peak, bytes / bandwidth)``, plus the runtime overhead."""
    total = per_inference_ms
    for w in workloads:
        compute = w.flops / (gflops * 1e9)
        memory = w.bytes_moved / (gbps * 1e9)
        total += w.calls * (max(compute, memory) * 1e3 + per_call_ms)
    return total
