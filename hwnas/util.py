"""Small helpers shared across the package."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

#: native TVM log lines with no information for a user (the VM executable logs
#: one per memory scope whenever it is saved or loaded)
_NOISE = re.compile(rb"^\[[\d:]+\] \S+executable\.cc:\d+: Warning: Scope (Saving|Loaded):\s*$")


@contextlib.contextmanager
def filtered_native_stderr():
    """Drop TVM's per-scope save/load log lines written by native code; keep everything else."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real stderr (e.g. captured): nothing to filter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().splitlines(keepends=True) if not _NOISE.match(ln.rstrip(b"\n"))]
            if kept:
                os.write(fd, b"".join(kept))
