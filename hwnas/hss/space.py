"""A hardware search space: named parameters plus validity constraints."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError
from hwnas.hss.params import ChoiceParam, Param

#: bound on rejection sampling in :meth:`HardwareSpace.sample`
MAX_SAMPLE_TRIES = 1000


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A validity rule between parameters: ``check(config)`` must be true."""

    message: str
    check: Callable[[Mapping[str, Any]], bool]


@dataclasses.dataclass(frozen=True)
class HardwareSpace:
    """Named hardware parameters, in a fixed order, and the rules between them."""

    name: str
    params: Mapping[str, Param]
    constraints: tuple[Constraint, ...] = ()
    #: knobs held at one value by :meth:`fixed`, and why
    held: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, p in self.params.items():
            if not isinstance(p, Param):
                raise InvalidConfigError(f"parameter {key!r} of {self.name!r} is not a Param: {p!r}")
        # freeze the mapping so the space really is immutable
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "constraints", tuple(self.constraints))
        try:
            self.validate(self.default())
        except InvalidConfigError as exc:
            raise InvalidConfigError(f"the default config of {self.name!r} is not valid: {exc}") from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.params)

    @property
    def size(self) -> int:
        """Number of genes (parameters)."""
        return len(self.params)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(p.cardinality for p in self.params.values())

    @property
    def num_configs(self) -> int:
        n = 1
        for c in self.cardinalities:
            n *= c
        return n

    def default(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.params.items()}

    def validate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Return a complete config (missing keys take their defaults) or raise."""
        if not isinstance(config, Mapping):
            raise InvalidConfigError(f"{self.name}: a hardware config is a JSON object, got {config!r}")
        unknown = [k for k in config if k not in self.params]
        if unknown:
            raise InvalidConfigError(
                f"{self.name}: unknown hardware knob {unknown[0]!r}; knobs: {', '.join(self.params)}"
            )
        full = self.default()
        for key, value in config.items():
            p = self.params[key]
            if not p.contains(value):
                why = f" ({self.held[key]})" if key in self.held else ""
                raise InvalidConfigError(
                    f"{self.name}: invalid value {value!r} for {key!r}; allowed: {p.describe()}{why}"
                )
            full[key] = p.values[p.encode(value)]
        for c in self.constraints:
            if not c.check(full):
                raise InvalidConfigError(f"{self.name}: {c.message} (config {json.dumps(full)})")
        return full

    def is_valid(self, config: Mapping[str, Any]) -> bool:
        try:
            self.validate(config)
        except InvalidConfigError:
            return False
        return True

    def encode(self, config: Mapping[str, Any]) -> list[int]:
        full = self.validate(config)
        return [p.encode(full[k]) for k, p in self.params.items()]

    def decode(self, vector: Sequence[int]) -> dict[str, Any]:
        """The config of an int vector; raises if the vector or the config is invalid."""
        if len(vector) != self.size:
            raise InvalidConfigError(f"{self.name}: a config vector has {self.size} entries, got {len(vector)}")
        config = {}
        for (k, p), i in zip(self.params.items(), vector):
            try:
                config[k] = p.decode(int(i))
            except InvalidConfigError as exc:
                raise InvalidConfigError(f"{self.name}: {k}: {exc}") from None
        return self.validate(config)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A uniformly random valid config (bounded rejection sampling)."""
        for _ in range(MAX_SAMPLE_TRIES):
            vec = [int(rng.integers(0, c)) for c in self.cardinalities]
            config = {k: p.values[i] for (k, p), i in zip(self.params.items(), vec)}
            if all(c.check(config) for c in self.constraints):
                return config
        raise InvalidConfigError(
            f"{self.name}: no valid config found in {MAX_SAMPLE_TRIES} random draws; the constraints are too tight"
        )

    def fixed(self, names: Sequence[str], why: str) -> HardwareSpace:
        """This space with the knobs ``names`` held at their defaults (one value each; ``why`` joins their doc).

        The genome keeps its length, so a stored config still decodes; the knobs just have nothing to choose.
        """
        params = {
            k: ChoiceParam((p.default,), doc=f"{p.doc} (fixed: {why})") if k in names else p
            for k, p in self.params.items()
        }
        held = {**self.held, **{k: why for k in names if k in self.params}}
        return HardwareSpace(name=self.name, params=params, constraints=self.constraints, held=held)

    def describe(self) -> list[tuple[str, str, str, str]]:
        """Rows (knob, allowed values, default, doc) for ``hwnas targets``."""
        return [(k, p.describe(), str(p.default), p.doc) for k, p in self.params.items()]
