"""Parameter types of a hardware search space.

Each parameter is a frozen dataclass that validates itself when declared and
maps its values to the integers ``0..cardinality-1`` (the search sees those).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hwnas.errors import InvalidConfigError


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class Param:
    """Common interface: ``values``, ``encode``, ``decode``, ``check``."""

    #: what the knob does, shown by ``hwnas targets``
    doc: str = dataclasses.field(default="", kw_only=True)

    @property
    def values(self) -> tuple:
        raise NotImplementedError

    @property
    def cardinality(self) -> int:
        return len(self.values)

    @property
    def default(self):
        return self.values[0]

    def describe(self) -> str:
        raise NotImplementedError

    def index_of(self, value: Any) -> int | None:
        """Position of ``value`` among :attr:`values` (a JSON 8 matches 8 and 8.0), else None."""
        for i, v in enumerate(self.values):
            same_kind = type(value) is type(v) or (
                isinstance(value, (int, float)) and isinstance(v, (int, float))
                and not isinstance(value, bool) and not isinstance(v, bool)
            )
            if same_kind and value == v:
                return i
        return None

    def contains(self, value: Any) -> bool:
        return self.index_of(value) is not None

    def encode(self, value: Any) -> int:
        i = self.index_of(value)
        if i is None:
            raise InvalidConfigError(f"value {value!r} is not one of {self.describe()}")
        return i

    def decode(self, index: int) -> Any:
        if not _is_int(index) or not 0 <= index < self.cardinality:
            raise InvalidConfigError(f"index {index!r} out of range 0..{self.cardinality - 1}")
        return self.values[index]


@dataclasses.dataclass(frozen=True)
class ChoiceParam(Param):
    """One of a fixed tuple of options (strings, ints or floats)."""

    options: tuple
    default_value: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.options, tuple) or len(self.options) == 0:
            raise InvalidConfigError(f"ChoiceParam needs a non-empty tuple of options, got {self.options!r}")
        if len(set(self.options)) != len(self.options):
            raise InvalidConfigError(f"ChoiceParam options must be distinct, got {self.options!r}")
        for o in self.options:
            if not isinstance(o, (str, int, float)) or isinstance(o, bool):
                raise InvalidConfigError(f"ChoiceParam options must be str, int or float, got {o!r}")
        if self.default_value is not None and self.default_value not in self.options:
            raise InvalidConfigError(
                f"default {self.default_value!r} must be one of the options {self.options!r}"
            )

    @property
    def values(self) -> tuple:
        return self.options

    @property
    def default(self):
        return self.options[0] if self.default_value is None else self.default_value

    def describe(self) -> str:
        return "{" + ", ".join(str(o) for o in self.options) + "}"


@dataclasses.dataclass(frozen=True)
class IntParam(Param):
    """An integer in ``low..high`` (inclusive) on a grid of ``step``."""

    low: int
    high: int
    step: int = 1
    default_value: int | None = None

    def __post_init__(self) -> None:
        for field in ("low", "high", "step"):
            if not _is_int(getattr(self, field)):
                raise InvalidConfigError(f"IntParam {field} must be an int, got {getattr(self, field)!r}")
        if self.step < 1:
            raise InvalidConfigError(f"`step >= 1` must hold, got step={self.step}")
        if self.low > self.high:
            raise InvalidConfigError(f"`low <= high` must hold, got low={self.low}, high={self.high}")
        if (self.high - self.low) % self.step:
            raise InvalidConfigError(
                f"`high - low` must be a multiple of step, got low={self.low}, high={self.high}, step={self.step}"
            )
        if self.default_value is not None and self.default_value not in self.values:
            raise InvalidConfigError(f"default {self.default_value!r} is not in {self.describe()}")

    @property
    def values(self) -> tuple:
        return tuple(range(self.low, self.high + 1, self.step))

    @property
    def default(self):
        return self.low if self.default_value is None else self.default_value

    def describe(self) -> str:
        s = f"{self.low}..{self.high}"
        return s + (f" step {self.step}" if self.step != 1 else "")


@dataclasses.dataclass(frozen=True)
class Pow2Param(Param):
    """A power of two in ``low..high`` (both powers of two)."""

    low: int
    high: int
    default_value: int | None = None

    def __post_init__(self) -> None:
        for field in ("low", "high"):
            v = getattr(self, field)
            if not _is_int(v) or v < 1 or v & (v - 1):
                raise InvalidConfigError(f"Pow2Param {field} must be a power of two >= 1, got {v!r}")
        if self.low > self.high:
            raise InvalidConfigError(f"`low <= high` must hold, got low={self.low}, high={self.high}")
        if self.default_value is not None and self.default_value not in self.values:
            raise InvalidConfigError(f"default {self.default_value!r} is not in {self.describe()}")

    @property
    def values(self) -> tuple:
        out, v = [], self.low
        while v <= self.high:
            out.append(v)
            v *= 2
        return tuple(out)

    @property
    def default(self):
        return self.low if self.default_value is None else self.default_value

    def describe(self) -> str:
        return f"2^k in {self.low}..{self.high}"
