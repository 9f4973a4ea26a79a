"""NVIDIA GPUs as data: the figures the GPU target builds for and the analytical cost model reads.

Sources (per entry below): NVIDIA's architecture whitepapers and product
datasheets, and the "Compute Capabilities" table of the CUDA C++
Programming Guide (per-SM limits: resident threads, blocks, registers,
shared memory). Peak FLOPs are dense (no structured sparsity). "fp16"
without tensor cores is the CUDA-core (half2) rate; the hwnas schedules
use CUDA cores, so the cost model reads ``peak_fp32_tflops`` /
``peak_fp16_tflops``; the tensor-core figure is kept for reference.

``smem_per_block_kb`` is the *static* shared memory one block may declare
(48 KB on every architecture listed): TVM's CUDA code declares its
``__shared__`` arrays statically, and more than 48 KB per block needs dynamic
shared memory with an explicit opt-in (``smem_per_block_optin_kb``).
"""

from __future__ import annotations

import dataclasses

from hwnas.errors import InvalidConfigError


@dataclasses.dataclass(frozen=True)
class GpuDevice:
    """One GPU model: its size, clocks, memory system and per-SM limits."""

    name: str
    #: marketing name, for reports
    title: str
    #: CUDA compute capability, e.g. "9.0"
    compute_capability: str
    sms: int
    boost_clock_mhz: float
    #: DRAM bandwidth in GB/s (10^9 bytes/s)
    dram_bandwidth_gbs: float
    l2_cache_mb: float
    smem_per_sm_kb: int
    smem_per_block_kb: int
    smem_per_block_optin_kb: int
    registers_per_sm: int
    max_registers_per_thread: int
    max_threads_per_block: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    peak_fp32_tflops: float
    #: CUDA-core fp16 (half2); Pascal GeForce runs fp16 at 1/64 of fp32
    peak_fp16_tflops: float
    #: tensor-core fp16 with fp32 accumulate (0: no tensor cores)
    peak_fp16_tensor_tflops: float
    #: host-side cost of one kernel launch through the TVM runtime, in microseconds (see below)
    launch_overhead_us: float
    #: where the figures come from
    source: str

    @property
    def arch(self) -> str:
        """The ``sm_XY`` name nvcc and TVM take."""
        return "sm_" + self.compute_capability.replace(".", "")

    @property
    def fp32_lanes_per_sm(self) -> int:
        """FP32 FMA units per SM, from the peak: ``peak / (2 * SMs * clock)``."""
        return round(self.peak_fp32_tflops * 1e12 / (2 * self.sms * self.boost_clock_mhz * 1e6))

    @property
    def warps_per_sm(self) -> int:
        return self.max_threads_per_sm // 32

    def peak_flops(self, dtype: str) -> float:
        """FLOP/s of the CUDA cores for ``dtype`` (float16 at the fp16 rate, anything else at fp32)."""
        tflops = self.peak_fp16_tflops if str(dtype) == "float16" else self.peak_fp32_tflops
        return tflops * 1e12

    def tvm_target_dict(self) -> dict:
        """The CUDA target dict for TVM: arch and the limits its schedules (dlight) respect."""
        return {
            "kind": "cuda",
            "arch": self.arch,
            "max_threads_per_block": self.max_threads_per_block,
            "max_num_threads": self.max_threads_per_block,
            "max_shared_memory_per_block": self.smem_per_block_kb * 1024,
            "registers_per_block": self.registers_per_sm,
            "l2_cache_size_bytes": int(self.l2_cache_mb * 1024 * 1024),
            "thread_warp_size": 32,
        }


#: Launch overhead: a CUDA kernel launch costs a few microseconds on the host
#: (NVIDIA, "Getting Started with CUDA Graphs", developer blog 2019: launches
#: of a few microseconds dominate short kernels); the Relax VM adds its own
#: dispatch per call. 4 us per kernel on discrete GPUs and 8 us on the Jetson
#: (a slower ARM host) are round figures of that order, not measurements.
_DISCRETE_LAUNCH_US = 4.0
_JETSON_LAUNCH_US = 8.0

_GUIDE = "CUDA C++ Programming Guide (2024), Compute Capabilities table"

DEVICES: dict[str, GpuDevice] = {
    d.name: d
    for d in (
        GpuDevice(
            name="h100", title="NVIDIA H100 SXM5 80GB", compute_capability="9.0", sms=132,
            boost_clock_mhz=1980, dram_bandwidth_gbs=3350, l2_cache_mb=50,
            smem_per_sm_kb=228, smem_per_block_kb=48, smem_per_block_optin_kb=227,
            registers_per_sm=65536, max_registers_per_thread=255, max_threads_per_block=1024,
            max_threads_per_sm=2048, max_blocks_per_sm=32,
            peak_fp32_tflops=66.9, peak_fp16_tflops=133.8, peak_fp16_tensor_tflops=989.4,
            launch_overhead_us=_DISCRETE_LAUNCH_US,
            source=f"NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), H100 datasheet (2023); {_GUIDE}",
        ),
        GpuDevice(
            name="h200", title="NVIDIA H200 SXM 141GB", compute_capability="9.0", sms=132,
            boost_clock_mhz=1980, dram_bandwidth_gbs=4800, l2_cache_mb=50,
            smem_per_sm_kb=228, smem_per_block_kb=48, smem_per_block_optin_kb=227,
            registers_per_sm=65536, max_registers_per_thread=255, max_threads_per_block=1024,
            max_threads_per_sm=2048, max_blocks_per_sm=32,
            # the H100 SXM5's GH100 die and clocks with 141 GB of HBM3e at 4.8 TB/s
            peak_fp32_tflops=66.9, peak_fp16_tflops=133.8, peak_fp16_tensor_tflops=989.4,
            launch_overhead_us=_DISCRETE_LAUNCH_US,
            source=f"NVIDIA H200 Tensor Core GPU datasheet (2024); H100 whitepaper (2022) for the SM; {_GUIDE}",
        ),
        GpuDevice(
            name="a100", title="NVIDIA A100 SXM4 80GB", compute_capability="8.0", sms=108,
            boost_clock_mhz=1410, dram_bandwidth_gbs=2039, l2_cache_mb=40,
            smem_per_sm_kb=164, smem_per_block_kb=48, smem_per_block_optin_kb=163,
            registers_per_sm=65536, max_registers_per_thread=255, max_threads_per_block=1024,
            max_threads_per_sm=2048, max_blocks_per_sm=32,
            peak_fp32_tflops=19.5, peak_fp16_tflops=78.0, peak_fp16_tensor_tflops=312.0,
            launch_overhead_us=_DISCRETE_LAUNCH_US,
            source=f"NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020), A100 datasheet (2021); {_GUIDE}",
        ),
        GpuDevice(
            name="rtx4090", title="NVIDIA GeForce RTX 4090", compute_capability="8.9", sms=128,
            boost_clock_mhz=2520, dram_bandwidth_gbs=1008, l2_cache_mb=72,
            smem_per_sm_kb=100, smem_per_block_kb=48, smem_per_block_optin_kb=99,
            registers_per_sm=65536, max_registers_per_thread=255, max_threads_per_block=1024,
            max_threads_per_sm=1536, max_blocks_per_sm=24,
            peak_fp32_tflops=82.6, peak_fp16_tflops=82.6, peak_fp16_tensor_tflops=165.2,
            launch_overhead_us=_DISCRETE_LAUNCH_US,
            source=f"NVIDIA Ada GPU Architecture whitepaper v1.01 (2022), RTX 4090 column; {_GUIDE}",
        ),
        GpuDevice(
            name="orin", title="NVIDIA Jetson AGX Orin 64GB (GPU)", compute_capability="8.7", sms=16,
            boost_clock_mhz=1300, dram_bandwidth_gbs=204.8, l2_cache_mb=4,
            smem_per_sm_kb=164, smem_per_block_kb=48, smem_per_block_optin_kb=163,
            registers_per_sm=65536, max_registers_per_thread=255, max_threads_per_block=1024,
            max_threads_per_sm=1536, max_blocks_per_sm=16,
            # 2048 CUDA cores x 2 x 1.3 GHz; fp16 at twice fp32 (half2);
            # tensor: 64 third-generation tensor cores x 512 dense fp16 FLOP/clk x 1.3 GHz
            peak_fp32_tflops=5.32, peak_fp16_tflops=10.65, peak_fp16_tensor_tflops=42.6,
            launch_overhead_us=_JETSON_LAUNCH_US,
            source=f"NVIDIA Jetson AGX Orin Series Technical Brief v1.2 (2022), Jetson AGX Orin datasheet (2023); {_GUIDE}",
        ),
        GpuDevice(
            name="1080ti", title="NVIDIA GeForce GTX 1080 Ti", compute_capability="6.1", sms=28,
            boost_clock_mhz=1582, dram_bandwidth_gbs=484, l2_cache_mb=2.75,
            smem_per_sm_kb=96, smem_per_block_kb=48, smem_per_block_optin_kb=48,
            registers_per_sm=65536, max_registers_per_thread=255, max_threads_per_block=1024,
            max_threads_per_sm=2048, max_blocks_per_sm=32,
            # 3584 CUDA cores x 2 x 1.582 GHz; GP102 runs fp16 at 1/64 of fp32
            peak_fp32_tflops=11.34, peak_fp16_tflops=0.177, peak_fp16_tensor_tflops=0.0,
            launch_overhead_us=_DISCRETE_LAUNCH_US,
            source=f"NVIDIA GeForce GTX 1080 whitepaper (Pascal GP104, 2016), GTX 1080 Ti product specifications (2017); {_GUIDE}",
        ),
        GpuDevice(
            name="titanxp", title="NVIDIA TITAN Xp", compute_capability="6.1", sms=30,
            boost_clock_mhz=1582, dram_bandwidth_gbs=547.7, l2_cache_mb=3,
            smem_per_sm_kb=96, smem_per_block_kb=48, smem_per_block_optin_kb=48,
            registers_per_sm=65536, max_registers_per_thread=255, max_threads_per_block=1024,
            max_threads_per_sm=2048, max_blocks_per_sm=32,
            # 3840 CUDA cores x 2 x 1.582 GHz; fp16 at 1/64 of fp32 (GP102)
            peak_fp32_tflops=12.15, peak_fp16_tflops=0.190, peak_fp16_tensor_tflops=0.0,
            launch_overhead_us=_DISCRETE_LAUNCH_US,
            source=f"NVIDIA TITAN Xp product specifications (2017), Pascal GP102; {_GUIDE}",
        ),
    )
}


def get_device(name: str | None) -> GpuDevice:
    """The device called ``name``; a clear error listing the known ones."""
    if name is None or name not in DEVICES:
        raise InvalidConfigError(
            f"target 'gpu' needs a device, e.g. gpu:h100; devices: {', '.join(DEVICES)}"
            if name is None else f"unknown GPU {name!r}; devices: {', '.join(DEVICES)}"
        )
    return DEVICES[name]


#: substrings of the name the CUDA driver reports (``tvm.cuda(0).device_name``) -> device table entry
REPORTED_NAMES = (("H200", "h200"), ("H100", "h100"), ("A100", "a100"), ("4090", "rtx4090"), ("Orin", "orin"),
                  ("1080 Ti", "1080ti"), ("TITAN Xp", "titanxp"))


def device_named(reported: str) -> str | None:
    """The device table entry for the name a driver reports (``"NVIDIA H200"`` -> ``"h200"``), or None."""
    return next((d for key, d in REPORTED_NAMES if key in reported), None)
