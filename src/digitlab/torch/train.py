"""The PyTorch training loop behind ``digitlab train --backend torch``: any device, mixed precision,
``torch.compile``, and data-parallel training over several processes.

What it keeps from the NumPy loop (`digitlab.nn.fit`), so the two backends are interchangeable:
the same architecture spec and initial weights (the NumPy initialiser, copied in), the same batch
order in a single process (``default_rng([seed, epoch])``), the same learning-rate schedules
(`digitlab.nn.schedules`, applied per step), the same `History`/`EpochLog`, the best model saved by
validation accuracy in the NumPy ``.npz`` format, and the same divergence stop.

Data: MNIST is 47 MB as uint8, so the whole training set lives on the device and every batch is
one gather there (plus augmentation with ``grid_sample``): no host-to-device copy per step, nothing
for a loader process to keep up with.

Several processes (``torchrun``): gloo on CPU, NCCL on CUDA; a `DistributedSampler` gives each rank
its share of a seeded permutation, `DistributedDataParallel` averages the gradients, ``--batch-size``
stays the *global* batch (each rank takes ``batch / world``), metrics are summed over ranks, BatchNorm
running statistics are averaged over ranks at the end of each epoch (so every rank evaluates, and
ends with, the same model), and only rank 0 writes files or prints.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from digitlab.data.augment import Augment
from digitlab.errors import DigitlabError, TrainingDiverged
from digitlab.models import build
from digitlab.nn.schedules import make_schedule
from digitlab.nn.train import EpochLog, History, _progress
from digitlab.torch.augment import DeviceAugment
from digitlab.torch.checkpoint import load_safetensors, save_safetensors
from digitlab.torch.twin import build_module, numpy_to_torch, torch_to_numpy

DEVICES = ("auto", "cpu", "cuda", "mps")
RESUME_FORMAT = "digitlab-torch-resume"
DIGEST_ENV = "DIGITLAB_RANK_DIGESTS"  # test hook: rank 0 writes every rank's weight digest there (JSON)


@dataclass
class TorchTrainConfig:
    """Hyper-parameters of a PyTorch run; the names and meanings of ``digitlab train``'s options."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    schedule: str = "cosine"
    warmup: float = 0.5
    seed: int = 0
    augment: bool = False
    amp: bool = False
    compile: bool = False
    ema: float = 0.0
    label_smoothing: float = 0.0
    progress: bool = False
    explode_factor: float = 50.0
    eval_batch: int = 1000
    check_every: int = 50  # steps between divergence checks (each check waits for the device)


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a ``torchrun`` job (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


# -- devices and processes -------------------------------------------------------------------------
def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; an explicit device that is not there is a
    one-line error that names the alternative."""
    name = name or "auto"
    if name not in DEVICES:
        raise DigitlabError(f"unknown --device {name!r}; choose one of {', '.join(DEVICES)}")
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            build = f"this PyTorch {torch.__version__} is a CPU-only build" if torch.version.cuda is None \
                else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)"
            raise DigitlabError(f"--device cuda: PyTorch sees no CUDA GPU ({build}); use --device cpu "
                                f"(or --device auto)")
        if local_rank >= torch.cuda.device_count():
            raise DigitlabError(f"process {local_rank} of this machine has no GPU of its own: "
                                f"{torch.cuda.device_count()} visible; use --nproc_per_node "
                                f"{torch.cuda.device_count()} or fewer")
        return torch.device("cuda", local_rank)
    if name == "mps" and not has_mps:
        raise DigitlabError("--device mps: PyTorch sees no Apple GPU (MPS); use --device cpu (or --device auto)")
    return torch.device(name)


def check_amp(amp: bool, device: torch.device) -> None:
    if amp and device.type != "cuda":
        raise DigitlabError(f"--amp is mixed precision on CUDA and this run is on {device.type}; drop --amp "
                            f"(or run on a CUDA GPU with --device cuda)")


def distributed_from_env() -> Dist:
    """The rank, world size and local rank that ``torchrun`` puts in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(dist: Dist, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo between CPU processes."""
    if not dist.enabled:
        return
    if device.type == "mps":
        raise DigitlabError("several processes on Apple's MPS are not supported by PyTorch; use --device cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10),
                                  **({"device_id": device} if device.type == "cuda" else {}))


def close_distributed(dist: Dist) -> None:
    """Leave the process group together: a rank that tore gloo down while rank 0 was still evaluating and
    saving was seen to abort at exit ("terminate called without an active exception", 1 run in ~10 of
    the two-process test under load), so every rank first waits at a barrier."""
    if dist.enabled and torch_dist.is_initialized():
        try:
            torch_dist.barrier()
        except RuntimeError:  # a peer is gone (it failed, torchrun is stopping us): nothing to wait for
            pass
        torch_dist.destroy_process_group()


def _sum_over_ranks(values: list[float | torch.Tensor], dist: Dist, device: torch.device) -> list[float]:
    if not dist.enabled:
        return [float(v) for v in values]
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    return t.tolist()


def _seed(*parts: int) -> int:
    """A 63-bit seed from a tuple (NumPy's SeedSequence: different tuples give unrelated streams)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def weights_digest(state: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names and float32 bytes of a NumPy state dict: equal iff the weights are."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(np.ascontiguousarray(state[key], dtype=np.float32).tobytes())
    return h.hexdigest()


# -- data ------------------------------------------------------------------------------------------
def images_to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, 1, H, W)`` images to a uint8 ``(N, 1, H, W)`` tensor on ``device``."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DigitlabError(f"the PyTorch backend trains on uint8 images (as read from IDX files), not {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    return torch.from_numpy(np.ascontiguousarray(images)).to(device)


def to_float(xb: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], the same arithmetic as `digitlab.data.to_float`."""
    return xb.to(torch.float32).mul_(1 / 255)


class _Indices(torch.utils.data.Dataset):
    """What `DistributedSampler` needs to know of the data: its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class DeviceLoader:
    """Training batches ``(float images, labels)`` gathered on the device from uint8 images kept there.

    One process: the NumPy backend's order, ``default_rng([seed, epoch]).permutation(n)``. Several: a
    `DistributedSampler` (seeded, reshuffled each epoch, padded so every rank takes the same number of
    steps) and ``batch_size / world`` images per rank and step. Augmentation parameters come from a CPU
    generator seeded with ``(seed, epoch, rank)``, so a resumed run sees the same distortions.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int, dist: Dist,
                 augment: DeviceAugment | None = None) -> None:
        if batch_size % dist.world:
            raise DigitlabError(f"--batch-size {batch_size} is the global batch and must split evenly over "
                                f"{dist.world} processes; use a multiple of {dist.world}")
        self.images, self.labels, self.seed, self.dist, self.augment = images, labels, seed, dist, augment
        self.batch = batch_size // dist.world
        self.sampler = DistributedSampler(_Indices(len(labels)), dist.world, dist.rank, shuffle=True, seed=seed) \
            if dist.enabled else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
            idx = np.fromiter(iter(self.sampler), np.int64)
        else:
            idx = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))
        return torch.from_numpy(idx).to(self.images.device)

    def __len__(self) -> int:
        per_rank = math.ceil(len(self.labels) / self.dist.world) if self.sampler is not None else len(self.labels)
        return math.ceil(per_rank / self.batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        gen = torch.Generator().manual_seed(_seed(self.seed, self.epoch, self.dist.rank, 1 << 20))
        for b in range(len(self)):
            idx = order[b * self.batch:(b + 1) * self.batch]
            xb = to_float(self.images[idx])
            if self.augment is not None:
                xb = self.augment(xb, gen)
            yield xb, self.labels[idx]


# -- the trainer -----------------------------------------------------------------------------------
class Trainer:
    """One PyTorch training run of a digitlab architecture spec (see the module docstring)."""

    def __init__(self, spec: dict[str, Any], cfg: TorchTrainConfig, x_train: np.ndarray, y_train: np.ndarray,
                 x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, *,
                 device: torch.device | None = None, dist: Dist | None = None) -> None:
        if len(x_train) != len(y_train):
            raise DigitlabError(f"{len(x_train)} training inputs but {len(y_train)} labels")
        if len(x_train) == 0:
            raise DigitlabError("no training data")
        self.spec, self.cfg = spec, cfg
        self.dist = dist or Dist()
        self.device = device or resolve_device("auto")
        check_amp(cfg.amp, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        # the NumPy model: the initial weights (same as the NumPy backend) and the checkpoint container
        self.model = build(spec, seed=cfg.seed)
        self.module = numpy_to_torch(self.model, build_module(spec)).to(self.device)
        self.net: torch.nn.Module = self.module
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # buffers (BatchNorm statistics) stay per rank during the epoch and are averaged after it
            no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters \
                else {"broadcast_buffers": False}
            self.net = DDP(self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                           **no_sync)
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.ema: torch.nn.Module | None = None
        self.ema_steps = 0
        if cfg.ema:
            if not 0 < cfg.ema < 1:
                raise DigitlabError(f"--ema is a decay in (0, 1) such as 0.999, got {cfg.ema}")
            self.ema = copy.deepcopy(self.module).requires_grad_(False)
            live, avg = self.module.state_dict(), self.ema.state_dict()
            self._ema_float = ([avg[k] for k in avg if avg[k].is_floating_point()],
                               [live[k] for k in avg if avg[k].is_floating_point()])
            self._ema_other = [(avg[k], live[k]) for k in avg if not avg[k].is_floating_point()]
        self.x_train = images_to_device(x_train, self.device)
        self.y_train = torch.as_tensor(np.asarray(y_train), dtype=torch.int64, device=self.device)
        self.x_val = images_to_device(x_val, self.device) if x_val is not None and len(x_val) else None
        self.y_val = torch.as_tensor(np.asarray(y_val), dtype=torch.int64, device=self.device) \
            if self.x_val is not None else None
        augment = DeviceAugment(Augment()) if cfg.augment else None
        self.loader = DeviceLoader(self.x_train, self.y_train, cfg.batch_size, cfg.seed, self.dist, augment)
        self.steps_per_epoch = len(self.loader)
        self.schedule = make_schedule(cfg.schedule, cfg.epochs * self.steps_per_epoch, self.steps_per_epoch,
                                      cfg.warmup)
        params = list(self.module.parameters())
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                       nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":  # the NumPy backend's Adam(decoupled=True) is AdamW
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            raise DigitlabError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adam")
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        # float16 needs loss scaling against underflowing gradients; bfloat16 has float32's range
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and not bf16)
        self.first_loss: float | None = None
        self.sum_dtype = torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64

    # -- one epoch ------------------------------------------------------------------------------
    @property
    def eval_module(self) -> torch.nn.Module:
        """What is evaluated and saved: the weight average with ``--ema``, else the live weights."""
        return self.ema if self.ema is not None else self.module

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.cfg.amp)

    @torch.no_grad()
    def _ema_update(self) -> None:
        self.ema_steps += 1
        decay = min(self.cfg.ema, (1 + self.ema_steps) / (10 + self.ema_steps))  # short memory at the start
        torch._foreach_lerp_(self._ema_float[0], self._ema_float[1], 1 - decay)
        for avg, live in self._ema_other:
            avg.copy_(live)

    def _check(self, loss: torch.Tensor, epoch: int, b: int, lr: float) -> None:
        """Stop on a NaN/inf or exploding loss; in a job every rank sees the same (summed) value, so all
        stop together instead of one rank waiting forever for the others."""
        value = _sum_over_ranks([loss.float()], self.dist, self.device)[0] / self.dist.world
        if self.first_loss is None:
            self.first_loss = value
        if not math.isfinite(value) or value > self.cfg.explode_factor * max(self.first_loss, 1e-3):
            raise TrainingDiverged(
                f"the loss became {value:.4g} at epoch {epoch + 1}, batch {b + 1} (it started at "
                f"{self.first_loss:.4g}) with learning rate {lr:.3g}: the learning rate is too high for this "
                f"model; try {self.cfg.lr / 10:.3g} (or add warm-up). Checkpoints saved so far are kept.")

    def train_epoch(self, epoch: int, bar=None) -> tuple[float, float, float]:
        """One pass over the training data: (mean loss, accuracy, last learning rate), over all ranks."""
        cfg = self.cfg
        self.module.train()
        torch.manual_seed(_seed(cfg.seed, epoch, self.dist.rank))  # dropout masks: reproducible, resumable
        self.loader.set_epoch(epoch)
        steps = self.steps_per_epoch
        loss_sum = torch.zeros((), dtype=self.sum_dtype, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        count, lr = 0, cfg.lr
        for b, (xb, yb) in enumerate(self.loader):
            lr = cfg.lr * self.schedule(epoch * steps + b)
            for group in self.opt.param_groups:
                group["lr"] = lr
            with self._autocast():
                logits = self.net(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            if self.ema is not None:
                self._ema_update()
            value = loss.detach()
            loss_sum += value * len(yb)
            correct += (logits.detach().argmax(dim=1) == yb).sum()
            count += len(yb)
            if self.first_loss is None or b % cfg.check_every == 0 or b == steps - 1:
                self._check(value, epoch, b, lr)
                if bar is not None:
                    bar.set_postfix(loss=f"{value.item():.4f}", lr=f"{lr:.3g}", refresh=False)
            if bar is not None:
                bar.update(1)
        total, right, n = _sum_over_ranks([loss_sum, correct, count], self.dist, self.device)
        self._average_buffers()
        return total / n, right / n, lr

    def _average_buffers(self) -> None:
        """Average BatchNorm running statistics over ranks (each rank saw different batches)."""
        if not self.dist.enabled:
            return
        for module in {id(m): m for m in (self.module, self.eval_module)}.values():
            for buf in module.buffers():
                if buf.is_floating_point():
                    torch_dist.all_reduce(buf, op=torch_dist.ReduceOp.SUM)
                    buf.div_(self.dist.world)

    @torch.inference_mode()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, module: torch.nn.Module | None = None,
                 shard: bool = True) -> tuple[float, float]:
        """(mean loss, accuracy) in eval mode; with ``shard`` each rank takes every world-th image and the
        sums are combined, so a job evaluates each image once."""
        module = module if module is not None else self.eval_module
        module.eval()
        if shard and self.dist.enabled:
            images, labels = images[self.dist.rank::self.dist.world], labels[self.dist.rank::self.dist.world]
        total = torch.zeros((), dtype=self.sum_dtype, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for i in range(0, len(labels), self.cfg.eval_batch):
            yb = labels[i:i + self.cfg.eval_batch]
            with self._autocast():
                logits = module(to_float(images[i:i + self.cfg.eval_batch])).float()
            total += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(dim=1) == yb).sum()
        sums = _sum_over_ranks([total, correct, len(labels)], self.dist, self.device) if shard \
            else [total.item(), correct.item(), len(labels)]
        return (sums[0] / sums[2], sums[1] / sums[2]) if sums[2] else (float("nan"), float("nan"))

    # -- the run --------------------------------------------------------------------------------
    def numpy_model(self):
        """The NumPy model (with its meta) holding the current weights (the average with ``--ema``)."""
        return torch_to_numpy(self.eval_module, self.model)

    def fit(self, checkpoint: str | Path | None = None, resume_path: str | Path | None = None,
            resume: bool = False, on_epoch: Callable[[EpochLog], None] | None = None) -> History:
        """Train for ``cfg.epochs`` and return the `History`, as `digitlab.nn.fit` does: the best model by
        validation accuracy goes to ``checkpoint`` (NumPy ``.npz``), the full state after every epoch to
        ``resume_path`` (safetensors); both by rank 0 only."""
        history, start = History(), 0
        if resume and resume_path is not None and Path(resume_path).is_file():
            start, history = self.restore(resume_path)
        for epoch in range(start, self.cfg.epochs):
            t0 = time.perf_counter()
            bar = _progress(self.steps_per_epoch, f"epoch {epoch + 1}/{self.cfg.epochs}",
                            self.cfg.progress and self.dist.main)
            try:
                train_loss, train_acc, lr = self.train_epoch(epoch, bar)
            finally:
                if bar is not None:
                    bar.close()
            val_loss = val_acc = None
            if self.x_val is not None:
                val_loss, val_acc = self.evaluate(self.x_val, self.y_val)
            log = EpochLog(epoch + 1, train_loss, train_acc, val_loss, val_acc, lr, time.perf_counter() - t0)
            history.epochs.append(log)
            improved = val_acc is None or history.best_val_accuracy is None or val_acc >= history.best_val_accuracy
            if improved:
                history.best_val_accuracy, history.best_epoch = val_acc, epoch + 1
                if checkpoint is not None and self.dist.main:
                    model = self.numpy_model()
                    model.meta["epoch"] = epoch + 1
                    model.save(checkpoint)
            if resume_path is not None and self.dist.main:
                self.snapshot(resume_path, epoch + 1, history)
            if on_epoch is not None and self.dist.main:
                on_epoch(log)
        return history

    def snapshot(self, path: str | Path, epochs_done: int, history: History) -> None:
        """Everything a resumed run needs, as safetensors: weights, EMA, optimiser and loss-scaler state."""
        tensors = {f"model/{k}": v for k, v in self.module.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema/{k}": v for k, v in self.ema.state_dict().items()})
        opt = self.opt.state_dict()
        for i, state in opt["state"].items():
            tensors.update({f"opt/{i}/{k}": torch.as_tensor(v) for k, v in state.items() if v is not None})
        save_safetensors(path, tensors, {
            "format": RESUME_FORMAT, "epochs_done": epochs_done, "history": history.to_json(),
            "optimizer": self.cfg.optimizer, "layers": self.spec["layers"], "first_loss": self.first_loss,
            "ema_steps": self.ema_steps, "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None})

    def restore(self, path: str | Path) -> tuple[int, History]:
        tensors, meta = load_safetensors(path)  # on the CPU: the optimiser keeps its step counters there
        if meta.get("format") != RESUME_FORMAT:
            raise DigitlabError(f"{path}: not a resume file of the PyTorch backend")
        if meta["optimizer"] != self.cfg.optimizer:
            raise DigitlabError(f"{path}: saved with optimiser {meta['optimizer']}, cannot resume with "
                                f"{self.cfg.optimizer}; use the same --optimizer or start afresh")
        if json.dumps(meta["layers"]) != json.dumps(self.spec["layers"]):
            raise DigitlabError(f"{path}: saved for another architecture; use the same --arch/--hidden or start afresh")
        if ("ema/" in "".join(tensors)) != (self.ema is not None):
            raise DigitlabError(f"{path}: saved {'with' if self.ema is None else 'without'} --ema; resume the same way")
        self.module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        if self.ema is not None:
            self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema/")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt/"):
                _, i, name = k.split("/", 2)
                state.setdefault(int(i), {})[name] = v
        self.opt.load_state_dict({"state": state, "param_groups": self.opt.state_dict()["param_groups"]})
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        self.first_loss, self.ema_steps = meta.get("first_loss"), int(meta.get("ema_steps", 0))
        return int(meta["epochs_done"]), History.from_json(meta["history"])

    def rank_digests(self) -> list[str]:
        """The weight digest of every rank (rank 0 gathers them); a job whose ranks disagree is a bug."""
        mine = weights_digest(self.numpy_model().state_dict())
        if not self.dist.enabled:
            return [mine]
        local = torch.tensor(list(bytes.fromhex(mine)), dtype=torch.uint8, device=self.device)
        gathered = [torch.empty_like(local) for _ in range(self.dist.world)]
        torch_dist.all_gather(gathered, local)
        return [bytes(t.cpu().tolist()).hex() for t in gathered]
