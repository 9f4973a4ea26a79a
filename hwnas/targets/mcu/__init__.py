"""The Cortex-M backend: int8 networks as C bundles, the memory plan, boards, the Arm toolchain and QEMU."""

from hwnas.targets.mcu.target import McuTarget

__all__ = ["McuTarget"]
