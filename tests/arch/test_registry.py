"""The space registry, the contract every space fulfils, and the data-folder helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas import data
from hwnas.arch import ArchSpace, FBNetSpace, MBV2Space, NB201Space, get_space, register_space, space_names
from hwnas.errors import DataNotFoundError, HwnasError, InvalidConfigError, InvalidGenomeError, UnknownSpaceError

NAMES = ["fbnet", "mbv2", "nb201"]


def test_space_names() -> None:
    assert space_names() == NAMES


@pytest.mark.parametrize(("name", "cls"), [("fbnet", FBNetSpace), ("mbv2", MBV2Space), ("nb201", NB201Space)])
def test_get_space(name: str, cls: type) -> None:
    space = get_space(name)
    assert type(space) is cls and isinstance(space, ArchSpace)
    assert space.name == name and space.description


def test_options_reach_the_space() -> None:
    assert get_space("nb201", num_classes=100).num_classes == 100
    assert get_space("mbv2", resolutions=(32, 64)).resolutions == (32, 64)
    assert get_space("fbnet", num_classes=10).num_classes == 10


@pytest.mark.parametrize("name", ["resnet", "", "NB201", None, 3])
def test_unknown_space(name) -> None:
    with pytest.raises(UnknownSpaceError) as info:
        get_space(name)
    assert str(info.value) == f"unknown space {name!r}; known: fbnet, mbv2, nb201"
    assert isinstance(info.value, KeyError) and isinstance(info.value, HwnasError)


def test_unknown_option() -> None:
    with pytest.raises(InvalidConfigError) as info:
        get_space("nb201", num_classes=10, depth=3)
    assert str(info.value) == "space 'nb201' has no option 'depth'; options: num_classes, channels, cells_per_stage"
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)


def test_invalid_option_value() -> None:
    with pytest.raises(InvalidConfigError, match="mbv2: .*resolution.*got 100"):
        get_space("mbv2", resolutions=(100,))


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(InvalidConfigError, match="'nb201' is already registered"):
        register_space(NB201Space)
    assert space_names() == NAMES


# --- the contract, for every registered space -----------------------------------------


@pytest.fixture(params=NAMES)
def space(request) -> ArchSpace:
    return get_space(request.param)


def test_sample_is_reproducible_and_valid(space: ArchSpace) -> None:
    a = [space.sample(np.random.default_rng(7)) for _ in range(5)]
    b = [space.sample(np.random.default_rng(7)) for _ in range(5)]
    assert a == b
    rng1, rng2 = np.random.default_rng(7), np.random.default_rng(8)
    seq1 = [space.sample(rng1) for _ in range(10)]
    seq2 = [space.sample(rng2) for _ in range(10)]
    assert seq1 != seq2
    assert len(set(seq1)) > 1
    for g in seq1:
        assert space.validate(g) == g
        assert all(type(x) is int for x in g)


def test_sample_covers_every_choice(space: ArchSpace) -> None:
    rng = np.random.default_rng(0)
    genomes = np.array([space.sample(rng) for _ in range(300)])
    for i, c in enumerate(space.cardinalities):
        assert set(genomes[:, i].tolist()) == set(range(c)), f"gene {i}"


def test_validate_accepts_integer_like_genes(space: ArchSpace) -> None:
    g = space.sample(np.random.default_rng(1))
    assert space.validate(list(g)) == g
    assert space.validate(np.array(g)) == g
    assert space.validate([float(x) for x in g]) == g


def test_wrong_length(space: ArchSpace) -> None:
    for n in (0, space.size - 1, space.size + 1):
        with pytest.raises(InvalidGenomeError, match=f"must have {space.size} genes, got {n}"):
            space.validate([0] * n)


def test_out_of_range_names_the_gene(space: ArchSpace) -> None:
    last = space.size - 1
    name = space.gene_names()[last]
    genome = [0] * space.size
    genome[last] = space.cardinalities[last]
    with pytest.raises(InvalidGenomeError, match=rf"gene {last} \({name}\) must be in 0\.\.{genome[last] - 1}"):
        space.validate(genome)
    genome[last] = -1
    with pytest.raises(InvalidGenomeError, match="got -1"):
        space.validate(genome)


@pytest.mark.parametrize("bad", [1.5, "1", None, True, float("inf")])
def test_non_integer_genes(space: ArchSpace, bad) -> None:
    genome: list = [0] * space.size
    genome[0] = bad
    with pytest.raises(InvalidGenomeError, match="integers"):
        space.validate(genome)


@pytest.mark.parametrize("bad", [None, 5, "0" * 6])
def test_non_list_genomes(space: ArchSpace, bad) -> None:
    with pytest.raises(InvalidGenomeError, match="integers"):
        space.validate(bad)


def test_build_and_describe_reject_bad_genomes(space: ArchSpace) -> None:
    for call in (space.build, space.describe, space.input_shape):
        with pytest.raises(InvalidGenomeError):
            call([0] * (space.size + 1))


def test_build_is_seeded_and_in_eval_mode(space: ArchSpace) -> None:
    g = space.sample(np.random.default_rng(3))
    a, b, c = space.build(g, seed=1), space.build(g, seed=1), space.build(g, seed=2)
    assert not a.training
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_describe_is_one_distinct_line(space: ArchSpace) -> None:
    rng = np.random.default_rng(4)
    genomes = {space.sample(rng) for _ in range(20)}
    texts = {space.describe(g) for g in genomes}
    assert len(texts) == len(genomes)
    assert all(t and "\n" not in t for t in texts)


def test_input_shape(space: ArchSpace) -> None:
    shape = space.input_shape(space.sample(np.random.default_rng(5)))
    assert len(shape) == 4 and shape[:2] == (1, 3) and shape[2] == shape[3] >= 32


# --- the benchmark data folder ---------------------------------------------------------


def test_data_dir_default_and_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HWNAS_DATA", raising=False)
    repo = Path(data.__file__).resolve().parent.parent
    assert data.data_dir() == repo.parent / "shared" / "data"
    monkeypatch.setenv("HWNAS_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path


def test_require_data_file(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HWNAS_DATA", str(tmp_path))
    (tmp_path / "nb201").mkdir()
    (tmp_path / "nb201" / "accuracy.csv").write_text("nb201_index,arch_str\n")
    assert data.require_data_file("nb201/accuracy.csv") == tmp_path / "nb201" / "accuracy.csv"
    with pytest.raises(DataNotFoundError) as info:
        data.require_data_file("fbnet/latency.csv")
    message = str(info.value)
    assert str(tmp_path / "fbnet" / "latency.csv") in message and "HWNAS_DATA" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, HwnasError)
    with pytest.raises(DataNotFoundError):
        data.require_data_file("nb201")  # a folder is not a data file
