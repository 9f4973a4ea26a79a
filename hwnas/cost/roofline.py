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


#: the cache key of the peaks measured with ``n`` threads; "v2": the bandwidth is measured with those threads
#: too (the first version copied with one thread whatever ``n`` was, under the key "peaks")
PEAKS_KEY = "peaks-v2/threads{n}"


def machine_peaks(*, cache, namespace: str, num_threads: int) -> dict[str, float]:
    """Attainable fp32 GFLOP/s and memory GB/s of this machine with ``num_threads`` threads, measured once.

    FLOPs: the best of a few 1024^3 fp32 matrix products through numpy's BLAS,
    limited to ``num_threads`` (threadpoolctl). Bandwidth: the best of a few
    copies of a 64 MiB array (bytes read + written), well beyond any cache,
    split into ``num_threads`` parts copied at once by as many threads
    (:func:`copy_gbps`). Cached in ``namespace`` under :data:`PEAKS_KEY`.
    """
    num_threads = int(num_threads)
    key = PEAKS_KEY.format(n=num_threads)
    cached = cache.get(namespace, key)
    if cached is not None:
        return {"gflops": cached["gflops"], "gbps": cached["gbps"]}
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    best = math.inf
    with threadpool_limits(limits=num_threads):
        a @ a
        for _ in range(5):
            t0 = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t0)
    value = {"gflops": 2 * 1024**3 / best / 1e9, "gbps": copy_gbps(num_threads)}
    cache.put(namespace, key, {**value, "threads": num_threads})
    return value


def copy_gbps(num_threads: int, *, nbytes: int = 64 * 1024 * 1024, rounds: int = 5) -> float:
    """Copy bandwidth (bytes read + written per second, in GB/s): the best of ``rounds`` copies of an
    ``nbytes`` array split into ``num_threads`` contiguous parts, each copied by its own thread at once
    (numpy's copy releases the GIL)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    n = max(1, int(num_threads))
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    bounds = np.linspace(0, src.size, n + 1).astype(int)
    parts = [(dst[lo:hi], src[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    # every part waits for the others before it copies: the n parts run on n threads at once
    start = threading.Barrier(n, timeout=60)

    def copy(part) -> None:
        start.wait()
        np.copyto(*part)

    best = math.inf
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(copy, parts))  # start the threads, touch the pages
        for _ in range(rounds):
            t0 = time.perf_counter()
            list(pool.map(copy, parts))
            best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def roofline_ms(workloads: Sequence[Workload], *, gflops: float, gbps: float, per_inference_ms: float = 0.0,
                per_call_ms: float = 0.0) -> float:
    """Sum over kernel calls of ``max(flops / peak, bytes / bandwidth)``, plus the runtime overhead."""
    total = per_inference_ms
    for w in workloads:
        compute = w.flops / (gflops * 1e9)
        memory = w.bytes_moved / (gbps * 1e9)
        total += w.calls * (max(compute, memory) * 1e3 + per_call_ms)
    return total
