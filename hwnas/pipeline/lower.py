"""Deprecated: ``hwnas.pipeline.lower`` moved to ``hwnas.ir.lower``; import from :mod:`hwnas.targets.api` instead.

Kept for one release so that plugins written against it keep working.
"""

import warnings

from hwnas.ir.lower import *  # noqa: F401,F403
from hwnas.ir.lower import build_module, compile_module, export_onnx, fuse, load_onnx, to_relax  # noqa: F401

warnings.warn("hwnas.pipeline.lower is deprecated and will be removed in the next release: import from hwnas.targets.api "
              "(it moved to hwnas.ir.lower)", DeprecationWarning, stacklevel=2)
