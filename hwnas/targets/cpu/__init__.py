"""The host CPU backend: LLVM, NCHW/NCHWc layouts, scheduled and tuned kernels, measured latency."""

from hwnas.targets.cpu.target import CpuTarget

__all__ = ["CpuTarget"]
