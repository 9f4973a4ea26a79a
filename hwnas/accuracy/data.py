"""The images that the train and supernet evaluators learn from and the naswot proxy feeds, read from
disk in the formats users have (never downloaded), normalised by the training statistics and resized to
the network's input:

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), split with a seed;
* ``PATH.npz``: arrays ``x_train, y_train, x_test, y_test`` (images NCHW with C 1 or 3, or NHW);
* ``cifar10:DIR`` / ``cifar100:DIR``: the python batch files of CIFAR (``data_batch_1..5`` and
  ``test_batch``, or ``train`` and ``test``), read with an unpickler that admits plain data only;
* ``imagefolder:DIR``: one subfolder per class (sorted names are the labels 0, 1, ...), either
  ``DIR/train/CLASS`` and ``DIR/test/CLASS`` or ``DIR/CLASS`` split with a seed; every image is read
  with Pillow and resized to the first one's size.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import pickle
import threading
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from hwnas.arch import ArchSpace
from hwnas.errors import DataNotFoundError, InvalidConfigError
from hwnas.util import file_sha256, file_stamp

__all__ = ["DATA_FORMS", "ImageData", "check_classes", "data_option", "image_data", "to_input"]

#: what ``--data`` takes
DATA_FORMS = "digits, PATH.npz, cifar10:DIR, cifar100:DIR or imagefolder:DIR"

@dataclasses.dataclass(frozen=True)
class ImageData:
    """A classification set at its native resolution, normalised by the training statistics."""

    x_train: torch.Tensor  # (N, C, H, W) float32, C in (1, 3)
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    #: JSON-able identity of the data, for settings
    source: Mapping[str, Any]
    #: per-channel mean and deviation of the raw training images that normalised both splits
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def raw_test(self) -> np.ndarray:
        """The held-out images as they were read (before normalisation), float32 NCHW."""
        mean = np.asarray(self.mean, dtype=np.float64).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float64).reshape(1, -1, 1, 1)
        return (self.x_test.numpy().astype(np.float64) * std + mean).astype(np.float32)

    def preprocessing(self, input_shape: Sequence[int]) -> dict[str, Any]:
        """How a raw image becomes a network input of ``input_shape`` (NCHW), as a bundle's manifest records it
        (``run.py --eval`` applies it with numpy)."""
        return {
            "normalise": {"mean": list(self.mean), "std": list(self.std), "formula": "(x - mean) / std per channel"},
            "image_shape": list(self.x_test.shape[1:]),
            "resize": {"to": list(input_shape[2:]), "mode": "bilinear", "align_corners": False,
                       "applied": tuple(self.x_test.shape[2:]) != tuple(input_shape[2:])},
            "replicate_channels": {"from": int(self.x_test.shape[1]), "to": int(input_shape[1])},
        }


def _statistics(x_train: np.ndarray) -> dict[str, tuple[float, ...]]:
    """The training set's per-channel mean and deviation (1 where it is 0), as :class:`ImageData` keeps them."""
    mean = x_train.mean(axis=(0, 2, 3))
    std = x_train.std(axis=(0, 2, 3))
    std = np.where(std > 0, std, 1.0)
    return {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std)}


def _normalise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation with the training set's mean and deviation."""
    stats = _statistics(x_train)
    mean = np.asarray(stats["mean"]).reshape(1, -1, 1, 1)
    std = np.asarray(stats["std"]).reshape(1, -1, 1, 1)
    as_tensor = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))  # noqa: E731
    return as_tensor(x_train), as_tensor(x_test)


@functools.lru_cache(maxsize=4)
def _digits(split_seed: int, test_fraction: float) -> ImageData:
    """scikit-learn's bundled digits (1,797 8x8 grey images, 10 classes), split with ``split_seed``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)[:, None]  # (N, 1, 8, 8), values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(split_seed).permutation(len(labels))
    n_test = max(1, round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    x_train, x_test = _normalise(images[train], images[test])
    return ImageData(
        x_train=x_train,
        y_train=torch.from_numpy(labels[train]),
        x_test=x_test,
        y_test=torch.from_numpy(labels[test]),
        num_classes=int(labels.max()) + 1,
        source={"data": "digits", "split_seed": split_seed, "test_fraction": test_fraction},
        **_statistics(images[train]),
    )


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_LOCK = threading.Lock()
_NPZ_CACHE: dict[tuple[str, int, int], ImageData] = {}


def _npz_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim >= 1 and x.shape[0] == 0:
        raise InvalidConfigError(f"{path}: {key} is empty (no images)")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0 or min(x.shape[2:]) < 1:
        raise InvalidConfigError(
            f"{path}: {key} must be images NCHW (C 1 or 3) or NHW, got shape {tuple(x.shape)}"
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InvalidConfigError(f"{path}: {key} must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise InvalidConfigError(f"{path}: {key} has NaN or infinite values")
    return x


def _npz_labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise InvalidConfigError(
            f"{path}: {key} must be {n} labels (one per image), got shape {tuple(y.shape)}"
        )
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise InvalidConfigError(f"{path}: {key} must be integer class labels, got dtype {y.dtype}")
    if not np.isfinite(y).all() or (y != np.round(y)).any() or (y < 0).any():
        raise InvalidConfigError(f"{path}: {key} must be integer class labels >= 0")
    return y.astype(np.int64)


def _load_npz(path: Path) -> ImageData:
    """A user's ``.npz`` with ``x_train, y_train, x_test, y_test`` (read once per file version)."""
    if not path.is_file():
        raise DataNotFoundError(f"training data file {path} not found")
    stamp = file_stamp(path)
    with _NPZ_LOCK:
        cached = _NPZ_CACHE.get(stamp)
    if cached is not None:
        return cached
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in _NPZ_KEYS if k not in archive.files]
            if missing:
                raise InvalidConfigError(
                    f"{path} lacks array(s) {', '.join(missing)}; a training .npz holds {', '.join(_NPZ_KEYS)}"
                )
            arrays = {k: np.asarray(archive[k]) for k in _NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidConfigError(f"cannot read {path} as an .npz file: {reason}") from None
    x_train = _npz_images(path, "x_train", arrays["x_train"])
    x_test = _npz_images(path, "x_test", arrays["x_test"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InvalidConfigError(
            f"{path}: x_train images are {x_train.shape[1:]} (CHW) but x_test images are {x_test.shape[1:]}"
        )
    y_train = _npz_labels(path, "y_train", arrays["y_train"], len(x_train))
    y_test = _npz_labels(path, "y_test", arrays["y_test"], len(x_test))
    xt, xv = _normalise(x_train, x_test)
    data = ImageData(
        x_train=xt,
        y_train=torch.from_numpy(y_train),
        x_test=xv,
        y_test=torch.from_numpy(y_test),
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
        source={"data": "npz", "sha256": file_sha256(path)},
        **_statistics(x_train),
    )
    with _NPZ_LOCK:
        _NPZ_CACHE[stamp] = data
    return data


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, bytes and numbers, and numpy arrays made of them; refuses any other
    class (a CIFAR batch holds nothing else, and a crafted file cannot run code)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("codecs", "encode"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _PlainUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise InvalidConfigError(f"cannot read {path} as a CIFAR python batch: {exc}") from None
    if not isinstance(batch, dict):
        raise InvalidConfigError(f"{path} is not a CIFAR python batch (no dict inside)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise InvalidConfigError(f"{path} is not a CIFAR python batch: it lacks 'data' or '{label_key}'")
    x = np.asarray(batch["data"])
    y = np.asarray(batch[label_key])
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y) or len(x) == 0:
        raise InvalidConfigError(f"{path}: CIFAR data must be N x 3072 with N labels, got {x.shape} and "
                                 f"{len(y)} labels")
    return x.reshape(-1, 3, 32, 32).astype(np.float64), y.astype(np.int64)


def _load_cifar(kind: str, folder: Path) -> ImageData:
    """CIFAR-10 or CIFAR-100 from its python batch files in ``folder``."""
    if not folder.is_dir():
        raise DataNotFoundError(f"{kind} folder {folder} not found")
    if kind == "cifar10":
        train_files, test_files, label_key, classes = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], \
            "labels", 10
    else:
        train_files, test_files, label_key, classes = ["train"], ["test"], "fine_labels", 100
    missing = [n for n in train_files + test_files if not (folder / n).is_file()]
    if missing:
        raise DataNotFoundError(f"{folder} lacks the {kind} python batch file(s) {', '.join(missing)}")
    parts = {split: [_cifar_batch(folder / n, label_key) for n in names]
             for split, names in (("train", train_files), ("test", test_files))}
    x_train = np.concatenate([x for x, _ in parts["train"]])
    y_train = np.concatenate([y for _, y in parts["train"]])
    x_test = np.concatenate([x for x, _ in parts["test"]])
    y_test = np.concatenate([y for _, y in parts["test"]])
    for name, y in (("train", y_train), ("test", y_test)):
        if y.min() < 0 or y.max() >= classes:
            raise InvalidConfigError(f"{folder}: {kind} {name} labels must be in 0..{classes - 1}, got "
                                     f"{y.min()}..{y.max()}")
    xt, xv = _normalise(x_train, x_test)
    digest = file_sha256(folder / test_files[0])
    return ImageData(x_train=xt, y_train=torch.from_numpy(y_train), x_test=xv, y_test=torch.from_numpy(y_test),
                     num_classes=classes, source={"data": kind, "test_sha256": digest}, **_statistics(x_train))


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _read_class_folders(root: Path, classes: Sequence[str] | None) -> tuple[list[Path], list[int], list[str]]:
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")) \
        if classes is None else list(classes)
    if not names:
        raise InvalidConfigError(f"{root} holds no class subfolders (imagefolder: one subfolder per class)")
    paths, labels = [], []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            raise InvalidConfigError(f"{root} lacks the class folder {name!r} that the training split has")
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in _IMAGE_SUFFIXES:
                paths.append(f)
                labels.append(label)
    if not paths:
        raise InvalidConfigError(f"{root} holds no images ({', '.join(_IMAGE_SUFFIXES)}) in its class folders")
    return paths, labels, names


def _read_images(paths: Sequence[Path], size: tuple[int, int] | None, mode: str | None) -> tuple[np.ndarray, tuple[int, int], str]:
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                if mode is None:
                    mode = "L" if im.mode in ("L", "1", "I;16", "I") else "RGB"
                im = im.convert(mode)
                if size is None:
                    size = (im.height, im.width)
                if (im.height, im.width) != size:
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float64)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise InvalidConfigError(f"cannot read image {p}: {exc}") from None
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(arrays), size, mode


def _load_imagefolder(folder: Path, split_seed: int, test_fraction: float) -> ImageData:
    if not folder.is_dir():
        raise DataNotFoundError(f"image folder {folder} not found")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        train_paths, train_labels, names = _read_class_folders(folder / "train", None)
        test_paths, test_labels, _ = _read_class_folders(folder / "test", names)
        split = {"split": "folders"}
    else:
        paths, labels, names = _read_class_folders(folder, None)
        order = np.random.default_rng(split_seed).permutation(len(paths))
        n_test = max(1, round(test_fraction * len(paths)))
        if n_test >= len(paths):
            raise InvalidConfigError(f"{folder}: {len(paths)} image(s) leave no training split")
        test_paths = [paths[i] for i in order[:n_test]]
        test_labels = [labels[i] for i in order[:n_test]]
        train_paths = [paths[i] for i in order[n_test:]]
        train_labels = [labels[i] for i in order[n_test:]]
        split = {"split_seed": split_seed, "test_fraction": test_fraction}
    x_train, size, mode = _read_images(train_paths, None, None)
    x_test, _, _ = _read_images(test_paths, size, mode)
    xt, xv = _normalise(x_train, x_test)
    listing = "\n".join(f"{p.relative_to(folder)} {p.stat().st_size}" for p in [*train_paths, *test_paths])
    return ImageData(x_train=xt, y_train=torch.tensor(train_labels, dtype=torch.int64), x_test=xv,
                     y_test=torch.tensor(test_labels, dtype=torch.int64), num_classes=len(names),
                     source={"data": "imagefolder", "classes": names, **split,
                             "listing_sha256": hashlib.sha256(listing.encode()).hexdigest()},
                     **_statistics(x_train))


_SOURCE_CACHE: dict[tuple, ImageData] = {}


def _folder_stamp(path: Path) -> tuple:
    """Changes when a file of the folder, or of a folder in it, is added, removed or rewritten."""
    if not path.is_dir():
        return ()
    return tuple((str(p.relative_to(path)), p.stat().st_mtime_ns, p.stat().st_size)
                 for p in sorted(path.rglob("*")) if p.is_file() or p.is_dir())


def image_data(data: Path | str | None, *, split_seed: int, test_fraction: float) -> ImageData:
    """The images of a ``data`` option (as :func:`data_option` returns it): digits split by ``split_seed``
    and ``test_fraction`` (None), an .npz (a path), or ``cifar10:DIR``, ``cifar100:DIR``,
    ``imagefolder:DIR`` (a string)."""
    if data is None:
        return _digits(split_seed, test_fraction)
    if isinstance(data, Path):
        return _load_npz(data)
    kind, _, folder = data.partition(":")
    path = Path(folder).expanduser()
    key = (kind, str(path.resolve()), split_seed, test_fraction, _folder_stamp(path))
    with _NPZ_LOCK:
        cached = _SOURCE_CACHE.get(key)
    if cached is None:
        cached = _load_cifar(kind, path) if kind in ("cifar10", "cifar100") else \
            _load_imagefolder(path, split_seed, test_fraction)
        with _NPZ_LOCK:
            _SOURCE_CACHE[key] = cached
    return cached


def data_option(evaluator: str, data: str | os.PathLike[str] | None) -> Path | str | None:
    """The ``data`` option: None for digits, the path of an .npz, or ``cifar10:DIR``, ``cifar100:DIR``,
    ``imagefolder:DIR``; read (and checked) now."""
    if data is None or (isinstance(data, str) and data == "digits"):
        return None
    if not isinstance(data, (str, os.PathLike)):
        raise InvalidConfigError(f"{evaluator}: the data must be {DATA_FORMS}, got {data!r}")
    text = str(data)
    kind, sep, folder = text.partition(":")
    if sep and kind in ("cifar10", "cifar100", "imagefolder"):
        if not folder:
            raise InvalidConfigError(f"{evaluator}: {kind}: needs a folder ({kind}:DIR)")
        spec = f"{kind}:{Path(folder).expanduser().resolve()}"
        image_data(spec, split_seed=0, test_fraction=0.25)  # fail now, not in the middle of a search
        return spec
    path = Path(text).expanduser()
    if path.is_dir() or (path.suffix != ".npz" and not path.is_file()):
        raise InvalidConfigError(f"{evaluator}: unknown data {text!r}; the data must be {DATA_FORMS}")
    _load_npz(path)  # fail now, not in the middle of a search
    return path


def to_input(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A new tensor of the images resized (bilinear) to the network's input ``shape`` (NCHW)
    and replicated to its channels (the cached data is never handed to a network)."""
    channels, height, width = shape[1], shape[2], shape[3]
    if x.shape[1] != channels and x.shape[1] != 1:
        raise InvalidConfigError(
            f"the data has {x.shape[1]}-channel images but the network takes {channels} channels"
        )
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    else:
        x = x.clone()
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1)
    return x.contiguous()


def check_classes(data: ImageData, space: ArchSpace) -> None:
    """Raise :class:`InvalidConfigError` if the network has fewer outputs than the data has classes."""
    if data.num_classes > space.num_classes:
        raise InvalidConfigError(
            f"the data has {data.num_classes} classes but the {space.name} network has {space.num_classes} "
            f"outputs; build the space with num_classes >= {data.num_classes}"
        )
