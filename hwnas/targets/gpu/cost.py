"""Analytical latency of a CUDA module: a roofline per kernel, with occupancy from its launch configuration.

An *estimate*, for searching without a GPU; the target names the cost method
``analytical``. Per kernel (one PrimFunc's launch, see
:mod:`hwnas.targets.gpu.kernels`; its work from :mod:`hwnas.ir.workloads`):

* **occupancy**: resident blocks per SM = the minimum of the device's
  blocks-per-SM limit, its threads-per-SM limit over the block's threads
  (whole warps), its registers over the block's registers (ptxas's count per
  thread, allocated per warp in units of 256) and its shared memory over
  the block's; occupancy = resident warps / the SM's maximum warps.
* **parallelism**: the grid fills ``min(1, grid / SMs)`` of the SMs; a grid
  of several waves loses its last wave's empty slots (tail effect); a block
  whose threads are not a multiple of 32 idles the rest of its last warp.
* **latency hiding**: an SM issues from 4 schedulers; it is kept busy when
  about :data:`WARPS_TO_HIDE` warps are resident per SM, each independent
  accumulator of a thread's register tile counting as extra instruction-level
  parallelism (up to 4); fewer give a proportional share of the peak.
* **operand delivery** (conv/dense kernels): a thread with ``a`` register
  accumulators loads about ``2 sqrt(a)`` operands per ``a`` FMAs; an SM
  delivers 32 4-byte operands per clock from shared memory (one warp-wide
  load), half that from L1 when the operands are not staged
  (``shared == "none"``), so FMAs run at ``min(1, 16 sqrt(a) / lanes)`` of
  the SM's FP32 lanes (``2 x`` for fp16 half2 pairs).
* **utilisation**: predicated threads of a tile that overhangs the output
  do no useful work: useful outputs / launched thread-tiles.

compute time = FLOPs / (peak x all the factors above), memory time = the
kernel's compulsory bytes (inputs, weights, outputs once) / DRAM bandwidth
(scaled down when under half of the SMs issue loads), kernel time =
max(compute, memory) + the device's launch overhead; the network's latency
is the sum over kernels times their calls. Not modelled: L2 reuse between
kernels, vector width of loads (``vector_load``), loop unrolling, tensor
cores (the schedules use CUDA cores), clock throttling.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from hwnas.targets.gpu.devices import GpuDevice
from hwnas.targets.gpu.kernels import KernelLaunch, PtxasKernel
from hwnas.ir.workloads import MAC_KINDS, Workload

#: resident warps per SM that keep its four schedulers issuing (about 4 eligible warps each)
WARPS_TO_HIDE = 16
#: 4-byte operands an SM delivers per clock from shared memory (32 banks)
SMEM_OPERANDS_PER_CLK = 32
#: relative operand rate when operands come through L1 instead of staged shared memory
L1_OPERAND_FACTOR = 0.5
#: registers per thread assumed when no ptxas count is available
DEFAULT_REGISTERS = 32


@dataclasses.dataclass(frozen=True)
class KernelEstimate:
    func: str
    calls: int
    kernels: int
    grid: int
    threads: int
    registers: int
    smem_bytes: int
    occupancy: float
    compute_ms: float
    memory_ms: float
    time_ms: float


def _blocks_per_sm(device: GpuDevice, threads: int, registers: int, smem: int) -> int:
    warps = max(1, math.ceil(threads / 32))
    by_threads = device.max_threads_per_sm // (warps * 32)
    regs_per_warp = math.ceil(registers * 32 / 256) * 256
    by_regs = device.registers_per_sm // max(1, regs_per_warp * warps)
    by_smem = (device.smem_per_sm_kb * 1024) // smem if smem > 0 else device.max_blocks_per_sm
    return max(1, min(device.max_blocks_per_sm, by_threads, by_regs, by_smem))


def estimate_kernel(
    device: GpuDevice,
    work: Workload,
    launch: KernelLaunch,
    *,
    kernels: int,
    registers: int | None,
    precision: str,
    staged: bool,
) -> KernelEstimate:
    """The estimated time of one call of ``work``, launched as ``launch`` (its largest kernel)."""
    regs = registers or DEFAULT_REGISTERS
    threads = max(1, launch.threads)
    grid = max(1, launch.grid)
    warps = math.ceil(threads / 32)
    bps = _blocks_per_sm(device, threads, regs, launch.smem_bytes)
    occupancy = bps * warps / device.warps_per_sm
    slots = bps * device.sms
    sm_fraction = min(1.0, grid / device.sms)
    waves = math.ceil(grid / slots)
    tail = grid / (waves * slots) if grid > slots else 1.0
    lanes_used = threads / (warps * 32)
    resident = min(bps, math.ceil(grid / device.sms)) * warps
    ilp = min(4, launch.local_elems)
    hiding = min(1.0, resident * ilp / WARPS_TO_HIDE)
    is_mac = work.kind in MAC_KINDS
    dtype = "float16" if precision == "fp16" and is_mac else work.dtype
    peak = device.peak_flops(dtype)
    delivery = 1.0
    if is_mac:
        pairs = 2 if dtype == "float16" else 1
        rate = SMEM_OPERANDS_PER_CLK * (1.0 if staged else L1_OPERAND_FACTOR) * pairs
        delivery = min(1.0, rate * math.sqrt(launch.local_elems) / 2 / device.fp32_lanes_per_sm)
    out_itemsize = np.dtype(work.dtype).itemsize
    useful = max(1, work.output_bytes // out_itemsize)
    launched = grid * threads * launch.local_elems
    util = min(1.0, useful / launched) if is_mac else 1.0
    achieved = peak * sm_fraction * tail * lanes_used * hiding * delivery * util
    flops = max(work.flops, 2 * work.macs, 1)
    compute_ms = flops / achieved * 1e3
    bandwidth = device.dram_bandwidth_gbs * 1e9 * min(1.0, 2 * sm_fraction)
    memory_ms = work.bytes_moved / bandwidth * 1e3
    time_ms = max(compute_ms, memory_ms) + kernels * device.launch_overhead_us * 1e-3
    return KernelEstimate(
        func=work.func, calls=work.calls, kernels=kernels, grid=grid, threads=threads, registers=regs,
        smem_bytes=launch.smem_bytes, occupancy=occupancy, compute_ms=compute_ms, memory_ms=memory_ms,
        time_ms=time_ms,
    )


def estimate(
    device: GpuDevice,
    workloads: Sequence[Workload],
    launches: Sequence[KernelLaunch],
    registers: Mapping[str, PtxasKernel] | None,
    *,
    precision: str = "fp32",
    staged: bool = True,
) -> tuple[float, list[KernelEstimate]]:
    """The estimated latency in ms of one inference, and the per-function estimates."""
    by_func: dict[str, list[KernelLaunch]] = {}
    for k in launches:
        by_func.setdefault(k.func, []).append(k)
    rows = []
    for w in workloads:
        ks = by_func.get(w.func)
        if not ks:  # a function with no kernel (host-side glue): nothing runs on the GPU
            continue
        main = max(ks, key=lambda k: k.grid * k.threads)
        info = (registers or {}).get(main.name)
        rows.append(estimate_kernel(device, w, main, kernels=len(ks), registers=info.registers if info else None,
                                    precision=precision, staged=staged))
    total = sum(r.time_ms * r.calls for r in rows)
    return total, rows
