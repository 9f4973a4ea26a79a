"""The data sources users have on disk: CIFAR python batches and image folders, each error one line."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hwnas.accuracy.data import data_option, image_data
from hwnas.errors import DataNotFoundError, InvalidConfigError


def _cifar_batch(path, n, labels_key, classes, seed):
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             labels_key: [int(v) for v in rng.integers(0, classes, n)]}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_batches_are_read_and_checked(tmp_path):
    for i in range(1, 6):
        _cifar_batch(tmp_path / f"data_batch_{i}", 20, b"labels", 10, i)
    _cifar_batch(tmp_path / "test_batch", 10, b"labels", 10, 9)
    spec = data_option("supernet", f"cifar10:{tmp_path}")
    data = image_data(spec, split_seed=0, test_fraction=0.25)
    assert tuple(data.x_train.shape) == (100, 3, 32, 32) and tuple(data.x_test.shape) == (10, 3, 32, 32)
    assert data.num_classes == 10 and len(data.mean) == 3
    raw = np.random.default_rng(9).integers(0, 256, (10, 3072), dtype=np.uint8).reshape(-1, 3, 32, 32)
    assert np.allclose(data.raw_test(), raw, atol=1e-3)  # the normalisation is undone exactly
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="lacks the cifar10 python batch file.*data_batch_3"):
        data_option("supernet", f"cifar10:{tmp_path}/")
    with pytest.raises(DataNotFoundError, match="cifar100 folder .* not found"):
        data_option("supernet", f"cifar100:{tmp_path / 'none'}")


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "train").write_bytes(pickle.dumps({b"data": Evil()}))
    _cifar_batch(tmp_path / "test", 4, b"fine_labels", 100, 0)
    with pytest.raises(InvalidConfigError, match="cannot read .*train as a CIFAR python batch: refusing builtins.print"):
        data_option("supernet", f"cifar100:{tmp_path}")


def test_an_image_folder_is_split_and_its_errors_are_one_line(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "eel"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(8):
            size = (12, 12) if i else (16, 10)  # the odd one is resized to the first image's size
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    data = image_data(data_option("supernet", f"imagefolder:{tmp_path / 'imgs'}"), split_seed=0, test_fraction=0.25)
    assert data.num_classes == 3 and len(data.y_train) + len(data.y_test) == 24 and len(data.y_test) == 6
    assert data.x_train.shape[1] == 3 and data.source["classes"] == ["cat", "dog", "eel"]
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(InvalidConfigError, match="holds no images"):
        data_option("supernet", f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "imgs" / "dog" / "9.png").write_bytes(b"not a png")
    with pytest.raises(InvalidConfigError, match="cannot read image .*9.png"):
        data_option("supernet", f"imagefolder:{tmp_path / 'imgs'}/")
    with pytest.raises(InvalidConfigError, match="imagefolder: needs a folder"):
        data_option("supernet", "imagefolder:")
