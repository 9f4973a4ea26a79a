"""The accuracy registry: names, specs, options and their errors."""

from __future__ import annotations

import pytest

from hwnas.accuracy import AccuracyEvaluator, accuracy_names, get_accuracy, register_accuracy
from hwnas.errors import HwnasError, InvalidConfigError


def test_registry_lists_builtins_and_answers_unknown_names_with_known_ones():
    assert {"table", "train", "proxy", "supernet"} <= set(accuracy_names())
    with pytest.raises(InvalidConfigError, match=r"unknown accuracy evaluator 'oracle'; known: proxy, supernet, table, train"):
        get_accuracy("oracle")
    with pytest.raises(InvalidConfigError, match=r"has no option 'colour'; options: kind"):
        get_accuracy("proxy", colour="red")
    with pytest.raises(InvalidConfigError, match="kind must be one of naswot, synflow"):
        get_accuracy("proxy:zen")
    with pytest.raises(InvalidConfigError, match="sets kind twice"):
        get_accuracy("proxy:naswot", kind="synflow")
    with pytest.raises(InvalidConfigError, match="epochs must be an integer >= 1"):
        get_accuracy("train", epochs=0)
    with pytest.raises(InvalidConfigError, match="optimizer must be one of sgd, adam"):
        get_accuracy("train", optimizer="lbfgs")


@pytest.mark.parametrize(
    ("spec", "option", "value", "message"),
    [
        ("train", "momentum", 1.0, r"option momentum must be in \[0, 1\), got 1.0"),
        ("train", "weight_decay", -0.1, r"option weight_decay must be in \[0, 1\), got -0.1"),
        ("train", "test_fraction", 0, r"option test_fraction must be in \(0, 1\), got 0"),
        ("proxy", "test_fraction", True, r"option test_fraction must be in \(0, 1\), got True"),
        ("proxy", "threads", 0, r"option threads must be an integer >= 1, got 0"),
        ("train", "time_budget_s", float("inf"), r"option time_budget_s must be a finite number > 0, got inf"),
    ],
)
def test_option_errors_are_one_line_naming_the_option(spec, option, value, message):
    with pytest.raises(InvalidConfigError, match=rf"^accuracy evaluator {spec}: {message}$"):
        get_accuracy(spec, **{option: value})


def test_a_name_is_registered_once():
    class Again(AccuracyEvaluator):
        name = "train"

    with pytest.raises(InvalidConfigError, match=r"accuracy evaluator 'train' is already registered \(TrainAccuracy\)"):
        register_accuracy(Again)


def test_errors_are_hwnas_errors():
    assert issubclass(InvalidConfigError, HwnasError) and issubclass(InvalidConfigError, ValueError)
