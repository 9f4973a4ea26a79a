"""The TVM runtime on this machine: the thread pool, running and timing a compiled module or one kernel, host facts.

A compiled Relax module is measured with warm-up and repeats (median and
spread, :func:`measure_vm`); a PrimFunc can be compiled and timed alone
(:func:`kernel_timer`). :func:`host_cores` and :func:`host_cpu` say what the
machine is.
"""

from __future__ import annotations

import dataclasses
import functools
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


#: names under which :func:`register_remote_functions` makes this module's thread control callable over RPC
#: (the second returns :func:`thread_cores` as comma-separated text)
REMOTE_SET_NUM_THREADS = "hwnas.runtime.set_num_threads"
REMOTE_THREAD_CORES = "hwnas.runtime.thread_cores"


def thread_cores() -> list[int]:
    """How many cores each thread of this process may run on, fewest first (Linux; else ``[host_cores()]``).

    After :func:`set_num_threads` every thread (the pool's workers, the caller)
    may run on every core the process may; a 1 says a thread was pinned.
    """
    from pathlib import Path

    counts = []
    try:
        for task in Path("/proc/self/task").iterdir():
            try:
                counts.append(len(os.sched_getaffinity(int(task.name))))
            except OSError:  # the thread ended meanwhile
                continue
    except (OSError, AttributeError):
        return [host_cores()]
    return sorted(counts) or [host_cores()]


def register_remote_functions() -> None:
    """Register :func:`set_num_threads` and :func:`thread_cores` as TVM global functions.

    An RPC server runs this at start-up (``server_init_callback`` of
    :func:`hwnas.targets.remote.start_server`), so a remote measurement sizes
    the device's thread pool exactly as a local one does.
    """
    import tvm

    tvm.register_global_func(REMOTE_SET_NUM_THREADS, lambda n: set_num_threads(int(n)), override=True)
    # a string crosses RPC by value (a list would stay a remote object)
    tvm.register_global_func(REMOTE_THREAD_CORES, lambda: ",".join(map(str, thread_cores())), override=True)


def set_remote_num_threads(session, n: int) -> None:
    """Size the thread pool of the process serving the RPC ``session`` as :func:`set_num_threads` does here.

    A server started without hwnas's functions (a stock ``tvm.exec.rpc_server``)
    gets the same affinity mode (-3, workers share every core); only the calling
    thread's affinity cannot be given back there.
    """
    try:
        configure = session.get_function(REMOTE_SET_NUM_THREADS)
    except Exception:  # a server that is not hwnas's: TVM raises its own error for a missing function
        configure = None
    if configure is None:
        session.get_function("runtime.config_threadpool")(-3, int(n))
    else:
        configure(int(n))


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


def kernel_args(func, seed: int = 0) -> list[np.ndarray]:
    """Random arrays for every buffer parameter of a PrimFunc."""
    rng = np.random.default_rng(seed)
    out = []
    for p in func.params:
        shape = [int(getattr(d, "value", d)) for d in p.shape]
        dtype = str(p.dtype)
        if np.issubdtype(np.dtype(dtype), np.floating):
            out.append(rng.standard_normal(shape).astype(dtype))
        else:
            out.append(rng.integers(-8, 8, size=shape).astype(dtype))
    return out


def kernel_timer(func, tvm_target, *, repeats: int = 10, min_repeat_ms: float = 5.0, device=None):
    """Compile a (scheduled) PrimFunc alone for ``tvm_target`` and return a call that times it.

    Each call of the result gives the median milliseconds of one call of the
    kernel on random inputs; timing it again does not compile it again.
    """
    import tvm

    dev = device or tvm.cpu()
    try:
        with tvm_target:
            lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), tvm_target)
        lib = lib.jit() if hasattr(lib, "jit") else lib
        args = [tvm.runtime.tensor(a, dev) for a in kernel_args(func)]
        lib["main"](*args)  # warm-up
        timer = lib.time_evaluator("main", dev, number=1, repeat=repeats, min_repeat_ms=int(min_repeat_ms))
    except Exception as exc:
        raise RunError(f"measuring kernel alone failed: {error_line(exc)}") from None

    def time_it() -> float:
        try:
            return float(np.median(timer(*args).results)) * 1e3
        except Exception as exc:
            raise RunError(f"measuring kernel alone failed: {error_line(exc)}") from None

    return time_it


def measure_kernel(func, tvm_target, *, repeats: int = 10, min_repeat_ms: float = 5.0, device=None) -> float:
    """Median milliseconds of one call of a (scheduled) PrimFunc compiled alone for ``tvm_target``."""
    return kernel_timer(func, tvm_target, repeats=repeats, min_repeat_ms=min_repeat_ms, device=device)()


def host_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def native_lanes() -> int:
    """fp32 lanes of the host's widest vector registers (16 with AVX-512, 8 with AVX2, else 4)."""
    import tvm
    from tvm.target import codegen

    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()})
    for feature, lanes in (("avx512f", 16), ("avx2", 8)):
        if codegen.target_has_features(feature, target):
            return lanes
    return 4


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
    """LLVM's name of the host CPU (``-mcpu=native`` is not accepted by TVM)."""
    import tvm

    return str(tvm.target.codegen.llvm_get_system_cpu())
