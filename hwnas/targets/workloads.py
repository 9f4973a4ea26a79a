"""Deprecated: ``hwnas.targets.workloads`` moved to ``hwnas.ir.workloads``; import from :mod:`hwnas.targets.api` instead.

Kept for one release so that plugins written against it keep working.
"""

import warnings

from hwnas.ir.workloads import *  # noqa: F401,F403
from hwnas.ir.workloads import Workload, extract, prim_funcs  # noqa: F401

warnings.warn("hwnas.targets.workloads is deprecated and will be removed in the next release: import from hwnas.targets.api "
              "(it moved to hwnas.ir.workloads)", DeprecationWarning, stacklevel=2)
