"""Training-epoch benchmarks (``mlp-train``, ``cnn-train``): one epoch of the same net in NumPy and in
PyTorch, each side in its own process (see `harness`).

Same architecture (no dropout, so both sides do the same arithmetic), same initial weights (the NumPy
initialiser, copied into PyTorch), same batch order (one seeded permutation of all 60,000 training
images), same optimiser (SGD with momentum), float32, two threads. The matmul peak of the machine is
measured by separate processes in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from digitlab.bench.harness import (
    THREADS,
    Side,
    alternate,
    blas_info,
    median_of,
    median_ratio,
    ratio_lines,
    run_worker,
)

LR, MOMENTUM, SEED, WARMUP_BATCHES = 0.05, 0.9, 0, 3


def _spec(arch: str) -> dict:
    from digitlab.models import cnn_spec, mlp_spec

    return mlp_spec((256, 128), dropout=0.0) if arch == "mlp" else cnn_spec(dropout=0.0)


def _setup(arch: str, images: int | None):
    from digitlab.data import load_mnist, to_float
    from digitlab.models import build

    data = load_mnist("train+val")
    n = images or len(data.labels)
    x = to_float(data.images[:n])
    order = np.random.default_rng(SEED).permutation(n)
    spec = _spec(arch)
    return x, data.labels[:n], order, spec, build(spec, seed=SEED)


def numpy_epoch(arch: str, batch: int, images: int | None) -> dict:
    from digitlab.nn import SGD, SoftmaxCrossEntropy

    x, y, order, _, model = _setup(arch, images)
    loss, opt = SoftmaxCrossEntropy(), SGD(model, lr=LR, momentum=MOMENTUM)
    for b in range(WARMUP_BATCHES):  # warm caches, BLAS and buffers; no step, so weights are untouched
        idx = order[b * batch:(b + 1) * batch]
        loss.forward(model.forward(x[idx], True), y[idx])
        model.backward(loss.backward(), input_grad=False)
    t0 = time.perf_counter()
    total = 0.0
    for b in range(0, len(x), batch):
        idx = order[b:b + batch]
        total += loss.forward(model.forward(x[idx], True), y[idx]) * len(idx)
        model.backward(loss.backward(), input_grad=False)
        opt.step()
    return {"epoch_s": time.perf_counter() - t0, "mean_loss": total / len(x), "blas": blas_info()}


def torch_epoch(arch: str, batch: int, images: int | None, channels_last: bool = False) -> dict:
    import torch
    import torch.nn.functional as F

    from digitlab.torch import build_module, numpy_to_torch

    torch.set_num_threads(THREADS)
    x, y, order, spec, model = _setup(arch, images)
    module = numpy_to_torch(model, build_module(spec))
    xt, yt, ot = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(order)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM)
    for b in range(WARMUP_BATCHES):
        idx = ot[b * batch:(b + 1) * batch]
        F.cross_entropy(module(xt[idx]), yt[idx]).backward()
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    total = 0.0
    for b in range(0, len(x), batch):
        idx = ot[b:b + batch]
        opt.zero_grad(set_to_none=True)
        value = F.cross_entropy(module(xt[idx]), yt[idx])
        value.backward()
        opt.step()
        total += value.item() * len(idx)
    return {"epoch_s": time.perf_counter() - t0, "mean_loss": total / len(x), "torch": torch.__version__}


def matmul_peak(side: str, size: int = 2048, repeats: int = 7) -> dict:
    """Best float32 GFLOP/s of a square matmul: the machine's practical peak for that library."""
    if side == "peak_torch":
        import torch

        torch.set_num_threads(THREADS)
        a = torch.rand(size, size)
    else:
        a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return {"gflops": 2 * size ** 3 / best / 1e9}


def count_flops(arch: str, images: int) -> tuple[float, float]:
    """(executed, conventional) FLOPs of one training epoch: every conv or dense layer costs one
    multiply-add per weight use (2 FLOPs) forward, the same for dW and for dX, but the first layer needs
    no dX. Conventional: 3 x forward for every layer."""
    from digitlab.models import build

    model = build(_spec(arch))
    shape = (1, *model.input_shape)
    x = np.zeros(shape, np.float32)
    macs = []
    for layer in model.layers:
        y = layer.forward(x)
        kind = type(layer).__name__
        if kind == "Dense":
            macs.append(layer.in_features * layer.out_features)
        elif kind == "Conv2D":
            f, c, kh, kw = layer.params["W"].shape
            macs.append(y.shape[2] * y.shape[3] * f * c * kh * kw)
        x = y
    conventional = 6.0 * sum(macs) * images
    return conventional - 2.0 * macs[0] * images, conventional


@dataclass
class TrainEpochBench:
    name: str
    arch: str
    batch: int
    description: str
    torch_layouts: tuple[str, ...] = ("nchw",)

    def worker(self, side: str, args: list[str]) -> dict:
        images = int(args[0]) if args else None
        if side == "numpy":
            return numpy_epoch(self.arch, self.batch, images)
        if side.startswith("torch"):
            return torch_epoch(self.arch, self.batch, images, channels_last=side == "torch_channels_last")
        return matmul_peak(side)

    def run(self, pairs: int = 5, log=lambda s: None, images: int | None = None) -> dict:
        """``images``: train on only that many images (a quick check); default all 60,000."""
        sides = [Side("numpy", "numpy"), Side("numpy_native_blas", "numpy", native_blas=True)]
        sides += [Side("torch" if lay == "nchw" else "torch_channels_last",
                       "torch" if lay == "nchw" else "torch_channels_last") for lay in self.torch_layouts]
        res = alternate(self.name, sides, pairs, args=[str(images)] if images else None, log=log)
        peaks = {"numpy": run_worker(self.name, "peak_numpy")["gflops"],
                 "numpy_native_blas": run_worker(self.name, "peak_numpy", native_blas=True)["gflops"],
                 "torch": run_worker(self.name, "peak_torch")["gflops"]}
        n = images or 60000
        executed, conventional = count_flops(self.arch, n)
        out = {"benchmark": self.name, "arch": self.arch, "pairs": pairs, "threads": THREADS,
               "batch_size": self.batch, "images": n,
               "gflop_per_epoch": executed / 1e9, "gflop_per_epoch_conventional": conventional / 1e9}
        for side in res:
            out[f"{side}_epoch_s"] = median_of(res[side], "epoch_s")
            out[f"{side}_mean_loss"] = median_of(res[side], "mean_loss")
            out[f"{side}_gflops"] = executed / 1e9 / out[f"{side}_epoch_s"]
        for side in ("numpy", "numpy_native_blas"):
            for other in res:
                if other.startswith("torch"):
                    key = "ratio_numpy_over_" + other if side == "numpy" else f"ratio_{side}_over_{other}"
                    out[key] = median_ratio(res[side], res[other], "epoch_s")
        for lib, peak in peaks.items():
            out[f"matmul_peak_gflops_{lib}"] = peak
        out["numpy_fraction_of_peak"] = out["numpy_gflops"] / peaks["numpy"]
        out["numpy_native_blas_fraction_of_peak"] = out["numpy_native_blas_gflops"] / peaks["numpy_native_blas"]
        for side in res:
            if side.startswith("torch"):
                out[f"{side}_fraction_of_peak"] = out[f"{side}_gflops"] / peaks["torch"]
        out["blas"] = res["numpy"][0]["blas"]
        out["blas_native"] = res["numpy_native_blas"][0]["blas"]
        out["torch_version"] = next(r[0]["torch"] for s, r in res.items() if s.startswith("torch"))
        return out

    def format(self, r: dict) -> str:
        blas, native = (r["blas"] or [{}])[0], (r["blas_native"] or [{}])[0]
        lines = [f"{self.name}: one training epoch of {self.arch}, {r['images']:,} images, batch {r['batch_size']}, "
                 f"{r['threads']} threads, {r['pairs']} alternating pairs; {r['gflop_per_epoch']:.0f} GFLOP executed"]
        rows = [("numpy", f"NumPy (OpenBLAS kernel {blas.get('architecture')})", "numpy"),
                ("numpy_native_blas", f"NumPy (OpenBLAS kernel {native.get('architecture')})", "numpy_native_blas")]
        rows += [(s, f"PyTorch {r['torch_version']} {s[6:] or 'nchw'}", "torch")
                 for s in ("torch", "torch_channels_last") if f"{s}_epoch_s" in r]
        for side, label, peak in rows:
            lines.append(f"  {label:38s} {r[side + '_epoch_s']:7.2f} s  {r[side + '_gflops']:6.1f} GFLOP/s  "
                         f"(matmul peak {r['matmul_peak_gflops_' + peak]:.0f})  mean loss {r[side + '_mean_loss']:.4f}")
        return "\n".join(lines + ratio_lines(r))
