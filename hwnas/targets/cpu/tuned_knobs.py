"""TunedKnobs: the CPU schedule knobs chosen per workload, by measurement, and shared by every candidate.

One knob config schedules every kernel of a network under plain ``cpu``; but
the best register tile of a 1x1 conv on a 3x3 map with 1920 channels is not
that of a stem conv on 48x48. :class:`TunedKnobs` (``cpu:tuned``) runs on the
fused module before the knob-driven CPU passes. For each conv and dense
PrimFunc (and Winograd conv: the knobs set its batched product's register
block and reduction step) it looks its workload up in ``knobs.json`` of the database folder
(keyed like MetaSchedule's: the structural hash of the unscheduled function,
so the same computation in any candidate, run or process); a workload not
there yet is tuned:

* ``trials`` configs of the schedule knobs (``space``: each knob's allowed
  values, the target's own HSS) are scheduled with the same rules as the
  network-wide knobs (:func:`~hwnas.targets.cpu.tile_conv2d.schedule_conv2d`,
  :func:`~hwnas.targets.cpu.tile_dense.schedule_dense`), compiled alone and timed
  on random inputs (:func:`~hwnas.cost.lut.kernel_timer`);
* the first is the network's own config; then, for up to a quarter of the
  trials, the configs chosen for the most similar workloads already in the
  database (same main block and reduction, nearest spatial extents: the
  same conv with another fused epilogue, or the same layer type at another
  size); half of the rest are drawn at random and the others change one knob
  of the best so far (a config whose schedule equals one already timed is
  skipped);
* the three fastest configs and the network's own are timed once more, and
  the one with the lowest mean of its two times is committed with that time,
  the network config's and the workload's main block and extents (what the
  similarity reads).

The module's functions are then scheduled with their workload's config and
marked scheduled; the ``layout`` and ``pack`` knobs (which change the graph)
and ``num_threads`` stay network-wide. The database's tuning and files share
the lock and the budget of :class:`~hwnas.targets.cpu.tuned_schedules.WorkloadTuner`.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tvm
from tvm import s_tir

from hwnas.ir.runtime import kernel_timer
from hwnas.ir.workloads import domain, is_mac_kernel, workload_key
from hwnas.targets.cpu.tile_conv2d import CpuScheduleConfig, schedule_conv2d
from hwnas.targets.cpu.tile_dense import schedule_dense
from hwnas.targets.cpu.tuned_schedules import WorkloadTuner
from hwnas.targets.cpu.winograd import default_knobs, is_winograd, schedule_winograd_knobs

log = logging.getLogger(__name__)

#: the knobs :class:`TunedKnobs` chooses per workload (the others stay the network's)
SCHEDULE_KNOBS: tuple[str, ...] = ("tile_oc", "tile_oh", "tile_ow", "tile_rc", "loop_order", "parallel",
                                   "vector_width", "unroll")

#: the rules a workload is scheduled by, tried in order (a Winograd conv's knobs set its batched product)
RULES = (schedule_winograd_knobs, schedule_conv2d, schedule_dense)

DATABASE_FILE = "knobs.json"

#: configs timed a second time before a workload's choice (:meth:`TunedKnobs._confirm`)
CONFIRM = 3


def _distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """How unlike two workloads' main blocks are (0: same block, reduction and extents; inf: unrelated)."""
    if a["block"] != b["block"] or len(a["spatial"]) != len(b["spatial"]):
        return float("inf")
    far = sum(abs(np.log(max(x, 1) / max(y, 1))) for x, y in zip(a["spatial"], b["spatial"]))
    return far + (0.0 if list(a["reduction"]) == list(b["reduction"]) else 10.0)


def tunable(func) -> bool:
    """The PrimFuncs :class:`TunedKnobs` tunes: convs, denses and Winograd convs (whose main block, the batched
    product, :func:`~hwnas.ir.workloads.is_mac_kernel` does not take for a conv)."""
    return is_mac_kernel(func) or is_winograd(func)


def schedule_with(func, cfg: CpuScheduleConfig):
    """``func`` scheduled by the first rule that matches it with ``cfg`` (None when none does)."""
    for rule in RULES:
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        if rule(sch, cfg):
            return sch.mod["main"]
    return None


@tvm.transform.module_pass(opt_level=0, name="TunedKnobs")
class TunedKnobs(WorkloadTuner):
    """Schedule conv/dense PrimFuncs with the knob config measured best for their workload.

    Parameters as :class:`~hwnas.targets.cpu.tuned_schedules.WorkloadTuner`, and:

    base:
        The network's hardware config: the knobs not chosen per workload, and the first trial.
    space:
        ``{knob: allowed values}`` the per-workload configs are drawn from (knobs of :data:`SCHEDULE_KNOBS`).
    valid:
        Whether a whole config (``base`` with a trial's knobs) is allowed (the target's constraints).
    trials:
        Configs timed per new workload.
    seed:
        Seed of the draws (with the workload key: a workload's trials do not depend on the order).
    timer:
        ``timer(func, target)`` compiles a scheduled PrimFunc alone and returns a call giving its ms
        (default: :func:`timer_alone`); the finalists are timed again through it, not compiled again.
    """

    pass_name = "TunedKnobs"

    def __init__(self, database: str | os.PathLike, target, tunable, base: Mapping[str, Any],
                 space: Mapping[str, Sequence[Any]], *, valid: Callable[[dict], bool] = lambda c: True,
                 trials: int = 32, seed: int = 0, budget_s: float | None = None, priority=None,
                 timer: Callable[[Any, Any], Callable[[], float]] | None = None) -> None:
        super().__init__(database, target, tunable, budget_s=budget_s, priority=priority)
        unknown = sorted(set(space) - set(SCHEDULE_KNOBS))
        if unknown:
            raise ValueError(f"TunedKnobs chooses only {SCHEDULE_KNOBS}, not {unknown}")
        self.base = dict(base)
        self.space = {k: tuple(v) for k, v in space.items() if len(tuple(v)) > 0}
        self.valid = valid
        self.trials = int(trials)
        self.seed = int(seed)
        self.timer = timer or timer_alone

    # -- the database --------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        path = self.folder / DATABASE_FILE
        if not path.exists():
            return {}
        with open(path) as f:
            return json.load(f)

    def _commit(self, key: str, record: dict[str, Any]) -> None:
        records = self._read()
        records[key] = record
        path = self.folder / DATABASE_FILE
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(records, f, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def config(self, knobs: Mapping[str, Any]) -> CpuScheduleConfig:
        return CpuScheduleConfig.from_mapping({**self.base, **knobs})

    def lookup(self, mod: tvm.IRModule, funcs) -> dict:
        records = self._read()
        found = {}
        for gv, func in funcs:
            record = records.get(workload_key(func))
            if record is None:
                continue
            if record["knobs"] is None:  # no rule schedules it: left to the knob passes
                found[gv.name_hint] = None
                continue
            try:
                scheduled = schedule_with(func, self.config(record["knobs"]))
            except Exception as exc:  # a record from an older rule set: tuned again
                log.debug("TunedKnobs: stored knobs of %s do not apply: %s", gv.name_hint, exc)
                continue
            if scheduled is not None:
                found[gv.name_hint] = scheduled
        return found

    # -- tuning one workload -------------------------------------------------------------------------

    def _draws(self, rng: np.random.Generator, best: Mapping[str, Any], random_phase: bool) -> dict[str, Any]:
        names = sorted(self.space)
        if random_phase:
            return {k: self.space[k][int(rng.integers(len(self.space[k])))] for k in names}
        knob = names[int(rng.integers(len(names)))]
        return {**best, knob: self.space[knob][int(rng.integers(len(self.space[knob])))]}

    def _seeds(self, shape: Mapping[str, Any], count: int) -> list[dict[str, Any]]:
        """The knobs chosen for the ``count`` workloads in the database most like ``shape`` (distinct)."""
        ranked = sorted((_distance(shape, r["shape"]), i, r["knobs"]) for i, r in enumerate(self._read().values())
                        if r.get("knobs") and r.get("shape"))
        seeds: list[dict[str, Any]] = []
        for dist, _, knobs in ranked:
            knobs = {k: v for k, v in knobs.items() if k in self.space}
            if dist < float("inf") and knobs not in seeds and len(seeds) < count:
                seeds.append(knobs)
        return seeds

    def tune(self, name: str, func) -> None:

        key = workload_key(func)
        block, spatial, reduction = domain(func)
        shape = {"block": block, "spatial": list(spatial), "reduction": list(reduction)}
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode())])
        base_knobs = {k: self.base[k] for k in self.space if k in self.base}
        queue = [base_knobs] + self._seeds(shape, self.trials // 4)
        if is_winograd(func):  # the untuned schedule's own knobs come second
            queue.insert(1, {**base_knobs, **{k: v for k, v in default_knobs(func).items() if k in self.space}})
        random_until = len(queue) + max(0, self.trials - len(queue)) // 2
        seen: set[str] = set()
        timed: list[tuple[float, dict[str, Any], Any]] = []  # (ms, knobs, the call timing it again)
        attempts = 0
        while len(timed) < self.trials and attempts < 8 * self.trials:
            attempts += 1
            if queue:
                candidate = queue.pop(0)
            else:
                best = min(timed, key=lambda t: t[0])[1] if timed else base_knobs
                candidate = self._draws(rng, best, random_phase=len(timed) < random_until)
            whole = {**self.base, **candidate}
            if not self.valid(whole):
                continue
            try:
                scheduled = schedule_with(func, CpuScheduleConfig.from_mapping(whole))
            except Exception as exc:  # a config the rules cannot apply to this function
                log.debug("TunedKnobs: %s: %s", name, exc)
                continue
            if scheduled is None:
                break  # no rule matches the function: nothing to tune
            digest = workload_key(scheduled)
            if digest in seen:
                continue
            seen.add(digest)
            again = self.timer(scheduled, self.target)
            timed.append((again(), dict(candidate), again))
            # only the fastest and the first are timed again: the others' kernels (and inputs) are let go
            for i in sorted(range(1, len(timed)), key=lambda i: timed[i][0])[CONFIRM:]:
                timed[i] = (*timed[i][:2], None)
        if not timed:
            log.info("TunedKnobs: %s: no config applies", name)
            self._commit(key, {"knobs": None, "func": name})
            return
        (ms, knobs), first_ms = self._confirm(timed, base_knobs)
        log.info("TunedKnobs: %s: %d configs, best %.4f ms (network config %s ms)", name, len(timed), ms,
                 "-" if first_ms is None else f"{first_ms:.4f}")
        self._commit(key, {"knobs": knobs, "ms": ms, "network_config_ms": first_ms, "trials": len(timed),
                           "func": name, "shape": shape})

    def _confirm(self, timed: list[tuple], base_knobs: Mapping[str, Any]):
        """``(ms, knobs)`` of the config chosen from ``timed`` (``(ms, knobs, time again)`` per trial), and the
        network config's ms (None when it was not the first trial).

        The fastest of 32 single timings is partly the luckiest: on a shared
        machine a config can win by a few percent of noise. So the
        :data:`CONFIRM` fastest configs and the network's own are timed once
        more, after all the trials, and the lowest mean of two decides.
        """
        base = 0 if timed[0][1] == base_knobs else None
        finalists = sorted(range(len(timed)), key=lambda i: timed[i][0])[:CONFIRM]
        if base is not None and base not in finalists:
            finalists.append(base)
        if len(timed) == 1:
            times = {0: timed[0][0]}
        else:
            times = {i: (timed[i][0] + timed[i][2]()) / 2 for i in finalists}
        best = min(times, key=times.get)
        return (times[best], timed[best][1]), (None if base is None else times[base])


def timer_alone(func, target) -> Callable[[], float]:
    """``func`` compiled alone for ``target``; a call giving its median ms (TVM's thread pool as sized now)."""

    return kernel_timer(func, target, repeats=5, min_repeat_ms=2.0)
