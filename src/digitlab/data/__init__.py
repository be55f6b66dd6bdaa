"""Data: MNIST (shipped, verified), any IDX data set, and the IDX reader/writer."""

from digitlab.data.idx import read_idx, write_idx
from digitlab.data.mnist import MNIST_SHA256, Dataset, load_idx_dataset, load_mnist, to_float

__all__ = ["MNIST_SHA256", "Dataset", "load_idx_dataset", "load_mnist", "read_idx", "to_float", "write_idx"]
