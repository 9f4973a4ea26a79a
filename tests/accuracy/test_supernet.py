"""Supernet training and inherited-weight accuracy on small real data (a narrow nb201 and digits)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hwnas.accuracy import get_accuracy
from hwnas.accuracy.supernet import Schedule, SupernetFile, checkpoint_path, load_supernet, train_supernet
from hwnas.arch import get_space
from hwnas.errors import DataNotFoundError, InvalidConfigError

TINY = dict(channels=4, cells_per_stage=1)



@pytest.fixture(scope="module")
def tiny_space():
    return get_space("nb201", **TINY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_space, bands_npz):
    """A tiny nb201 supernet trained one epoch on a small .npz (a couple of seconds)."""
    out = tmp_path_factory.mktemp("sn") / "net.safetensors"
    train_supernet(tiny_space, str(bands_npz), out=out, schedule=Schedule(epochs=1, batch_size=32), threads=1)
    return out


@pytest.mark.slow  # about a minute on 2 cores; by default the trained-bundle test checks a trained subnet's accuracy
def test_inherited_accuracy_is_far_above_chance_after_a_short_training(tmp_path):
    space = get_space("nb201", channels=8, cells_per_stage=1)
    out = tmp_path / "digits.safetensors"
    train_supernet(space, "digits", out=out, schedule=Schedule(epochs=2, batch_size=32), threads=1)
    acc = get_accuracy(f"supernet:{out}", for_space=space)
    # digits has 10 classes: chance is 10 %; the largest subnet, a mixed one and the smallest all learned
    values = [acc.evaluate(space, g) for g in [(3,) * 6, (3, 2, 1, 3, 0, 2), (2,) * 6]]
    assert min(values) > 50 and values[0] > 85, values
    assert acc.evaluate(space, (3, 2, 1, 3, 0, 2)) == values[1]  # deterministic (fixed recalibration subset)
    header = SupernetFile.read(out).header
    assert header["epochs_done"] == 2 and len(header["history"]) == 2
    assert header["history"][-1]["largest_acc"] == pytest.approx(values[0], abs=1e-3)
    assert acc.settings()["fingerprint"] == SupernetFile.read(out).fingerprint


def test_safetensors_round_trip(trained, tiny_space, tmp_path):
    net, data, f = load_supernet(trained, tiny_space)
    header = {**f.header, "note": "copy"}
    copy = tmp_path / "copy.safetensors"
    SupernetFile.write(copy, header, net.shared())
    again = SupernetFile.read(copy)
    assert again.header == json.loads(json.dumps(header))
    assert set(again.tensors) == set(f.tensors)
    assert all(torch.equal(again.tensors[k], f.tensors[k]) for k in f.tensors)
    assert copy.read_bytes()[:8] != b"\x80\x04\x95" and b"hwnas-supernet/1" in copy.read_bytes()[:4096]  # no pickle


def test_a_killed_training_resumes_from_its_checkpoint_and_ends_where_an_uninterrupted_one_does(tmp_path, tiny_space,
                                                                                                make_npz):
    data = str(make_npz("small.npz", n_train=96, n_test=24, size=8))
    schedule = Schedule(epochs=2, batch_size=32, lr=0.1)
    whole = tmp_path / "whole.safetensors"
    train_supernet(tiny_space, data, out=whole, schedule=schedule, threads=1)

    out = tmp_path / "killed.safetensors"

    def kill_in_epoch_2(info):
        if info["epoch"] == 2 and info["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(tiny_space, data, out=out, schedule=schedule, progress=kill_in_epoch_2, threads=1)
    assert not out.exists() and SupernetFile.read(checkpoint_path(out)).header["epochs_done"] == 1
    with pytest.raises(InvalidConfigError, match="exists; pass --resume"):
        train_supernet(tiny_space, data, out=out, schedule=schedule)
    with pytest.raises(InvalidConfigError, match="unfinished"):
        load_supernet(checkpoint_path(out), tiny_space)
    epochs = []
    train_supernet(tiny_space, data, out=out, schedule=schedule, resume=True, threads=1,
                   progress=lambda info: epochs.append(info["epoch"]))
    assert set(epochs) == {2}  # only the second epoch ran again
    assert not checkpoint_path(out).exists()
    a, b = SupernetFile.read(whole), SupernetFile.read(out)
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert train_supernet(tiny_space, data, out=out, schedule=schedule, resume=True)["epochs_done"] == 2  # at once
    with pytest.raises(InvalidConfigError, match="other settings"):
        train_supernet(tiny_space, data, out=out, schedule=Schedule(epochs=3), resume=True)


def test_a_supernet_for_another_space_options_or_classes_is_refused_in_one_line(trained, tiny_space, tmp_path):
    for space, wrong in [(get_space("nb201"), "channels"), (get_space("nb201", num_classes=12, **TINY), "num_classes"),
                         (get_space("fbnet"), "fbnet")]:
        with pytest.raises(InvalidConfigError, match=f"was trained for nb201 .* not for {space.name} .*{wrong}") as e:
            get_accuracy(f"supernet:{trained}", for_space=space)
        assert "\n" not in str(e.value)
    with pytest.raises(DataNotFoundError, match="supernet file .* not found; train one"):
        get_accuracy(f"supernet:{tmp_path / 'absent.safetensors'}")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidConfigError, match="cannot read .* as a safetensors file"):
        get_accuracy(f"supernet:{tmp_path / 'junk.safetensors'}")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InvalidConfigError, match="is not an hwnas supernet"):
        get_accuracy(f"supernet:{tmp_path / 'other.safetensors'}")
    with pytest.raises(InvalidConfigError, match="needs a file"):
        get_accuracy("supernet")


def test_bad_training_input_is_one_line(tmp_path, tiny_space, make_npz):
    out = tmp_path / "n.safetensors"
    with pytest.raises(InvalidConfigError, match="the data has 12 classes but the nb201 network has 10 outputs"):
        train_supernet(tiny_space, str(make_npz("many.npz", classes=12, n_train=24, n_test=12)), out=out,
                       schedule=Schedule(epochs=1))
    with pytest.raises(InvalidConfigError, match="x_test is empty"):
        train_supernet(tiny_space, str(make_npz("empty.npz", x_test=np.zeros((0, 6, 6), np.float32),
                                               y_test=np.zeros(0, np.int64))), out=out, schedule=Schedule(epochs=1))
    with pytest.raises(InvalidConfigError, match="unknown data 'nope'; the data must be digits, PATH.npz, cifar10"):
        train_supernet(tiny_space, "nope", out=out, schedule=Schedule(epochs=1))
    with pytest.raises(InvalidConfigError, match="epochs must be an integer >= 1"):
        Schedule(epochs=0)
    with pytest.raises(InvalidConfigError, match="space mbv2 has no|--device must be cpu or cuda"):
        train_supernet(tiny_space, "digits", out=out, schedule=Schedule(epochs=1), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidConfigError, match="--device cuda: this torch sees no CUDA device"):
            train_supernet(tiny_space, "digits", out=out, schedule=Schedule(epochs=1), device="cuda")
