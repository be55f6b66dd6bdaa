"""``conv-layer``: forward+backward of single conv and pool layers at the shapes of the default CNN;
``infer``: inference of a model file on a batch of 256 digits and on one digit. NumPy and PyTorch,
each side in its own process (see `harness`)."""

from __future__ import annotations

import statistics
import time

import numpy as np

from digitlab.bench.harness import THREADS, Side, alternate, median_ratio

BATCH = 128
# (name, layer spec, input shape without batch)
CASES = [
    ("conv1 1->32 3x3 @28", {"type": "Conv2D", "in_channels": 1, "out_channels": 32, "kernel_size": [3, 3],
                             "stride": [1, 1], "padding": [0, 0], "bias": False}, (1, 28, 28)),
    ("conv2 32->32 3x3 @26", {"type": "Conv2D", "in_channels": 32, "out_channels": 32, "kernel_size": [3, 3],
                              "stride": [1, 1], "padding": [0, 0], "bias": False}, (32, 26, 26)),
    ("conv3 32->64 3x3 @12", {"type": "Conv2D", "in_channels": 32, "out_channels": 64, "kernel_size": [3, 3],
                              "stride": [1, 1], "padding": [0, 0], "bias": False}, (32, 12, 12)),
    ("conv4 64->64 3x3 @10", {"type": "Conv2D", "in_channels": 64, "out_channels": 64, "kernel_size": [3, 3],
                              "stride": [1, 1], "padding": [0, 0], "bias": False}, (64, 10, 10)),
    ("maxpool 2x2 @24x32", {"type": "MaxPool2D", "kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]},
     (32, 24, 24)),
    ("maxpool 3x3/2 @24x32", {"type": "MaxPool2D", "kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1]},
     (32, 24, 24)),
    ("avgpool 2x2 @24x32", {"type": "AvgPool2D", "kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]},
     (32, 24, 24)),
    ("batchnorm @24x32", {"type": "BatchNorm", "num_features": 32}, (32, 24, 24)),
]


def _median_ms(fn, repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _channels_last(shape, rng):
    """A channels-last array seen as NCHW: what a layer receives inside the NumPy CNN."""
    n, c, h, w = shape
    return rng.standard_normal((n, h, w, c)).astype(np.float32).transpose(0, 3, 1, 2)


def layer_worker(side: str, args: list[str]) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    if side == "numpy":
        from digitlab.nn import build_layer

        for name, spec, shape in CASES:
            layer = build_layer(spec)
            x = _channels_last((BATCH, *shape), rng)
            y = layer.forward(x, True)
            g = _channels_last(y.shape, rng)
            out[name] = _median_ms(lambda layer=layer, x=x, g=g: (layer.forward(x, True), layer.backward(g)))
        return out
    import torch

    from digitlab.torch import build_module

    torch.set_num_threads(THREADS)
    for name, spec, shape in CASES:
        mod = build_module({"layers": [spec]}).to(memory_format=torch.channels_last)
        x = torch.from_numpy(rng.standard_normal((BATCH, *shape)).astype(np.float32))
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        g = torch.ones_like(mod(x))

        def step(mod=mod, x=x, g=g):
            mod(x).backward(g)
        out[name] = _median_ms(step)
    return out


class ConvLayerBench:
    description = "forward+backward ms of single conv, pool and batch-norm layers (batch 128), NumPy vs PyTorch"
    name = "conv-layer"

    def worker(self, side: str, args: list[str]) -> dict:
        return layer_worker(side, args)

    def run(self, pairs: int = 5, log=lambda s: None, images: int | None = None) -> dict:
        res = alternate(self.name, [Side("numpy", "numpy"), Side("torch", "torch")], pairs, log=log)
        out = {"benchmark": self.name, "batch": BATCH, "threads": THREADS, "pairs": pairs, "layers": {}}
        for name, _, _ in CASES:
            out["layers"][name] = {
                "numpy_ms": statistics.median(r[name] for r in res["numpy"]),
                "torch_channels_last_ms": statistics.median(r[name] for r in res["torch"]),
                "ratio_numpy_over_torch": median_ratio(res["numpy"], res["torch"], name)}
        return out

    def format(self, r: dict) -> str:
        lines = [f"conv-layer: forward+backward, batch {r['batch']}, {r['threads']} threads, median of {r['pairs']}"
                 f" alternating pairs (PyTorch channels_last)", f"  {'layer':24s} {'NumPy ms':>9s} "
                 f"{'PyTorch ms':>11s} {'ratio':>6s}"]
        for name, v in r["layers"].items():
            lines.append(f"  {name:24s} {v['numpy_ms']:9.2f} {v['torch_channels_last_ms']:11.2f} "
                         f"{v['ratio_numpy_over_torch']:6.2f}")
        return "\n".join(lines)


def default_model_path() -> str:
    from digitlab.data.mnist import repo_root

    return str(repo_root() / "models" / "digitlab-cnn.npz")


def infer_worker(side: str, args: list[str]) -> dict:
    from digitlab.data import load_mnist, to_float
    from digitlab.nn.model import load

    path = args[0] if args else default_model_path()
    model = load(path)
    x = to_float(load_mnist("test").images[:256])
    if side == "numpy":
        batch_ms = _median_ms(lambda: model.forward(x))
        one_ms = _median_ms(lambda: model.forward(x[:1]), repeats=50)
        return {"batch256_ms": batch_ms, "single_ms": one_ms}
    import torch

    from digitlab.torch import build_module, numpy_to_torch

    torch.set_num_threads(THREADS)
    mod = numpy_to_torch(model, build_module(model.spec())).eval().to(memory_format=torch.channels_last)
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        batch_ms = _median_ms(lambda: mod(xt))
        one_ms = _median_ms(lambda: mod(xt[:1]), repeats=50)
    return {"batch256_ms": batch_ms, "single_ms": one_ms}


class InferBench:
    description = "inference of the shipped CNN on 256 digits and on 1 digit, NumPy vs PyTorch"
    name = "infer"

    def worker(self, side: str, args: list[str]) -> dict:
        return infer_worker(side, args)

    def run(self, pairs: int = 5, log=lambda s: None, images: int | None = None) -> dict:
        res = alternate(self.name, [Side("numpy", "numpy"), Side("torch", "torch")], pairs, log=log)
        out = {"benchmark": self.name, "model": default_model_path(), "threads": THREADS, "pairs": pairs}
        for side in res:
            for key in ("batch256_ms", "single_ms"):
                out[f"{side}_{key}"] = statistics.median(r[key] for r in res[side])
            out[f"{side}_batch256_images_per_s"] = 256 / out[f"{side}_batch256_ms"] * 1e3
        out["ratio_numpy_over_torch_batch256"] = median_ratio(res["numpy"], res["torch"], "batch256_ms")
        out["ratio_numpy_over_torch_single"] = median_ratio(res["numpy"], res["torch"], "single_ms")
        return out

    def format(self, r: dict) -> str:
        return "\n".join([
            f"infer: {r['model']}, {r['threads']} threads, median of {r['pairs']} alternating pairs",
            f"  NumPy   batch 256: {r['numpy_batch256_ms']:.1f} ms ({r['numpy_batch256_images_per_s']:,.0f} images/s);"
            f" one digit: {r['numpy_single_ms']:.2f} ms",
            f"  PyTorch batch 256: {r['torch_batch256_ms']:.1f} ms ({r['torch_batch256_images_per_s']:,.0f} images/s);"
            f" one digit: {r['torch_single_ms']:.2f} ms",
            f"  ratio NumPy/PyTorch: batch {r['ratio_numpy_over_torch_batch256']:.2f}x, "
            f"single {r['ratio_numpy_over_torch_single']:.2f}x",
        ])
