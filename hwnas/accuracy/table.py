"""The ``table`` evaluator: the published NAS-Bench-201 test accuracies (nb201 only).

They are read from ``nb201/accuracy.csv`` of the benchmark data or a file named by ``path=``,
and looked up by NB201 index.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hwnas.accuracy.registry import AccuracyEvaluator, choice_option, register_accuracy
from hwnas.arch import ArchSpace
from hwnas.arch.nb201 import genome_to_arch_str, genome_to_index
from hwnas.data import DATA_ENV_VAR, require_data_file
from hwnas.errors import DataNotFoundError, InvalidConfigError
from hwnas.util import file_sha256, file_stamp

__all__ = ["TABLE_COLUMNS", "TABLE_FILE", "TableAccuracy"]

#: the accuracy column of each dataset of the NB201 table
TABLE_COLUMNS: dict[str, str] = {
    "cifar10": "cifar10_test_acc",
    "cifar100": "cifar100_test_acc",
    "imagenet16-120": "imagenet16_120_test_acc",
}
#: the NB201 table's file inside the benchmark data folder
TABLE_FILE = "nb201/accuracy.csv"
#: the network the table's accuracies belong to
_TABLE_NETWORK = {"channels": 16, "cells_per_stage": 5}


@dataclasses.dataclass(frozen=True)
class _Table:
    """An NB201 accuracy table: per NB201 index, the architecture string and the accuracies."""

    path: Path
    sha256: str
    #: nb201_index -> arch_str ("" when the file has no arch_str column)
    arch: Mapping[int, str]
    #: column -> nb201_index -> accuracy
    values: Mapping[str, Mapping[int, float]]


_TABLE_LOCK = threading.Lock()
_TABLE_CACHE: dict[tuple[str, int, int], _Table] = {}


def _load_table(path: Path) -> _Table:
    """Read (once per file version) an NB201 accuracy table, checking its columns and values."""
    stamp = file_stamp(path)
    with _TABLE_LOCK:
        cached = _TABLE_CACHE.get(stamp)
    if cached is not None:
        return cached
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            required = ["nb201_index", *TABLE_COLUMNS.values()]
            missing = [c for c in required if c not in header]
            if missing:
                raise InvalidConfigError(
                    f"accuracy table {path} lacks column(s) {', '.join(missing)}; "
                    f"it needs {', '.join(required)} (and optionally arch_str)"
                )
            at = {name: header.index(name) for name in header}
            arch_col = at.get("arch_str")
            arch: dict[int, str] = {}
            values: dict[str, dict[int, float]] = {c: {} for c in TABLE_COLUMNS.values()}
            for line_no, row in enumerate(reader, start=2):
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise InvalidConfigError(
                        f"accuracy table {path} line {line_no} has {len(row)} fields, the header {len(header)}"
                    )
                try:
                    index = int(row[at["nb201_index"]])
                    parsed = {c: float(row[at[c]]) for c in TABLE_COLUMNS.values()}
                except ValueError:
                    raise InvalidConfigError(
                        f"accuracy table {path} line {line_no} has a value that is not a number"
                    ) from None
                if index in arch:
                    raise InvalidConfigError(f"accuracy table {path} lists nb201_index {index} twice")
                arch[index] = row[arch_col].strip() if arch_col is not None else ""
                for c, v in parsed.items():
                    values[c][index] = v
    except UnicodeDecodeError:
        raise InvalidConfigError(f"accuracy table {path} is not a text (csv) file") from None
    except OSError as exc:
        raise DataNotFoundError(f"cannot read accuracy table {path}: {exc.strerror or exc}") from None
    table = _Table(path=path, sha256=file_sha256(path), arch=arch, values=values)
    with _TABLE_LOCK:
        _TABLE_CACHE[stamp] = table
    return table


@register_accuracy
class TableAccuracy(AccuracyEvaluator):
    """Published NAS-Bench-201 test accuracy (%, 200 epochs, mean over seeds), by NB201 index."""

    name = "table"
    description = "NAS-Bench-201 published test accuracy (nb201 only): cifar10, cifar100, imagenet16-120"
    spec_option = "dataset"

    def __init__(self, *, dataset: str = "cifar10", path: str | os.PathLike[str] | None = None) -> None:
        """Options: ``dataset`` (cifar10, cifar100, imagenet16-120); ``path`` of the csv
        (default: ``nb201/accuracy.csv`` in the benchmark data folder, see ``$HWNAS_DATA``).

        The file is read here, so a missing or malformed file fails before a search starts.
        """
        self.dataset = choice_option(self.name, "dataset", dataset, tuple(TABLE_COLUMNS))
        if path is None:
            self.path = require_data_file(TABLE_FILE)
        else:
            self.path = Path(path).expanduser()
            if not self.path.is_file():
                raise DataNotFoundError(
                    f"accuracy table {self.path} not found; pass path= an NB201 accuracy csv, or leave "
                    f"it out to use {TABLE_FILE} in the folder named by {DATA_ENV_VAR}"
                )
        self._table = _load_table(self.path)

    def settings(self) -> dict[str, Any]:
        # the file's content, not its path: a moved data folder may resume a run
        return {"evaluator": self.name, "dataset": self.dataset, "table_sha256": self._table.sha256}

    @classmethod
    def check_space(cls, space: ArchSpace) -> None:
        if space.name != "nb201":
            raise InvalidConfigError(
                f"the table evaluator has accuracies for nb201 only, not space {space.name!r}; "
                f"use the train or proxy evaluator"
            )
        for option, value in _TABLE_NETWORK.items():
            if getattr(space, option, value) != value:
                raise InvalidConfigError(
                    f"the table evaluator's accuracies are for nb201 with channels=16, cells_per_stage=5; "
                    f"this space has {option}={getattr(space, option)}"
                )

    def _evaluate(self, space: ArchSpace, genome: tuple[int, ...]) -> tuple[float, dict[str, Any]]:
        self.check_space(space)
        index = genome_to_index(genome)
        column = TABLE_COLUMNS[self.dataset]
        value = self._table.values[column].get(index)
        if value is None:
            raise InvalidConfigError(f"accuracy table {self.path} has no row for nb201_index {index}")
        listed = self._table.arch.get(index, "")
        expected = genome_to_arch_str(genome)
        if listed and listed != expected:
            raise InvalidConfigError(
                f"accuracy table {self.path} lists {listed} at nb201_index {index}, where NB201 has "
                f"{expected}; the file is not in NB201 index order"
            )
        return value, {"nb201_index": index, "dataset": self.dataset}
