"""The training images: a user's .npz and its checks, and the resizing to a network's input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.accuracy import get_accuracy
from hwnas.accuracy.data import image_data, to_input
from hwnas.errors import DataNotFoundError, InvalidConfigError

GOOD = (3, 3, 2, 3, 2, 3)


def test_bad_npz_files_are_refused(tmp_path, make_npz, small_nb201):
    with pytest.raises(InvalidConfigError, match="lacks array.*y_test; a training .npz holds x_train, y_train"):
        get_accuracy("train", data=make_npz("a.npz", y_test=None))
    with pytest.raises(InvalidConfigError, match="y_train must be 48 labels"):
        get_accuracy("train", data=make_npz("b.npz", y_train=np.zeros(30, np.int64)))
    with pytest.raises(InvalidConfigError, match="x_train images are .* but x_test images are"):
        get_accuracy("train", data=make_npz("c.npz", x_test=np.zeros((16, 7, 7), np.float32)))
    with pytest.raises(InvalidConfigError, match="x_train must be images NCHW"):
        get_accuracy("train", data=make_npz("d.npz", x_train=np.zeros((48, 2, 6, 6), np.float32)))
    with pytest.raises(InvalidConfigError, match="integer class labels"):
        get_accuracy("train", data=make_npz("e.npz", y_test=np.full(16, 0.5)))
    (tmp_path / "f.npz").write_text("not a zip")
    with pytest.raises(InvalidConfigError, match="cannot read .* as an .npz file"):
        get_accuracy("train", data=tmp_path / "f.npz")
    with pytest.raises(DataNotFoundError, match="not found"):
        get_accuracy("train", data=tmp_path / "absent.npz")
    many = get_accuracy("train", data=make_npz("g.npz", classes=12, n_train=24, n_test=12))
    with pytest.raises(InvalidConfigError, match="the data has 12 classes but the nb201 network has 10 outputs"):
        many.evaluate(small_nb201, GOOD)


def test_images_are_normalised_by_the_training_split_and_resized_to_the_input(make_npz):
    data = image_data(make_npz("n.npz"), split_seed=0, test_fraction=0.25)
    assert data.x_train.mean().abs() < 1e-6 and data.x_train.std(unbiased=False) == pytest.approx(1.0, abs=1e-5)
    digits = image_data(None, split_seed=0, test_fraction=0.25)
    assert digits.x_train.shape == (1348, 1, 8, 8) and digits.x_test.shape == (449, 1, 8, 8)
    x = to_input(digits.x_train[:5], (5, 3, 16, 16))
    assert x.shape == (5, 3, 16, 16) and torch.equal(x[:, 0], x[:, 2])
    same = to_input(digits.x_train[:5], (5, 1, 8, 8))  # a copy: the cached data never reaches a network
    assert torch.equal(same, digits.x_train[:5]) and same.data_ptr() != digits.x_train.data_ptr()
    with pytest.raises(InvalidConfigError, match="the data has 3-channel images but the network takes 1 channels"):
        to_input(torch.zeros(2, 3, 8, 8), (2, 1, 8, 8))
