"""Measurement of a compiled Relax module on a local device: warm-up, repeats, median, spread."""

from __future__ import annotations

import dataclasses
import os
import statistics

import numpy as np

from hwnas.errors import RunError
from hwnas.util import error_line


@dataclasses.dataclass(frozen=True)
class Timing:
    median_ms: float
    std_ms: float
    #: per-repeat mean latency in ms
    samples_ms: tuple[float, ...]


def set_num_threads(n: int) -> None:
    """Size TVM's CPU thread pool for this process (``TVM_NUM_THREADS`` only acts at start-up).

    The workers share every core this process may run on (TVM's affinity mode
    -3), as they do when the pool is sized at start-up. Mode 1 ("big" cores)
    pins each worker to a core; the calling thread, which runs a share of every
    parallel loop, then competed with a pinned worker for its core, and a
    2-thread nb201 measured 2.6 ms instead of 1.3 ms. TVM pins the calling
    thread while it configures the pool; its affinity is given back
    afterwards, or this process would see one core from then on
    (``host_cores``) and so would every worker process it starts.
    """
    import tvm

    get = getattr(os, "sched_getaffinity", None)
    before = get(0) if get is not None else None
    cpus = sorted(before) if before is not None else list(range(os.cpu_count() or 1))
    tvm.get_global_func("runtime.config_threadpool")(-3, int(n), [str(c) for c in cpus])
    if before is not None and os.sched_getaffinity(0) != before:
        os.sched_setaffinity(0, before)


def random_inputs(inputs: dict[str, tuple[tuple[int, ...], str]], seed: int = 0) -> dict[str, np.ndarray]:
    """Reproducible inputs: normal floats, small ints for integer inputs."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in inputs.items():
        if np.issubdtype(np.dtype(dtype), np.floating):
            out[name] = rng.standard_normal(shape).astype(dtype)
        else:
            out[name] = rng.integers(-8, 8, size=shape).astype(dtype)
    return out


def run_vm(executable, arrays: list[np.ndarray], device=None) -> list[np.ndarray]:
    """Run ``main`` once on host arrays; return the outputs as numpy arrays."""
    import tvm
    from tvm import relax

    dev = device or tvm.cpu()
    try:
        vm = relax.VirtualMachine(executable, dev)
        out = vm["main"](*[tvm.runtime.tensor(a, dev) for a in arrays])
    except Exception as exc:  # TVM raises its own error types from the runtime
        raise RunError(f"running the compiled module failed: {error_line(exc)}") from None
    outs = list(out) if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
    return [o.numpy() for o in outs]


def measure_vm(
    executable,
    arrays: list[np.ndarray],
    *,
    device=None,
    warmup: int = 3,
    repeats: int = 10,
    min_repeat_ms: float = 20.0,
) -> Timing:
    """Time ``main``: ``warmup`` untimed runs, then ``repeats`` repeats of enough runs to last ``min_repeat_ms``."""
    import tvm
    from tvm import relax

    if repeats < 1:
        raise RunError(f"repeats must be >= 1, got {repeats}")
    dev = device or tvm.cpu()
    try:
        vm = relax.VirtualMachine(executable, dev)
        args = [tvm.runtime.tensor(a, dev) for a in arrays]
        return time_main(vm, args, dev, warmup=max(warmup, 1), repeats=repeats, min_repeat_ms=min_repeat_ms)
    except Exception as exc:
        raise RunError(f"measuring the compiled module failed: {error_line(exc)}") from None


def time_main(vm, args: list, dev, *, warmup: int, repeats: int, min_repeat_ms: float) -> Timing:
    """``warmup`` untimed runs of a VM's ``main`` (local or over RPC), then ``repeats`` timed repeats."""
    for _ in range(warmup):
        vm["main"](*args)
    dev.sync()
    evaluator = vm.time_evaluator("main", dev, number=1, repeat=repeats, min_repeat_ms=int(min_repeat_ms))
    samples = tuple(float(r) * 1e3 for r in evaluator(*args).results)
    std = statistics.pstdev(samples) if len(samples) > 1 else 0.0
    return Timing(median_ms=float(statistics.median(samples)), std_ms=std, samples_ms=samples)
