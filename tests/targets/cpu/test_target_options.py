"""The CPU target's options: measurement settings declared per instance, tuning settings read from the
environment when an instance is made (not at import)."""

from __future__ import annotations

import pytest

from hwnas.errors import InvalidConfigError
from hwnas.targets import get_target
from hwnas.targets.base import MeasureOptions


def test_tuning_settings_are_read_from_the_environment_when_a_target_is_made(monkeypatch):
    monkeypatch.delenv("HWNAS_TUNE_TRIALS", raising=False)
    monkeypatch.delenv("HWNAS_TUNE_BUDGET_S", raising=False)
    plain = get_target("cpu:tuned")
    assert (plain.tune_trials, plain.tune_budget_s) == (32, None)
    monkeypatch.setenv("HWNAS_TUNE_TRIALS", "7")  # after hwnas.targets.cpu was imported
    monkeypatch.setenv("HWNAS_TUNE_BUDGET_S", "2.5")
    tuned = get_target("cpu:tuned")
    assert (tuned.tune_trials, tuned.tune_budget_s) == (7, 2.5)
    assert (plain.tune_trials, plain.tune_budget_s) == (32, None)  # an instance keeps what it read
    monkeypatch.setenv("HWNAS_TUNE_TRIALS", "many")
    with pytest.raises(InvalidConfigError, match=r"^\$HWNAS_TUNE_TRIALS must be an integer, got 'many'$"):
        get_target("cpu")
    monkeypatch.setenv("HWNAS_TUNE_TRIALS", "0")
    with pytest.raises(InvalidConfigError, match=r"^\$HWNAS_TUNE_TRIALS must be >= 1, got '0'$"):
        get_target("cpu")


def test_measurement_options_are_declared_and_set_per_instance():
    a, b = get_target("cpu"), get_target("cpu")
    assert a.measure_options == MeasureOptions(warmup=3, repeats=10, min_repeat_ms=20.0)
    a.set_measure_options(repeats=3, min_repeat_ms=5)
    assert a.measure_options == MeasureOptions(warmup=3, repeats=3, min_repeat_ms=5)
    assert b.measure_options.repeats == 10
    with pytest.raises(InvalidConfigError, match="measurement repeats must be an integer >= 1, got 0"):
        a.set_measure_options(repeats=0)
    with pytest.raises(InvalidConfigError, match="unknown measurement option 'number'"):
        a.set_measure_options(number=2)
    assert get_target("gpu:h100").measure_options.repeats == 20
    mcu = get_target("mcu:stm32f746")
    assert mcu.measure_options is None
    with pytest.raises(InvalidConfigError, match="target mcu:stm32f746 does not measure"):
        mcu.set_measure_options(repeats=3)
