"""The table evaluator: the NB201 table, from a csv written here or the published one."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from hwnas.accuracy import get_accuracy
from hwnas.accuracy.table import TABLE_COLUMNS
from hwnas.arch import get_space
from hwnas.arch.nb201 import genome_to_arch_str, genome_to_index, index_to_genome
from hwnas.data import DATA_ENV_VAR, require_data_file
from hwnas.errors import DataNotFoundError, InvalidConfigError

GOOD = (3, 3, 2, 3, 2, 3)  # conv-heavy cell
NONE = (0, 0, 0, 0, 0, 0)  # every edge "none": the cells output zeros
HEADER = ["nb201_index", "arch_str", *TABLE_COLUMNS.values()]


def write_table(path, genomes_values, *, header=HEADER):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for genome, values in genomes_values:
            w.writerow([genome_to_index(genome), genome_to_arch_str(genome), *values])
    return path


def test_table_from_a_small_csv_written_here(tmp_path):
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
