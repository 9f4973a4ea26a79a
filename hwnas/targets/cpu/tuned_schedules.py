"""Schedules tuned once per workload and shared by every candidate: the common part, and MetaSchedule.

A conv or dense PrimFunc of a fused module is a *workload*; the same one
recurs across candidates, runs and processes. A tuner (:class:`WorkloadTuner`)
looks each tunable PrimFunc up in a database folder, tunes the ones not there
yet and replaces the module's functions by their tuned schedules, marked
scheduled so the knob-driven CPU passes that follow leave them alone;
everything else keeps the knobs' schedules. Two tuners exist:

* :class:`TunedSchedules` (``cpu:metaschedule``): TVM's MetaSchedule, its
  JSON database keyed by the structural hash of the unscheduled function;
* :class:`~hwnas.targets.cpu.tuned_knobs.TunedKnobs` (``cpu:tuned``): the CPU
  knobs chosen per workload by measuring the knob schedule of each.

Several worker processes may share one database folder: tuning and the
database files are guarded by an exclusive file lock. ``stats`` counts the
workloads found in the database (``reused``), tuned now (``tuned``) and left
to the knobs' schedules because the tuning budget was spent (``untuned``).

With ``budget_s``, new workloads are tuned largest first (``priority``, e.g.
multiply-accumulates) while the next one, at the mean time of those tuned so
far, still fits in that many seconds of tuning by this pass object; the rest
keep the knobs' schedules (and are tuned by a later run).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path

import tvm
from tvm import tirx

from hwnas.ir.schedule import SCHEDULED_ATTR

log = logging.getLogger(__name__)


def _build(mod, target, _params):
    """MetaSchedule's build, without the import of every tensor intrinsic (CUDA's included, ~50 s)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


@contextlib.contextmanager
def locked(folder: Path):
    """An exclusive lock on a database folder (created when absent), across processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _database(folder: Path):
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(path_workload=str(folder / "database_workload.json"),
                                    path_tuning_record=str(folder / "database_tuning_record.json"),
                                    module_equality="structural")


class WorkloadTuner:
    """The body of a module pass giving tunable PrimFuncs their tuned schedule from a database folder (tuning new ones).

    Subclasses say how a database is read (:meth:`lookup`) and how one
    workload is tuned and committed (:meth:`tune`), and are made passes with
    ``tvm.transform.module_pass``.

    Parameters
    ----------
    database:
        The database folder (created when absent).
    target:
        The ``tvm.target.Target`` the schedules are tuned and measured for.
    tunable:
        Which PrimFuncs to tune (the target decides: e.g. its conv and dense kernels).
    budget_s:
        Seconds of tuning this pass object may spend in all (None: no limit).
    priority:
        Orders the new workloads (highest first) when a budget applies, e.g. their MACs.
    """

    pass_name = "WorkloadTuner"

    def __init__(self, database: str | os.PathLike, target, tunable, *, budget_s: float | None = None,
                 priority=None) -> None:
        self.folder = Path(database)
        self.target = target
        self.tunable = tunable
        self.budget_s = budget_s
        self.priority = priority
        self.stats = {"reused": 0, "tuned": 0, "untuned": 0}
        self.tuning_s = 0.0
        #: called with (workload name, seconds) after each workload tuned (a progress display); None: nothing
        self.on_tuned = None

    def lookup(self, mod: tvm.IRModule, funcs) -> dict:
        """``{name: scheduled PrimFunc}`` for the functions of ``funcs`` ((gv, func) pairs) the database holds.

        ``None`` for a function the database knows has no tuned schedule (left to the knobs, not tuned again).
        """
        raise NotImplementedError

    def tune(self, name: str, func) -> None:
        """Tune one workload and commit its best schedule to the database."""
        raise NotImplementedError

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        funcs = [(gv, f) for gv, f in mod.functions_items()
                 if isinstance(f, tirx.PrimFunc) and (f.attrs is None or SCHEDULED_ATTR not in f.attrs)
                 and self.tunable(f)]
        if not funcs:
            return mod
        with locked(self.folder):
            found = self.lookup(mod, funcs)
            missing = [(gv, f) for gv, f in funcs if gv.name_hint not in found]
            if self.budget_s is not None and self.priority is not None:
                missing.sort(key=lambda item: -self.priority(item[1]))
            done = 0
            for gv, func in missing:
                # stop before a workload that would overrun the budget (judged by those tuned so far)
                tuned_so_far = self.stats["tuned"] + done
                mean_s = self.tuning_s / tuned_so_far if tuned_so_far else 0.0
                if self.budget_s is not None and self.tuning_s + mean_s >= self.budget_s:
                    break
                t0 = time.perf_counter()
                self.tune(gv.name_hint, func)
                self.tuning_s += time.perf_counter() - t0
                done += 1
                if self.on_tuned is not None:
                    self.on_tuned(gv.name_hint, time.perf_counter() - t0)
            if done:
                found = self.lookup(mod, funcs)  # re-read what the tuning committed
        self.stats["reused"] += len(funcs) - len(missing)
        self.stats["tuned"] += done
        self.stats["untuned"] += len(missing) - done
        out = mod.clone()
        for gv, _ in funcs:
            if found.get(gv.name_hint) is not None:
                out.update_func(gv, found[gv.name_hint].with_attr(SCHEDULED_ATTR, self.pass_name))
        return out


@tvm.transform.module_pass(opt_level=0, name="TunedSchedules")
class TunedSchedules(WorkloadTuner):
    """Give conv/dense PrimFuncs MetaSchedule's best schedule from ``database`` (tuning the new workloads).

    Parameters as :class:`WorkloadTuner`, and:

    trials:
        Measured trials per new workload (MetaSchedule's evolutionary search).
    seed:
        MetaSchedule's random seed.
    """

    pass_name = "TunedSchedules"

    def __init__(self, database: str | os.PathLike, target, tunable, trials: int = 32, seed: int = 0,
                 budget_s: float | None = None, priority=None) -> None:
        super().__init__(database, target, tunable, budget_s=budget_s, priority=priority)
        self.trials = int(trials)
        self.seed = int(seed)

    def tune(self, name: str, func) -> None:
        from tvm.s_tir import meta_schedule as ms

        log.info("TunedSchedules: tuning %s (%d trials)", name, self.trials)
        # MetaSchedule re-configures its logger by handler *name*: an unnamed handler someone else attached
        # (pytest's capture, a user's logging set-up) makes it fail with "'NoneType' has no attribute 'format'"
        ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
        unnamed = [h for h in ms_logger.handlers if h.get_name() is None]
        for handler in unnamed:
            ms_logger.removeHandler(handler)
        try:
            ms.tir_integration.tune_tir(
                tvm.IRModule({"main": func}), self.target, str(self.folder / "logs"), max_trials_global=self.trials,
                num_trials_per_iter=min(self.trials, 16),
                builder=ms.builder.LocalBuilder(f_build=_build, max_workers=1, timeout_sec=120),
                runner=ms.runner.LocalRunner(), database=_database(self.folder), seed=self.seed,
                num_tuning_cores=int(self.target.attrs.get("num-cores", 1) or 1))
        finally:
            for handler in unnamed:
                ms_logger.addHandler(handler)

    def lookup(self, mod: tvm.IRModule, funcs) -> dict:
        from tvm import relax

        # a workload is in the database when MetaSchedule itself finds a schedule for it
        with self.target, _database(self.folder):
            tuned = relax.transform.MetaScheduleApplyDatabase()(mod)
        found = {}
        for gv, _ in funcs:
            new = tuned[gv.name_hint]
            if new.attrs is not None and "tirx.is_scheduled" in new.attrs:
                found[gv.name_hint] = new
        return found
