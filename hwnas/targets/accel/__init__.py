"""Accelerator templates (ASIC, FPGA): their design space and catalogs, the mapping pass, the cost model."""

from hwnas.targets.accel.target import AsicTarget, FpgaTarget

__all__ = ["AsicTarget", "FpgaTarget"]
