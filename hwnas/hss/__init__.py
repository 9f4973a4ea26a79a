"""Hardware search spaces declared as data."""

from hwnas.hss.params import ChoiceParam, IntParam, Param, Pow2Param
from hwnas.hss.space import Constraint, HardwareSpace

__all__ = ["ChoiceParam", "Constraint", "HardwareSpace", "IntParam", "Param", "Pow2Param"]
