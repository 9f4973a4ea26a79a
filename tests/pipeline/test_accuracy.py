"""Accuracy evaluators: the NB201 table, short training on digits or an .npz, zero-cost proxies."""

from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest
import torch

from hwnas.arch import get_space
from hwnas.arch.nb201 import genome_to_arch_str, genome_to_index, index_to_genome
from hwnas.data import DATA_ENV_VAR, require_data_file
from hwnas.errors import DataNotFoundError, HwnasError, InvalidConfigError
from hwnas.accuracy.evaluators import (
    TABLE_COLUMNS,
    AccuracyEvaluator,
    accuracy_names,
    get_accuracy,
)

GOOD = (3, 3, 2, 3, 2, 3)  # conv-heavy cell
NONE = (0, 0, 0, 0, 0, 0)  # every edge "none": the cells output zeros
HEADER = ["nb201_index", "arch_str", *TABLE_COLUMNS.values()]


@pytest.fixture(scope="module")
def small_nb201():
    """The nb201 space with a narrow, shallow network: the same cells, trained in a second."""
    return get_space("nb201", channels=8, cells_per_stage=1)


def write_table(path, genomes_values, *, header=HEADER):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for genome, values in genomes_values:
            w.writerow([genome_to_index(genome), genome_to_arch_str(genome), *values])
    return path


# ----------------------------------------------------------------------------- registry


def test_registry_lists_builtins_and_answers_unknown_names_with_known_ones():
    assert {"table", "train", "proxy"} <= set(accuracy_names())
    with pytest.raises(InvalidConfigError, match=r"unknown accuracy evaluator 'oracle'; known: proxy, table, train"):
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


# ----------------------------------------------------------------------------- table


def test_table_from_a_small_csv_written_here(tmp_path, small_nb201):
    path = write_table(tmp_path / "acc.csv", [(GOOD, (93.5, 70.25, 44.125)), (NONE, (10.0, 1.0, 0.8333))])
    space = get_space("nb201")
    for i, dataset in enumerate(TABLE_COLUMNS):
        evaluator = get_accuracy(f"table:{dataset}", path=path)
        assert evaluator.evaluate(space, GOOD) == [93.5, 70.25, 44.125][i]
        assert evaluator.evaluate(space, list(NONE)) == [10.0, 1.0, 0.8333][i]
    result = get_accuracy("table", path=path).evaluate_detailed(space, GOOD)
    assert result.details == {"nb201_index": genome_to_index(GOOD), "dataset": "cifar10"}
    with pytest.raises(InvalidConfigError, match=f"has no row for nb201_index {genome_to_index((1,) * 6)}"):
        get_accuracy("table", path=path).evaluate(space, (1,) * 6)
    settings = get_accuracy("table", path=path, dataset="cifar100").settings()
    assert settings["dataset"] == "cifar100" and len(settings["table_sha256"]) == 64
    json.dumps(settings)


def test_table_matches_the_published_csv_rows():
    try:
        path = require_data_file("nb201/accuracy.csv")
    except DataNotFoundError as err:
        pytest.skip(str(err))
    with open(path, newline="") as f:
        rows = {int(r["nb201_index"]): r for r in csv.DictReader(f)}
    space = get_space("nb201")
    for dataset, column in TABLE_COLUMNS.items():
        evaluator = get_accuracy("table", dataset=dataset)
        for index in (0, 1, 4321, 15624):
            genome = index_to_genome(index)
            assert rows[index]["arch_str"] == genome_to_arch_str(genome)
            assert evaluator.evaluate(space, genome) == float(rows[index][column])


def test_missing_table_names_the_path_and_how_to_point_at_it(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match=re.escape(f"{tmp_path / 'absent.csv'} not found; pass path=")):
        get_accuracy("table", path=tmp_path / "absent.csv")
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    expected = f"{tmp_path / 'nb201' / 'accuracy.csv'} not found; set {DATA_ENV_VAR}"
    with pytest.raises(DataNotFoundError, match=re.escape(expected)):
        get_accuracy("table")
    assert issubclass(DataNotFoundError, FileNotFoundError)


def test_table_with_wrong_columns_or_order_is_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("nb201_index,cifar10_test_acc\n0,90.0\n")
    with pytest.raises(InvalidConfigError, match="lacks column.*cifar100_test_acc, imagenet16_120_test_acc"):
        get_accuracy("table", path=bad)
    shuffled = tmp_path / "shuffled.csv"
    with open(shuffled, "w", newline="") as f:  # a row whose arch_str is not the cell of its index
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerow([genome_to_index(GOOD), genome_to_arch_str(NONE), 1, 2, 3])
    with pytest.raises(InvalidConfigError, match="not in NB201 index order"):
        get_accuracy("table", path=shuffled).evaluate(get_space("nb201"), GOOD)
    text = tmp_path / "text.csv"
    text.write_text(",".join(HEADER) + "\n0,x,ninety,1,2\n")
    with pytest.raises(InvalidConfigError, match="line 2 has a value that is not a number"):
        get_accuracy("table", path=text)


def test_table_refuses_other_spaces_and_other_nb201_networks(tmp_path, small_nb201):
    evaluator = get_accuracy("table", path=write_table(tmp_path / "acc.csv", [(GOOD, (1, 2, 3))]))
    mbv2 = get_space("mbv2")
    with pytest.raises(InvalidConfigError, match="the table evaluator has accuracies for nb201 only, not space 'mbv2'"):
        evaluator.evaluate(mbv2, mbv2.sample(np.random.default_rng(0)))
    with pytest.raises(InvalidConfigError, match="channels=16, cells_per_stage=5; this space has channels=8"):
        evaluator.evaluate(small_nb201, GOOD)


# ----------------------------------------------------------------------------- train


def test_training_on_digits_beats_chance_and_is_reproducible(small_nb201):
    threads = torch.get_num_threads()
    evaluator = get_accuracy("train", max_steps=30, time_budget_s=None, threads=1)
    first = evaluator.evaluate_detailed(small_nb201, GOOD)
    second = get_accuracy("train", max_steps=30, time_budget_s=None, threads=1).evaluate_detailed(small_nb201, GOOD)
    # measured 78-91 % over seeds 0-3 (chance: 10 %)
    assert first.accuracy > 40.0
    assert first.accuracy == second.accuracy
    assert first.details["final_loss"] == second.details["final_loss"]
    assert first.details["steps"] == 30 and first.details["stopped_by"] == "max_steps"
    assert first.details["test_samples"] == 449 and first.details["train_samples"] == 1348
    assert torch.get_num_threads() == threads  # restored
    settings = evaluator.settings()
    assert settings["data"] == "digits" and settings["max_steps"] == 30 and settings["optimizer"] == "adam"
    json.dumps(settings)


def test_training_stops_at_the_time_budget(small_nb201):
    result = get_accuracy("train", epochs=100, time_budget_s=0.3, threads=1).evaluate_detailed(small_nb201, GOOD)
    assert result.details["stopped_by"] == "time_budget"
    assert 1 <= result.details["steps"] < 100 * 43
    assert 0.0 <= result.accuracy <= 100.0


def test_training_a_network_with_more_outputs_than_classes():
    space = get_space("nb201", channels=8, cells_per_stage=1, num_classes=20)
    result = get_accuracy("train", max_steps=3, time_budget_s=None, optimizer="sgd").evaluate_detailed(space, GOOD)
    assert result.details["classes"] == 10 and result.details["steps"] == 3


def _npz(path, *, n_train=48, n_test=16, classes=3, size=6, **override):
    rng = np.random.default_rng(0)
    y_train = np.arange(n_train) % classes
    y_test = np.arange(n_test) % classes
    # each class lights a different row band of the image, plus noise
    def images(y):
        x = rng.normal(0, 0.3, (len(y), size, size)).astype(np.float32)
        for i, c in enumerate(y):
            x[i, 2 * c % size] += 2.0
        return x

    arrays = {"x_train": images(y_train), "y_train": y_train, "x_test": images(y_test), "y_test": y_test}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_training_on_a_user_npz(tmp_path, small_nb201):
    path = _npz(tmp_path / "tiny.npz")
    evaluator = get_accuracy(f"train:{path}", epochs=3, time_budget_s=None, batch_size=16)
    result = evaluator.evaluate_detailed(small_nb201, GOOD)
    assert result.details["test_samples"] == 16 and result.details["classes"] == 3
    assert result.details["steps"] == 9 and result.details["epochs_completed"] == 3
    correct = result.accuracy * 16 / 100
    assert 0.0 <= result.accuracy <= 100.0 and correct == pytest.approx(round(correct))
    assert evaluator.settings()["data"] == "npz"
    # NCHW with 3 channels works as well
    rgb = _npz(tmp_path / "rgb.npz", x_train=np.zeros((8, 3, 5, 5), np.float32), y_train=np.arange(8) % 2,
               x_test=np.ones((4, 3, 5, 5), np.float32), y_test=np.arange(4) % 2)
    assert 0.0 <= get_accuracy("train", data=rgb, max_steps=1).evaluate(small_nb201, GOOD) <= 100.0


def test_bad_npz_files_are_refused(tmp_path, small_nb201):
    with pytest.raises(InvalidConfigError, match="lacks array.*y_test; a training .npz holds x_train, y_train"):
        get_accuracy("train", data=_npz(tmp_path / "a.npz", y_test=None))
    with pytest.raises(InvalidConfigError, match="y_train must be 48 labels"):
        get_accuracy("train", data=_npz(tmp_path / "b.npz", y_train=np.zeros(30, np.int64)))
    with pytest.raises(InvalidConfigError, match="x_train images are .* but x_test images are"):
        get_accuracy("train", data=_npz(tmp_path / "c.npz", x_test=np.zeros((16, 7, 7), np.float32)))
    with pytest.raises(InvalidConfigError, match="x_train must be images NCHW"):
        get_accuracy("train", data=_npz(tmp_path / "d.npz", x_train=np.zeros((48, 2, 6, 6), np.float32)))
    with pytest.raises(InvalidConfigError, match="integer class labels"):
        get_accuracy("train", data=_npz(tmp_path / "e.npz", y_test=np.full(16, 0.5)))
    (tmp_path / "f.npz").write_text("not a zip")
    with pytest.raises(InvalidConfigError, match="cannot read .* as an .npz file"):
        get_accuracy("train", data=tmp_path / "f.npz")
    with pytest.raises(DataNotFoundError, match="not found"):
        get_accuracy("train", data=tmp_path / "absent.npz")
    many = get_accuracy("train", data=_npz(tmp_path / "g.npz", classes=12, n_train=24, n_test=12))
    with pytest.raises(InvalidConfigError, match="the data has 12 classes but the nb201 network has 10 outputs"):
        many.evaluate(small_nb201, GOOD)


# ----------------------------------------------------------------------------- proxies


@pytest.mark.parametrize("kind", ["naswot", "synflow"])
def test_proxies_are_deterministic_finite_and_rank_a_real_network_above_a_degenerate_one(kind, small_nb201):
    evaluator = get_accuracy("proxy", kind=kind, batch_size=32)
    assert isinstance(evaluator, AccuracyEvaluator) and evaluator.is_percentage is False
    good = evaluator.evaluate(small_nb201, GOOD)
    again = get_accuracy(f"proxy:{kind}", batch_size=32).evaluate(small_nb201, GOOD)
    none = evaluator.evaluate(small_nb201, NONE)
    skip = evaluator.evaluate(small_nb201, (1,) * 6)
    assert all(isinstance(v, float) and math.isfinite(v) for v in (good, none, skip))
    assert good == again
    assert good > skip > none
    assert evaluator.settings()["kind"] == kind
    json.dumps(evaluator.settings())


def test_proxies_handle_relu6_networks():
    space = get_space("mbv2", resolutions=(64,), widths=(0.5,))
    small = [0, 0, 0] * 6 + [0, 0]
    large = [2, 2, 3] * 6 + [0, 0]
    for kind in ("naswot", "synflow"):
        evaluator = get_accuracy("proxy", kind=kind, batch_size=16)
        assert evaluator.evaluate(space, large) > evaluator.evaluate(space, small)


def test_errors_are_hwnas_errors():
    assert issubclass(InvalidConfigError, HwnasError) and issubclass(InvalidConfigError, ValueError)
