"""The NVIDIA GPU backend: CUDA from TVM, GPU schedule passes, device catalog, measured or estimated latency."""

from hwnas.targets.gpu.target import GpuTarget

__all__ = ["GpuTarget"]
