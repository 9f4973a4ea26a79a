"""The errors hwnas raises.

Every error a user can cause derives from :class:`HwnasError` and from the
matching built-in, so callers may catch either. The CLI prints one line for
them and exits non-zero.
"""

from __future__ import annotations


class HwnasError(Exception):
    """Base class of every error hwnas raises on purpose."""

    def __str__(self) -> str:  # KeyError quotes its message; we never want that
        return str(self.args[0]) if self.args else self.__class__.__name__


class UnknownSpaceError(HwnasError, KeyError):
    """An architecture search space name that is not registered."""


class UnknownTargetError(HwnasError, KeyError):
    """A target name that is not registered."""


class InvalidGenomeError(HwnasError, ValueError):
    """A genome of the wrong length or with a gene out of range."""


class InvalidConfigError(HwnasError, ValueError):
    """A hardware configuration, parameter declaration or option that is not valid."""


class ModelImportError(HwnasError, ValueError):
    """An ONNX file that cannot be read or imported into TVM."""


class UnsupportedOperatorError(ModelImportError):
    """An ONNX operator the TVM importer cannot take."""


class CompileError(HwnasError, RuntimeError):
    """Scheduling or compiling a module failed."""


class RunError(HwnasError, RuntimeError):
    """Running or measuring a compiled module failed."""


class ArtifactError(HwnasError, OSError):
    """An artifact folder cannot be written or read."""


class DataNotFoundError(HwnasError, FileNotFoundError):
    """A published benchmark data file that is not where hwnas looks for it."""


class StoreError(HwnasError, RuntimeError):
    """The results store cannot be opened, read or written (corrupt, locked, newer schema)."""
