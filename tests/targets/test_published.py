"""published:<device>: prices architectures from the published tables, read independently here."""

import csv
import json

import numpy as np
import pytest

from hwnas.arch import get_space
from hwnas.arch.nb201 import genome_to_index
from hwnas.data import data_dir
from hwnas.errors import DataNotFoundError, InvalidConfigError, RunError
from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.targets import get_target

needs_data = pytest.mark.skipif(not (data_dir() / "nb201" / "latency.csv").is_file(),
                                reason=f"published data not found in {data_dir()} (set HWNAS_DATA)")


@needs_data
@pytest.mark.parametrize("device", ["raspi4", "eyeriss", "titanxp_1", "gold_6240"])
def test_nb201_latency_is_the_csv_row(device):
    with open(data_dir() / "nb201" / "latency.csv", newline="") as f:
        rows = {int(r["nb201_index"]): float(r[f"lat_ms_{device}"]) for r in csv.DictReader(f)}
    space = get_space("nb201")
    target = get_target(f"published:{device}")
    rng = np.random.default_rng(0)
    for _ in range(20):
        genome = space.sample(rng)
        ev = evaluate(Candidate.from_space(space, genome), target)
        assert ev.metrics == {"latency_ms": rows[genome_to_index(genome)]}
        assert ev.built is None and ev.onnx_path is None  # nothing compiled


@needs_data
def test_fbnet_lut_sum_matches_the_published_per_architecture_list():
    with open(data_dir() / "fbnet" / "latency.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:200]
    space = get_space("fbnet")
    for device in ("raspi4", "eyeriss", "fpga", "pixel3"):
        target = get_target(f"published:{device}")
        for r in rows:
            genome = [int(v) for v in r["ops"].split()]
            got = target.cost_architecture(space, genome, {}, method="table")
            assert got["latency_ms"] == pytest.approx(float(r[f"lat_ms_{device}"]), rel=1e-9)
    lut = json.loads((data_dir() / "fbnet" / "hwnasbench_lut.json").read_text())
    energy = get_target("published:eyeriss").cost_architecture(space, [0] * 22, {}, method="table")["energy_mj"]
    assert energy > 0 and "eyeriss_energy" in lut


@needs_data
def test_fbnet_devices_known_only_from_the_list():
    space = get_space("fbnet")
    target = get_target("published:1080ti_1")
    with open(data_dir() / "fbnet" / "latency.csv", newline="") as f:
        first = next(csv.DictReader(f))
    genome = [int(v) for v in first["ops"].split()]
    assert target.cost_architecture(space, genome, {}, method="table")["latency_ms"] == float(first["lat_ms_1080ti_1"])
    other = [8] * 22
    if " ".join(map(str, other)) != first["ops"]:
        with pytest.raises(RunError, match="lists 5,000 fbnet architectures"):
            target.cost_architecture(space, other, {}, method="table")


def test_bad_devices_and_spaces():
    with pytest.raises(InvalidConfigError, match="needs a device, e.g. published:raspi4; devices: raspi4"):
        get_target("published")
    with pytest.raises(InvalidConfigError, match="needs a device"):
        get_target("published:tpu9")
    target = get_target("published:raspi4")
    with pytest.raises(InvalidConfigError, match="tables for nb201 and fbnet only, not mbv2"):
        target.cost_architecture(get_space("mbv2"), [0] * 20, {}, method="table")
    with pytest.raises(InvalidConfigError, match="channels=16, cells_per_stage=5"):
        target.cost_architecture(get_space("nb201", channels=8), [0] * 6, {}, method="table")
    assert target.hardware_space.size == 0 and target.hardware_space.validate({}) == {}


def test_missing_data_is_one_clear_error(monkeypatch, tmp_path):
    from hwnas.targets import published

    monkeypatch.setenv("HWNAS_DATA", str(tmp_path))
    published._latency_columns.cache_clear()
    with pytest.raises(DataNotFoundError, match="nb201/latency.csv not found; set HWNAS_DATA"):
        get_target("published:raspi4").cost_architecture(get_space("nb201"), [0] * 6, {}, method="table")
