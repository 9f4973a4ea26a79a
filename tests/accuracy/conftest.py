"""Shared by the accuracy tests: a small nb201 space and small .npz training sets written on demand."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.arch import get_space


@pytest.fixture(scope="package")
def small_nb201():
    """The nb201 space with a narrow, shallow network: the same cells, trained in a second."""
    return get_space("nb201", channels=8, cells_per_stage=1)


def _band_images(rng, y, size):
    """Grey images where class ``c`` lights row ``2c`` (mod the size), plus noise."""
    x = rng.normal(0, 0.3, (len(y), size, size)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 2 * c % size] += 2.0
    return x


def write_npz(path, *, n_train=48, n_test=16, classes=3, size=6, **override):
    """A training .npz at ``path`` that a small network learns in a few steps; ``override`` replaces
    (None: leaves out) arrays."""
    rng = np.random.default_rng(0)
    y_train = np.arange(n_train) % classes
    y_test = np.arange(n_test) % classes
    arrays = {"x_train": _band_images(rng, y_train, size), "y_train": y_train,
              "x_test": _band_images(rng, y_test, size), "y_test": y_test}
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture
def make_npz(tmp_path):
    """``make_npz(name, **override)``: :func:`write_npz` into the test's temporary folder."""
    return lambda name, **override: write_npz(tmp_path / name, **override)


@pytest.fixture(scope="package")
def bands_npz(tmp_path_factory):
    """A small 8x8, 3-class .npz shared by the package's tests (a tiny network learns it in an epoch)."""
    return write_npz(tmp_path_factory.mktemp("bands") / "bands.npz", n_train=96, n_test=24, size=8)
