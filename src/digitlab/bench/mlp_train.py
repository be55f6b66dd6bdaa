"""``mlp-train``: one training epoch of the same MLP in NumPy and in PyTorch.

Same sizes (784-256-128-10, no dropout so both sides do the same arithmetic), same initial weights
(the NumPy initialiser, copied into PyTorch), same batch order (one seeded permutation of all 60,000
training images), same optimiser (SGD, momentum 0.9, lr 0.05), float32, two threads. Each side runs in
its own process; the matmul peak is measured by a third.
"""

from __future__ import annotations

import time

import numpy as np

from digitlab.bench.harness import THREADS, Side, alternate, blas_info, median_of, median_ratio

description = "one MLP training epoch (784-256-128-10, 60k images, batch 128) in NumPy vs PyTorch"
HIDDEN, BATCH, LR, MOMENTUM, SEED = (256, 128), 128, 0.05, 0.9, 0
WARMUP_BATCHES = 3


def _setup():
    from digitlab.data import load_mnist, to_float
    from digitlab.models import build, mlp_spec

    data = load_mnist("train+val")
    x = to_float(data.images).reshape(len(data.labels), -1)
    order = np.random.default_rng(SEED).permutation(len(x))
    spec = mlp_spec(HIDDEN, dropout=0.0)
    return x, data.labels, order, spec, build(spec, seed=SEED)


def flops_per_epoch(n: int, widths=(784, *HIDDEN, 10)) -> tuple[float, float]:
    """(executed, conventional) FLOPs: a matmul of (m,k)@(k,n) is 2mkn; forward, dW and dX each cost one
    per layer, but the first layer needs no dX (the input is data). Conventional: 6 * weights * images."""
    macs = [a * b for a, b in zip(widths[:-1], widths[1:], strict=True)]
    return float(n * (6 * sum(macs) - 2 * macs[0])), float(6 * sum(macs) * n)


def numpy_epoch() -> dict:
    from digitlab.nn import SGD, SoftmaxCrossEntropy

    x, y, order, _, model = _setup()
    loss, opt = SoftmaxCrossEntropy(), SGD(model, lr=LR, momentum=MOMENTUM)
    for b in range(WARMUP_BATCHES):  # warm caches and BLAS; no step, so weights are untouched
        idx = order[b * BATCH:(b + 1) * BATCH]
        loss.forward(model.forward(x[idx], True), y[idx])
        model.backward(loss.backward(), input_grad=False)
    t0 = time.perf_counter()
    total = 0.0
    for b in range(0, len(x), BATCH):
        idx = order[b:b + BATCH]
        total += loss.forward(model.forward(x[idx], True), y[idx]) * len(idx)
        model.backward(loss.backward(), input_grad=False)
        opt.step()
    seconds = time.perf_counter() - t0
    return {"epoch_s": seconds, "mean_loss": total / len(x), "blas": blas_info()}


def torch_epoch() -> dict:
    import torch
    import torch.nn.functional as F

    from digitlab.torch import build_module, numpy_to_torch

    torch.set_num_threads(THREADS)
    x, y, order, spec, model = _setup()
    module = numpy_to_torch(model, build_module(spec))
    xt, yt, ot = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(order)
    opt = torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM)
    for b in range(WARMUP_BATCHES):
        idx = ot[b * BATCH:(b + 1) * BATCH]
        F.cross_entropy(module(xt[idx]), yt[idx]).backward()
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    total = 0.0
    for b in range(0, len(x), BATCH):
        idx = ot[b:b + BATCH]
        opt.zero_grad(set_to_none=True)
        value = F.cross_entropy(module(xt[idx]), yt[idx])
        value.backward()
        opt.step()
        total += value.item() * len(idx)
    seconds = time.perf_counter() - t0
    return {"epoch_s": seconds, "mean_loss": total / len(x), "torch": torch.__version__}


def matmul_peak(side: str, size: int = 2048, repeats: int = 7) -> dict:
    """Best float32 GFLOP/s of a square matmul (the machine's practical peak for this library)."""
    if side == "peak_torch":
        import torch

        torch.set_num_threads(THREADS)
        a = torch.rand(size, size)
        mm = lambda: a @ a  # noqa: E731
    else:
        a = np.random.default_rng(0).random((size, size), dtype=np.float32)
        mm = lambda: a @ a  # noqa: E731
    mm()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm()
        best = min(best, time.perf_counter() - t0)
    return {"gflops": 2 * size ** 3 / best / 1e9}


def worker(side: str, args: list[str]) -> dict:
    if side == "numpy":
        return numpy_epoch()
    if side == "torch":
        return torch_epoch()
    return matmul_peak(side)


def run(pairs: int = 5, log=lambda s: None) -> dict:
    from digitlab.bench.harness import run_worker

    sides = [Side("numpy", "numpy"), Side("torch", "torch"), Side("numpy_native", "numpy", native_blas=True)]
    res = alternate("mlp-train", sides, pairs, log=log)
    peak_np = run_worker("mlp-train", "peak_numpy")["gflops"]
    peak_np_native = run_worker("mlp-train", "peak_numpy", native_blas=True)["gflops"]
    peak_torch = run_worker("mlp-train", "peak_torch")["gflops"]
    executed, conventional = flops_per_epoch(60000)
    out = {
        "benchmark": "mlp-train", "pairs": pairs, "threads": THREADS, "batch_size": BATCH,
        "numpy_epoch_s": median_of(res["numpy"], "epoch_s"),
        "torch_epoch_s": median_of(res["torch"], "epoch_s"),
        "numpy_native_blas_epoch_s": median_of(res["numpy_native"], "epoch_s"),
        "ratio_numpy_over_torch": median_ratio(res["numpy"], res["torch"], "epoch_s"),
        "ratio_numpy_native_blas_over_torch": median_ratio(res["numpy_native"], res["torch"], "epoch_s"),
        "numpy_mean_loss": median_of(res["numpy"], "mean_loss"),
        "torch_mean_loss": median_of(res["torch"], "mean_loss"),
        "gflop_per_epoch": executed / 1e9, "gflop_per_epoch_6np": conventional / 1e9,
        "matmul_peak_gflops_numpy": peak_np, "matmul_peak_gflops_numpy_native_blas": peak_np_native,
        "matmul_peak_gflops_torch": peak_torch,
        "blas": res["numpy"][0]["blas"], "blas_native": res["numpy_native"][0]["blas"],
        "torch_version": res["torch"][0]["torch"],
    }
    out["numpy_gflops"] = executed / 1e9 / out["numpy_epoch_s"]
    out["torch_gflops"] = executed / 1e9 / out["torch_epoch_s"]
    out["numpy_fraction_of_peak"] = out["numpy_gflops"] / peak_np
    return out


def format(r: dict) -> str:
    blas = r["blas"][0] if r["blas"] else {}
    return "\n".join([
        f"mlp-train: one epoch, 60k images, batch {r['batch_size']}, {r['threads']} threads, {r['pairs']} pairs",
        f"  NumPy   {r['numpy_epoch_s']:.3f} s  ({r['numpy_gflops']:.0f} GFLOP/s, "
        f"{100 * r['numpy_fraction_of_peak']:.0f}% of its matmul peak {r['matmul_peak_gflops_numpy']:.0f})"
        f"  BLAS {blas.get('internal_api')} {blas.get('version')} kernel {blas.get('architecture')}",
        f"  PyTorch {r['torch_epoch_s']:.3f} s  ({r['torch_gflops']:.0f} GFLOP/s, matmul peak "
        f"{r['matmul_peak_gflops_torch']:.0f})",
        f"  ratio NumPy/PyTorch {r['ratio_numpy_over_torch']:.2f}x (median of per-pair ratios)",
        f"  NumPy with OpenBLAS's own kernel choice: {r['numpy_native_blas_epoch_s']:.3f} s, ratio "
        f"{r['ratio_numpy_native_blas_over_torch']:.2f}x (peak {r['matmul_peak_gflops_numpy_native_blas']:.0f})",
        f"  work: {r['gflop_per_epoch']:.1f} GFLOP executed ({r['gflop_per_epoch_6np']:.1f} by 6*N*weights); "
        f"mean loss NumPy {r['numpy_mean_loss']:.4f} vs PyTorch {r['torch_mean_loss']:.4f}",
    ])
