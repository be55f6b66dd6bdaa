"""Benchmarks (`digitlab bench NAME`), each side in its own process; see `harness`."""

from digitlab.bench.layers import ConvLayerBench, InferBench
from digitlab.bench.live import LiveBench
from digitlab.bench.real import RealBench
from digitlab.bench.scenes import ScenesBench
from digitlab.bench.torch_train import TorchTrainBench
from digitlab.bench.train_epoch import TrainEpochBench

BENCHMARKS = {
    "mlp-train": TrainEpochBench(
        "mlp-train", "mlp", 128, "one MLP training epoch (784-256-128-10, 60k images, batch 128), NumPy vs PyTorch"),
    "cnn-train": TrainEpochBench(
        "cnn-train", "cnn", 128, "one epoch of the default CNN (60k images, batch 128), NumPy vs PyTorch",
        torch_layouts=("nchw", "channels_last")),
    "conv-layer": ConvLayerBench(),
    "infer": InferBench(),
    "live": LiveBench(),
    "real": RealBench(),
    "scenes": ScenesBench(),
    "torch-train": TorchTrainBench(),
}
