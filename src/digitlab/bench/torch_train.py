"""``torch-train``: one training epoch of the ``--backend torch`` trainer (`digitlab.torch.train.Trainer`,
exactly what ``digitlab train --backend torch`` runs) on the CPU, and on CUDA with and without AMP when
a GPU is there, next to the NumPy backend (`digitlab.nn.fit`) on the same architecture.

Same spec (the default CNN without dropout, so both do the same arithmetic), same initial weights,
same batch order, same optimiser (SGD, Nesterov momentum 0.9, weight decay 5e-4, constant lr 0.05),
batch 128, no augmentation, float32 (but AMP). Each side runs in its own process (see `harness`),
alternating; the CUDA sides run (after the CPU rounds) when the CPU side reports a GPU. The epoch time includes
everything the train command does in an epoch (the first batches' warm-up too), without validation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from digitlab.bench.harness import THREADS, Side, alternate, median_of, median_ratio, ratio_lines

ARCH, BATCH, LR, SEED = "cnn", 128, 0.05, 0


def _data(images: int | None):
    from digitlab.data import load_mnist

    data = load_mnist("train+val")
    n = images or len(data.labels)
    return data.images[:n], data.labels[:n]


def _spec():
    from digitlab.models import cnn_spec

    return cnn_spec(dropout=0.0)


def numpy_side(images: int | None) -> dict:
    from digitlab.data import to_float
    from digitlab.models import build
    from digitlab.nn import SGD, SoftmaxCrossEntropy, fit

    x, y = _data(images)
    model = build(_spec(), seed=SEED)
    opt = SGD(model, lr=LR, momentum=0.9, nesterov=True, weight_decay=5e-4)
    t0 = time.perf_counter()
    history = fit(model, opt, SoftmaxCrossEntropy(), to_float(x), y, epochs=1, batch_size=BATCH, seed=SEED,
                  progress=False)
    seconds = time.perf_counter() - t0
    return {"epoch_s": seconds, "images_per_s": len(y) / seconds, "mean_loss": history.epochs[0].train_loss}


def torch_side(device: str, amp: bool, images: int | None) -> dict:
    import torch

    from digitlab.torch.train import TorchTrainConfig, Trainer, resolve_device

    if device == "cpu":
        torch.set_num_threads(THREADS)
    x, y = _data(images)
    cfg = TorchTrainConfig(epochs=1, batch_size=BATCH, lr=LR, schedule="constant", seed=SEED, amp=amp)
    trainer = Trainer(_spec(), cfg, x, y, device=resolve_device(device))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss, _, _ = trainer.train_epoch(0)  # ends with a device-to-host copy of the sums: the work is done
    seconds = time.perf_counter() - t0
    name = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu"
    return {"epoch_s": seconds, "images_per_s": len(y) / seconds, "mean_loss": loss, "torch": torch.__version__,
            "device_name": name, "cuda": bool(torch.cuda.is_available())}


@dataclass
class TorchTrainBench:
    name: str = "torch-train"
    description: str = ("one epoch of the default CNN with the PyTorch trainer (CPU; CUDA with and without AMP "
                        "when present) vs the NumPy backend")
    sides_cpu: tuple[str, ...] = field(default=("numpy", "torch_cpu"))

    def worker(self, side: str, args: list[str]) -> dict:
        images = int(args[0]) if args else None
        if side == "numpy":
            return numpy_side(images)
        device = "cpu" if side == "torch_cpu" else "cuda"
        return torch_side(device, side.endswith("_amp"), images)

    def run(self, pairs: int = 5, log=lambda s: None, images: int | None = None) -> dict:
        """``images``: only that many training images (a quick check); default all 60,000."""
        args = [str(images)] if images else None
        res = alternate(self.name, [Side(s, s) for s in self.sides_cpu], pairs, args=args, log=log)
        cuda = res["torch_cpu"][0]["cuda"]
        if cuda:
            res.update(alternate(self.name, [Side(s, s) for s in ("torch_cuda", "torch_cuda_amp")], pairs,
                                 args=args, log=log))
        out: dict = {"benchmark": self.name, "arch": ARCH, "batch_size": BATCH, "pairs": pairs, "threads": THREADS,
                     "images": images or 60000, "cuda": cuda, "torch_version": res["torch_cpu"][0]["torch"]}
        for side, runs in res.items():
            out[f"{side}_epoch_s"] = median_of(runs, "epoch_s")
            out[f"{side}_images_per_s"] = median_of(runs, "images_per_s")
            out[f"{side}_mean_loss"] = median_of(runs, "mean_loss")
            if side != "numpy":
                out[f"ratio_numpy_over_{side}"] = median_ratio(res["numpy"], runs, "epoch_s")
        if cuda:
            out["cuda_device"] = res["torch_cuda"][0]["device_name"]
            out["ratio_torch_cuda_over_torch_cuda_amp"] = median_ratio(res["torch_cuda"], res["torch_cuda_amp"],
                                                                       "epoch_s")
        return out

    def format(self, r: dict) -> str:
        lines = [f"{self.name}: one training epoch of {r['arch']}, {r['images']:,} images, batch {r['batch_size']}, "
                 f"{r['threads']} CPU threads, {r['pairs']} alternating rounds; PyTorch {r['torch_version']}"
                 + (f", {r['cuda_device']}" if r.get("cuda_device") else ", no CUDA GPU")]
        labels = {"numpy": "NumPy backend (CPU)", "torch_cpu": "PyTorch backend, CPU",
                  "torch_cuda": "PyTorch backend, CUDA float32", "torch_cuda_amp": "PyTorch backend, CUDA AMP"}
        for side, label in labels.items():
            if f"{side}_epoch_s" in r:
                lines.append(f"  {label:32s} {r[side + '_epoch_s']:8.2f} s  {r[side + '_images_per_s']:10,.0f} "
                             f"images/s  mean loss {r[side + '_mean_loss']:.4f}")
        return "\n".join(lines + ratio_lines(r))
