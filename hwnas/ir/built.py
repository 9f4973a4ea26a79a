"""The record of a module compiled for one target and hardware config."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Built:
    """A module compiled for one target and hardware config."""

    #: the fused, scheduled Relax IRModule that was compiled
    module: Any
    #: the compiled ``tvm.runtime.Executable``
    executable: Any
    #: the ``tvm.target.Target`` it was compiled for
    tvm_target: Any
    #: the complete, validated hardware config
    hw: dict[str, Any]
    #: input name -> (shape, dtype); output (shape, dtype) list
    inputs: dict[str, tuple[tuple[int, ...], str]]
    outputs: list[tuple[tuple[int, ...], str]]
    #: static figures computed once per built module (memory plan, workloads), by name; ``facts["counters"]``
    #: (name -> number, e.g. tuned kernels reused) is recorded with the evaluation's timings
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)

    def fact(self, name: str, compute):
        """``facts[name]``, computed by ``compute(self)`` the first time it is asked for."""
        if name not in self.facts:
            self.facts[name] = compute(self)
        return self.facts[name]
