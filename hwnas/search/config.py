"""What defines a search run: :class:`SearchConfig` (stored with the run; a resume must match), the
constraint syntax (:class:`Bound`), the constants the search's parts share, and the plugin and remote-device
set-up every process of a run repeats."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwnas.errors import InvalidConfigError
from hwnas.metrics import canonical

FORMULATIONS = ("nsga2", "constrained", "scalarized", "two-stage", "fit-first", "random")
#: nsga2's surrogate: ``ehvi`` (the default) chooses each batch by the hypervolume improvement a Gaussian process
#: (the accuracy) and a bootstrap ensemble (the costs) predict over the canonical candidates (see :mod:`hwnas.search.ehvi`); ``xgb`` screens NSGA-II's
#: offspring with the ensemble (see ``Search._surrogate_nsga2``); ``none`` is plain NSGA-II
SURROGATES = ("ehvi", "xgb", "none")
#: which candidates are one point (evaluated once; the others take its result and cost no evaluation):
#: ``graph`` (the default) those whose space-canonical genomes (:meth:`~hwnas.arch.ArchSpace.canonical`)
#: export to one graph (:func:`~hwnas.ir.graph.structural_key`) with one hardware config, on targets that
#: compile; ``genome``: those with one space-canonical genome and hardware config only
EQUIVALENCES = ("graph", "genome")
#: settings a resumed run may change (where evaluations run changes no result)
RESUMABLE = ("budget", "workers", "timeout_s", "ladder", "executor", "cluster", "rpc_tracker", "rpc_timeout_s")
#: settings stored only when set, so that runs stored before they existed still resume
_STORED_WHEN_SET = ("executor", "cluster", "rpc_tracker", "rpc_key", "rpc_timeout_s", "equivalence")
#: the cost ladder flags a front point whose cheap and re-priced values differ by more than this share
LADDER_TOLERANCE = 0.10
#: objective value given to points that failed (they are also infeasible)
FAILED = 1e12
#: generations in a row without a new point before a search stops early
MAX_STALE_GENERATIONS = 30

#: the evaluations made outside the search's points (the reference network, the transfer table) are
#: recorded under this run id, apart from the search's own
EXTRA_RUN_ID = "extra"
#: cache namespace and key of the reference network's metrics per target
REFERENCE_NAMESPACE, REFERENCE_KEY = "reference/search", "reference"

_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w@:.\-]*)\s*(<=|>=)\s*([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$")


@dataclasses.dataclass(frozen=True)
class Bound:
    """``metric <= value`` or ``metric >= value``; ``metric`` may name a target: ``latency_ms@cpu``."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Bound:
        m = _CONSTRAINT.match(text)
        if not m:
            raise InvalidConfigError(f"malformed constraint {text!r}: expected METRIC<=VALUE or METRIC>=VALUE, "
                                     f"e.g. latency_ms<=5")
        return cls(m.group(1), m.group(2), float(m.group(3)))

    def violation(self, value: float) -> float:
        """<= 0 when satisfied; positive and scaled by the bound when violated."""
        scale = max(abs(self.value), 1e-9)
        return (value - self.value) / scale if self.op == "<=" else (self.value - value) / scale

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a run (stored with it; a resume must match)."""

    targets: tuple[str, ...] = ("cpu",)
    space: str | None = "mbv2"
    space_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    onnx: str | None = None
    objectives: tuple[str, ...] = ("accuracy", "latency_ms")
    constraints: tuple[str, ...] = ()
    formulation: str = "nsga2"
    surrogate: str = "ehvi"
    equivalence: str = "graph"
    budget: int = 100
    accuracy: str = "proxy"
    accuracy_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    cost: str | None = None
    seed: int = 0
    pop_size: int = 16
    workers: int = 1
    timeout_s: float = 600.0
    repeats: int | None = None
    weights: int = 5
    top_k: int = 4
    plugins: tuple[str, ...] = ()
    #: cost ladder: re-price each generation's front with this (exact, slower) method, e.g. "measure"
    ladder: str | None = None
    #: where evaluations run: ``process`` (worker processes here), ``dask`` or ``ray`` (a cluster)
    executor: str = "process"
    #: a running Dask or Ray cluster's address; None starts a local one of ``workers`` workers
    cluster: str | None = None
    #: measure on a device of key ``rpc_key`` reached through the RPC tracker at ``HOST:PORT``
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    #: seconds to reach the tracker, and to wait for a free device
    rpc_timeout_s: float = 60.0

    @property
    def needs_accuracy(self) -> bool:
        """Whether an objective or a constraint is the accuracy."""
        return any(canonical(o.split("@")[0]) == "accuracy" for o in self.objectives) or any(
            Bound.parse(c).metric.split("@")[0] == "accuracy" for c in self.constraints
        )

    def __post_init__(self) -> None:
        if self.formulation not in FORMULATIONS:
            raise InvalidConfigError(f"unknown formulation {self.formulation!r}; known: {', '.join(FORMULATIONS)}")
        if self.surrogate not in SURROGATES:
            raise InvalidConfigError(f"unknown surrogate {self.surrogate!r}; known: {', '.join(SURROGATES)}")
        if self.equivalence not in EQUIVALENCES:
            raise InvalidConfigError(f"unknown equivalence {self.equivalence!r}; known: {', '.join(EQUIVALENCES)}")
        for name in ("budget", "pop_size", "weights", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.workers < 0:
            raise InvalidConfigError(f"workers must be >= 0, got {self.workers}")
        if not self.timeout_s > 0:
            raise InvalidConfigError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if (self.space is None) == (self.onnx is None):
            raise InvalidConfigError("a search needs a space or an ONNX file (--space or --onnx)")
        if not self.targets:
            raise InvalidConfigError("a search needs at least one --target")
        twice = sorted({t for t in self.targets if self.targets.count(t) > 1})
        if twice:
            raise InvalidConfigError(f"target {twice[0]} is named twice; give each --target once")
        if not self.objectives:
            raise InvalidConfigError("a search needs at least one objective")
        for c in self.constraints:
            Bound.parse(c)
        from hwnas.pipeline.executor import EXECUTORS

        if self.executor not in EXECUTORS:
            raise InvalidConfigError(f"unknown executor {self.executor!r}; known: {', '.join(EXECUTORS)}")
        if self.executor != "process" and self.workers == 0 and not self.cluster:
            raise InvalidConfigError(f"--executor {self.executor} needs --workers >= 1 (or --cluster ADDRESS); "
                                     f"--workers 0 evaluates in this process")
        if self.cluster and self.executor == "process":
            raise InvalidConfigError("--cluster names a Dask or Ray cluster; it needs --executor dask or ray")
        if (self.rpc_tracker is None) != (self.rpc_key is None):
            raise InvalidConfigError("--rpc-tracker HOST:PORT and --rpc-key KEY go together")
        if self.rpc_tracker is not None:
            self.remote_device()

    def remote_device(self):
        """The :class:`~hwnas.targets.remote.RemoteDevice` measurements run on, or None (this machine)."""
        if self.rpc_tracker is None:
            return None
        from hwnas.targets.remote import RemoteDevice

        return RemoteDevice.parse(self.rpc_tracker, self.rpc_key, timeout_s=self.rpc_timeout_s)

    def settings(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for k in _STORED_WHEN_SET:
            if d[k] == defaults[k]:
                del d[k]
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_settings(cls, d: dict[str, Any]) -> SearchConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})


def load_plugins(plugins: Sequence[str]) -> None:
    """Import plugin modules (a module name, or a path to a ``.py`` file) that register targets or spaces."""
    import importlib
    import importlib.util
    import sys

    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                path = Path(plugin).resolve()
                name = f"hwnas_plugin_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or not path.is_file():
                    raise InvalidConfigError(f"plugin file {plugin} not found")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(plugin)
        except InvalidConfigError:
            raise
        except Exception as exc:
            raise InvalidConfigError(f"plugin {plugin} could not be imported: {type(exc).__name__}: {exc}") from None


def use_remote(targets: Sequence, device) -> None:
    """Let every target that can measure on ``device`` (an RPC device, or None: nothing to do) do so;
    the others price as before. :class:`InvalidConfigError` when none can."""
    if device is None:
        return
    able = [t for t in targets if t.measures_remotely]
    if not able:
        targets[0].use_remote(device)  # the target's own one-line refusal
    for t in able:
        t.use_remote(device)
