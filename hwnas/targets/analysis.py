"""Deprecated: ``hwnas.targets.analysis`` moved to ``hwnas.ir.analysis``; import from :mod:`hwnas.targets.api` instead.

Kept for one release so that plugins written against it keep working.
"""

import warnings

from hwnas.ir.analysis import *  # noqa: F401,F403
from hwnas.ir.analysis import io_signature, param_bytes, planned_memory  # noqa: F401

warnings.warn("hwnas.targets.analysis is deprecated and will be removed in the next release: import from hwnas.targets.api "
              "(it moved to hwnas.ir.analysis)", DeprecationWarning, stacklevel=2)
