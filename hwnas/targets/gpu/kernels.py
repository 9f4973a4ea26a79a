"""The CUDA kernels of a scheduled module: launch configuration, shared memory, registers.

:func:`kernel_launches` reads the scheduled TIR (no build needed): every loop
nest bound to ``blockIdx`` is one kernel; its grid is the product of its
``blockIdx.*`` extents, its block the product of its ``threadIdx.*`` extents
(a cooperative fetch rebinds ``threadIdx.x`` with the same extent, so the
largest extent per tag counts). Buffers are sized after TVM's own
``CompactBufferAllocation`` (the same passes the build runs), so a
``"shared"`` buffer is the tile one block stages, and a ``"local"`` one the
accumulators of one thread.

:func:`ptxas_info` compiles the generated CUDA source with nvcc and reads
``ptxas -v``: registers per thread and shared memory per kernel, the figures
the occupancy model needs (:mod:`hwnas.targets.gpu.cost`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from hwnas.errors import CompileError, InvalidConfigError
from hwnas.ir.workloads import walk


#: TVM's CUDA code declares each shared array ``alignas(64)``: a block's shared memory is counted in these units
SMEM_ALIGN = 64


@dataclasses.dataclass(frozen=True)
class KernelLaunch:
    """One CUDA kernel of a PrimFunc, as scheduled."""

    func: str
    #: the kernel's name in the CUDA source (``<func>_kernel``, then ``_kernel_1``...)
    name: str
    grid: int
    threads: int
    #: static shared memory of one block, each array rounded up to :data:`SMEM_ALIGN` bytes
    smem_bytes: int
    #: elements of the per-thread ``local`` buffers (register-resident accumulators)
    local_elems: int


def _nbytes(buf) -> int:
    n = 1
    for d in buf.shape:
        n *= int(d)
    return n * np.dtype(str(buf.dtype)).itemsize


def _compacted(func):
    import tvm
    from tvm import s_tir

    seq = tvm.transform.Sequential([
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
    ])
    return seq(tvm.IRModule({"main": func}))["main"]


def _bound_tag(node) -> str | None:
    binding = getattr(node, "thread_binding", None)
    return None if binding is None else str(binding.thread_tag)


def _kernel_roots(stmt) -> list:
    """The outermost loops bound to ``blockIdx`` under ``stmt``."""
    roots, stack = [], [stmt]
    while stack:
        node = stack.pop()
        tag = _bound_tag(node)
        if tag is not None and tag.startswith("blockIdx"):
            roots.append(node)
            continue
        for field in ("body", "block", "then_case", "else_case"):
            child = getattr(node, field, None)
            if child is not None and not isinstance(child, (int, float, str)):
                stack.append(child)
        stack.extend(reversed(list(getattr(node, "seq", None) or ())))
    return roots


def func_launches(name: str, func) -> list[KernelLaunch]:
    """The kernels of one scheduled PrimFunc (empty when nothing is bound to blocks)."""
    compact = _compacted(func)
    out = []
    for i, root in enumerate(_kernel_roots(compact.body)):
        extents: dict[str, int] = {}
        smem = local = 0
        for node in walk(root):
            tag = _bound_tag(node)
            if tag is not None:
                ext = node.extent
                extents[tag] = max(extents.get(tag, 1), int(ext.value) if hasattr(ext, "value") else 1)
            for buf in getattr(node, "alloc_buffers", None) or ():
                scope = buf.scope()
                if scope.startswith("shared"):
                    smem += -(-_nbytes(buf) // SMEM_ALIGN) * SMEM_ALIGN
                elif scope == "local":
                    local += math.prod(int(d) for d in buf.shape)
        grid = math.prod(v for k, v in extents.items() if k.startswith("blockIdx"))
        threads = math.prod(v for k, v in extents.items() if k.startswith("threadIdx"))
        kname = f"{name}_kernel" if i == 0 else f"{name}_kernel_{i}"
        out.append(KernelLaunch(func=name, name=kname, grid=grid, threads=threads, smem_bytes=smem,
                                local_elems=max(local, 1)))
    return out


def kernel_launches(mod) -> list[KernelLaunch]:
    """Every kernel of the scheduled PrimFuncs of ``mod``."""
    import tvm

    out = []
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            out.extend(func_launches(gv.name_hint, func))
    return out


def check_limits(launches, *, device: str, max_threads_per_block: int, max_shared_memory_per_block: int) -> None:
    """Refuse kernels over the device's per-block limits, before anything is built.

    The first kernel whose threads per block exceed ``max_threads_per_block``
    or whose shared memory exceeds ``max_shared_memory_per_block`` is an
    :class:`~hwnas.errors.InvalidConfigError` naming the kernel, its figure,
    the limit and the knobs that set it. (A check inside a TVM pass would
    reach the caller as an untyped TVM error: exceptions raised in a Python
    pass cross TVM's C++ and lose their type.)
    """
    for k in launches:
        if k.threads > max_threads_per_block:
            raise InvalidConfigError(
                f"{device}: kernel {k.name} uses {k.threads} threads per block, over the device limit "
                f"max_threads_per_block={max_threads_per_block}; lower threads_oc/threads_oh/threads_ow"
            )
        if k.smem_bytes > max_shared_memory_per_block:
            raise InvalidConfigError(
                f"{device}: kernel {k.name} needs {k.smem_bytes} bytes of shared memory per block, over the "
                f"device limit max_shared_memory_per_block={max_shared_memory_per_block}; lower tile_rc or "
                f"the threads/tiles, or set shared=none"
            )


def cuda_runtime_loaded() -> bool:
    """Whether TVM's CUDA runtime is in this process: its builds then compile the kernels instead of carrying source."""
    import tvm_ffi

    return tvm_ffi.get_global_func("ffi.Module.create.cuda", allow_missing=True) is not None


def cuda_source(executable) -> str:
    """The CUDA C source TVM generated for a compiled executable (found among its imported modules)."""
    stack = [executable.mod]
    while stack:
        m = stack.pop()
        if m.kind == "cuda":
            return m.inspect_source()
        stack.extend(m.imports)
    raise CompileError("the compiled module holds no CUDA code")


@dataclasses.dataclass(frozen=True)
class PtxasKernel:
    registers: int
    smem_bytes: int
    spill_bytes: int


#: the architectures the local nvcc accepts (``nvcc --list-gpu-code``)
@functools.lru_cache(maxsize=1)
def nvcc_archs() -> tuple[str, ...]:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return ()
    try:
        out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(a.strip() for a in out.split() if a.strip().startswith("sm_"))


def nvcc_arch_for(arch: str) -> str | None:
    """``arch`` if the local nvcc compiles for it, else the oldest newer one it has (None without nvcc).

    CUDA 13 dropped Pascal (sm_61): a GTX 1080 Ti's kernels are then
    compiled for the closest architecture nvcc still has, which only serves
    the register count of the occupancy model.
    """
    archs = nvcc_archs()
    if not archs:
        return None
    if arch in archs:
        return arch
    num = int(arch.split("_")[1])
    newer = sorted((int(a[3:]), a) for a in archs if re.fullmatch(r"sm_\d+", a) and int(a[3:]) >= num)
    return newer[0][1] if newer else None


_PTXAS_FUNC = re.compile(r"Compiling entry function '(\w+)' for")
_PTXAS_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores")


def ptxas_info(source: str, arch: str, out_dir: str | Path | None = None) -> dict[str, PtxasKernel]:
    """Compile ``source`` with nvcc for ``arch`` and return ``ptxas -v``'s figures per kernel.

    With ``out_dir`` the fatbin (``kernels.fatbin``) is kept there.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise CompileError("nvcc is not on PATH")
    with tempfile.TemporaryDirectory(prefix="hwnas-nvcc-") as tmp:
        src = Path(tmp) / "kernels.cu"
        src.write_text(source)
        out = Path(out_dir) / "kernels.fatbin" if out_dir is not None else Path(tmp) / "kernels.fatbin"
        cmd = [nvcc, "--fatbin", f"-arch={arch}", "-O3", "-w", "-Xptxas", "-v", "-o", str(out), str(src)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            raise CompileError(f"nvcc failed to run: {exc}") from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if "error" in ln] or proc.stderr.splitlines()[-1:]
            raise CompileError(f"nvcc rejected the generated CUDA: {lines[0].strip() if lines else proc.returncode}")
    info: dict[str, PtxasKernel] = {}
    current = None
    spill = 0
    for line in proc.stderr.splitlines():
        m = _PTXAS_FUNC.search(line)
        if m:
            current, spill = m.group(1), 0
            continue
        s = _PTXAS_SPILL.search(line)
        if s:
            spill = int(s.group(1))
        u = _PTXAS_USED.search(line)
        if u and current is not None:
            info[current] = PtxasKernel(registers=int(u.group(1)), smem_bytes=int(u.group(2) or 0), spill_bytes=spill)
            current = None
    return info
