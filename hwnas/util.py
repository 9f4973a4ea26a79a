"""Small helpers shared across the package."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from hwnas.errors import InvalidConfigError

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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(Path(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_stamp(path: Path) -> tuple[str, int, int]:
    """A cache key that changes when the file does: resolved path, mtime, size."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def keyword_options(cls: type) -> list[str]:
    """Names of the keyword-only parameters of ``cls.__init__`` (a registry's accepted options)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def error_line(exc: BaseException, *, with_type: bool = False) -> str:
    """One line for an exception from a library: TVM puts its message last, after a backtrace."""
    # NUL bytes come through from native messages (NVRTC's log): they are no text
    lines = [ln.strip() for ln in str(exc).replace("\0", "").strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    if with_type or not text:
        return f"{type(exc).__name__}: {text}".rstrip(": ")
    return text


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as JSON to ``path`` through a temporary file beside it (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)
    return path


def read_json_file(path: str | os.PathLike, what: str, hint: str):
    """The JSON in ``path``; a missing or unreadable file is one line naming ``what`` (and, if missing, ``hint``)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidConfigError(f"{what} {path} does not exist; {hint}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidConfigError(f"{what} {path} is corrupt JSON or unreadable: {exc}") from None
