"""Schedules found by TVM's MetaSchedule, tuned once per workload and shared by every candidate.

:class:`TunedSchedules` runs on the fused module before the knob-driven CPU
passes. For each conv or dense PrimFunc it looks its workload up in a
MetaSchedule JSON database (MetaSchedule keys workloads by the structural
hash of the unscheduled function: the same computation, whatever the
candidate or run it came from); a workload not there yet is tuned with
``trials`` measured trials and committed. The module's functions are then
replaced by their best schedules (``MetaScheduleApplyDatabase``) and marked
scheduled, so the CPU passes leave them alone; everything else keeps the
knobs' schedules.

Several worker processes may share one database folder: tuning and the
database files are guarded by an exclusive file lock. ``stats`` counts the
workloads found in the database (``reused``), tuned now (``tuned``) and left
to the knobs' schedules because the tuning budget was spent (``untuned``).

With ``budget_s``, new workloads are tuned largest first (by multiply-
accumulates) until that many seconds of tuning have been spent in this pass
object; the rest keep the knobs' schedules (and are tuned by a later run).
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

from hwnas.passes.tile_conv2d import SCHEDULED_ATTR

log = logging.getLogger(__name__)


def _build(mod, target, _params):
    """MetaSchedule's build, without the import of every tensor intrinsic (CUDA's included, ~50 s)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


@contextlib.contextmanager
def _locked(folder: Path):
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


@tvm.transform.module_pass(opt_level=0, name="TunedSchedules")
class TunedSchedules:
    """Give conv/dense PrimFuncs MetaSchedule's best schedule from ``database`` (tuning the new workloads).

    Parameters
    ----------
    database:
        Folder of the MetaSchedule JSON database (created when absent).
    target:
        The ``tvm.target.Target`` the schedules are tuned and measured for.
    trials:
        Measured trials per new workload (MetaSchedule's evolutionary search).
    tunable:
        Which PrimFuncs to tune (the target decides: e.g. its conv and dense kernels).
    budget_s:
        Seconds of tuning this pass object may spend in all (None: no limit).
    priority:
        Orders the new workloads (highest first) when a budget applies, e.g. their MACs.
    """

    def __init__(self, database: str | os.PathLike, target, tunable, trials: int = 32, seed: int = 0,
                 budget_s: float | None = None, priority=None) -> None:
        self.folder = Path(database)
        self.tunable = tunable
        self.target = target
        self.trials = int(trials)
        self.seed = int(seed)
        self.budget_s = budget_s
        self.priority = priority
        self.stats = {"reused": 0, "tuned": 0, "untuned": 0}
        self.tuning_s = 0.0

    def _tune(self, func, work: Path) -> None:
        from tvm.s_tir import meta_schedule as ms

        # MetaSchedule re-configures its logger by handler *name*: an unnamed handler someone else attached
        # (pytest's capture, a user's logging set-up) makes it fail with "'NoneType' has no attribute 'format'"
        ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
        unnamed = [h for h in ms_logger.handlers if h.get_name() is None]
        for handler in unnamed:
            ms_logger.removeHandler(handler)
        try:
            self._tune_tir(ms, func, work)
        finally:
            for handler in unnamed:
                ms_logger.addHandler(handler)

    def _tune_tir(self, ms, func, work: Path) -> None:
        ms.tir_integration.tune_tir(
            tvm.IRModule({"main": func}), self.target, str(work), max_trials_global=self.trials,
            num_trials_per_iter=min(self.trials, 16), builder=ms.builder.LocalBuilder(f_build=_build, max_workers=1,
                                                                                    timeout_sec=120),
            runner=ms.runner.LocalRunner(), database=_database(self.folder), seed=self.seed,
            num_tuning_cores=int(self.target.attrs.get("num-cores", 1) or 1))

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from tvm import relax

        funcs = [(gv, f) for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and self.tunable(f)]
        if not funcs:
            return mod
        def apply(db):
            with self.target, db:
                return relax.transform.MetaScheduleApplyDatabase()(mod)

        def scheduled(func) -> bool:
            return func.attrs is not None and "tirx.is_scheduled" in func.attrs

        with _locked(self.folder):
            # a workload is in the database when MetaSchedule itself finds a schedule for it
            tuned = apply(_database(self.folder))
            missing = [(gv, f) for gv, f in funcs if not scheduled(tuned[gv.name_hint])]
            if self.budget_s is not None and self.priority is not None:
                missing.sort(key=lambda item: -self.priority(item[1]))
            done = 0
            for gv, func in missing:
                if self.budget_s is not None and self.tuning_s >= self.budget_s:
                    break
                log.info("TunedSchedules: tuning %s (%d trials)", gv.name_hint, self.trials)
                t0 = time.perf_counter()
                self._tune(func, self.folder / "logs")
                self.tuning_s += time.perf_counter() - t0
                done += 1
            if done:
                tuned = apply(_database(self.folder))  # re-read what the tuning committed
        self.stats["reused"] += len(funcs) - len(missing)
        self.stats["tuned"] += done
        self.stats["untuned"] += len(missing) - done
        out = mod.clone()
        for gv, _ in funcs:
            new = tuned[gv.name_hint]
            if scheduled(new):
                out.update_func(gv, new.with_attr(SCHEDULED_ATTR, "TunedSchedules"))
        return out
