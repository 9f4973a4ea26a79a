"""The joint genome: the architecture genes followed by each target's hardware (HSS) genes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError


class JointSpace:
    """Architecture genes followed by each target's HSS genes."""

    def __init__(self, arch, targets: Sequence) -> None:
        self.arch = arch
        self.targets = list(targets)
        self.arch_size = arch.size if arch is not None else 0
        self.cardinalities = tuple(arch.cardinalities if arch is not None else ()) + tuple(
            c for t in self.targets for c in t.hardware_space.cardinalities
        )
        if not self.cardinalities:
            raise InvalidConfigError("nothing to search: the ONNX model's targets have no hardware knobs")

    @property
    def size(self) -> int:
        return len(self.cardinalities)

    def split(self, x: Sequence[int]) -> tuple[tuple[int, ...], list[dict[str, Any]]]:
        """(architecture genome, one hw config per target); InvalidConfigError if a config breaks a rule."""
        x = [int(v) for v in x]
        genome = tuple(x[: self.arch_size])
        hws, i = [], self.arch_size
        for t in self.targets:
            n = t.hardware_space.size
            hws.append(t.hardware_space.decode(x[i : i + n]))
            i += n
        return genome, hws

    def join(self, genome: Sequence[int], hws: Sequence[dict[str, Any]]) -> list[int]:
        x = list(genome)
        for t, hw in zip(self.targets, hws):
            x += t.hardware_space.encode(hw)
        return x

    def sample(self, rng: np.random.Generator) -> list[int]:
        genome = list(self.arch.sample(rng)) if self.arch is not None else []
        return self.join(genome, [t.hardware_space.sample(rng) for t in self.targets])


def point_key(genome: Sequence[int], hws: Sequence[dict[str, Any]]) -> str:
    blob = json.dumps({"genome": list(genome), "hw": list(hws)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
