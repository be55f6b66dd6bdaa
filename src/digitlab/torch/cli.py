"""The PyTorch side of the ``digitlab`` command: ``train --backend torch`` and ``export``.

Importing this module imports neither PyTorch nor onnx (the CLI builds its parser from it on every
start, NumPy backend included); each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from digitlab.errors import DigitlabError

TORCH_ONLY = ("device", "amp", "compile", "ema", "label_smoothing")


def _need(module: str, what: str):
    try:
        return __import__(module)
    except ImportError:
        raise DigitlabError(f"{what} needs {module}: pip install 'digitlab[torch]'") from None


# -- train --backend torch -------------------------------------------------------------------------
def add_torch_options(p: argparse.ArgumentParser) -> None:
    """``digitlab train``'s backend options (all but --backend need --backend torch)."""
    g = p.add_argument_group("PyTorch backend (pip install 'digitlab[torch]'; several processes: torchrun)")
    g.add_argument("--backend", choices=["numpy", "torch"], default="numpy",
                   help="numpy (default): the hand-written engine; torch: the same net in PyTorch")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto (default) picks cuda, then mps, then cpu")
    g.add_argument("--amp", action="store_true",
                   help="CUDA only: mixed precision (bfloat16 where the GPU has it, else float16 with loss scaling)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (the first epoch pays the compile)")
    g.add_argument("--ema", type=float, help="evaluate and save a moving average of the weights, this decay (0.999)")
    g.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (0.1)")


def reject_torch_only(args) -> None:
    """The NumPy backend has none of the PyTorch options: say so instead of ignoring them."""
    for name in TORCH_ONLY:
        if getattr(args, name, None) not in (None, False):
            raise DigitlabError(f"--{name.replace('_', '-')} needs --backend torch")


def cmd_train_torch(args) -> int:
    """``digitlab train --backend torch``: the NumPy command's data, defaults, outputs, model file, card
    and ``--json`` summary, trained by `digitlab.torch.train.Trainer`."""
    _need("torch", "--backend torch")
    import torch

    from digitlab.cli import ARCH_DEFAULTS, _load_data, _say, finish_training
    from digitlab.models import ARCHITECTURES
    from digitlab.nn.model import load
    from digitlab.torch.train import (
        DIGEST_ENV,
        TorchTrainConfig,
        Trainer,
        check_amp,
        close_distributed,
        distributed_from_env,
        images_to_device,
        init_distributed,
        resolve_device,
    )
    from digitlab.torch.twin import to_module

    if args.arch not in ARCHITECTURES:
        raise DigitlabError(f"unknown --arch {args.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if args.label_smoothing is not None and not 0 <= args.label_smoothing < 1:
        raise DigitlabError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    for key, value in ARCH_DEFAULTS[args.arch].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    dist = distributed_from_env()
    device = resolve_device(args.device, dist.local_rank)
    check_amp(args.amp, device)
    init_distributed(dist, device)
    say = (lambda text: _say(args, text)) if dist.main else (lambda text: None)
    trainer = None
    try:
        train = _load_data(args.data, "train", args.val_size)
        val = _load_data(args.data, "val", args.val_size)
        test = _load_data(args.data, "test")
        x_train, y_train = train.images, train.labels
        if args.limit:
            x_train, y_train = x_train[:args.limit], y_train[:args.limit]
        input_shape = (1, *x_train.shape[1:])
        if args.arch == "mlp":
            spec = ARCHITECTURES["mlp"](hidden=args.hidden, dropout=args.dropout, input_shape=input_shape)
        else:
            spec = ARCHITECTURES[args.arch](hidden=args.hidden[0], dropout=args.dropout, input_shape=input_shape)
        cfg = TorchTrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
            nesterov=args.nesterov, weight_decay=args.weight_decay, optimizer=args.optimizer,
            schedule=args.schedule, warmup=args.warmup, seed=args.seed, augment=args.augment, amp=args.amp,
            compile=args.compile, ema=args.ema or 0.0, label_smoothing=args.label_smoothing or 0.0,
            progress=not args.no_progress and sys.stderr.isatty())
        trainer = Trainer(spec, cfg, x_train, y_train, val.images, val.labels, device=device, dist=dist)
        model = trainer.model
        out = args.out or Path("models") / f"{args.arch}.npz"
        resume_path = out.with_name(out.stem + ".resume.safetensors")
        command = "digitlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if dist.enabled:
            command = f"torchrun --nproc_per_node={dist.world} -m {command}"
        model.meta.update({"arch": args.arch, "command": command, "seed": args.seed, "data": args.data,
                           "train_images": len(x_train), "epochs_planned": args.epochs, "augment": args.augment,
                           "backend": "torch", "torch": torch.__version__, "device": str(device.type),
                           "processes": dist.world, "amp": args.amp, "compile": args.compile,
                           "ema": args.ema, "label_smoothing": args.label_smoothing})
        where = f"PyTorch on {device.type}" + (f", {dist.world} processes" if dist.enabled else "") + \
            (", AMP" if args.amp else "") + (", compiled" if args.compile else "")
        say(f"training {args.arch} ({model.num_params():,} parameters) on {len(x_train):,} images, "
            f"{args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr} ({where})")

        def report(log) -> None:
            say(f"epoch {log.epoch:3d}  train loss {log.train_loss:.4f}  acc {log.train_accuracy:.4f}  "
                f"val loss {log.val_loss:.4f}  acc {log.val_accuracy:.4f}  lr {log.lr:.3g}  {log.seconds:.1f}s")

        t0 = time.perf_counter()
        history = trainer.fit(checkpoint=out, resume_path=resume_path, resume=args.resume, on_epoch=report)
        seconds = time.perf_counter() - t0
        digests = trainer.rank_digests()
        if not dist.main:
            return 0
        if os.environ.get(DIGEST_ENV):
            Path(os.environ[DIGEST_ENV]).write_text(json.dumps({"world": dist.world, "digests": digests}))
        if len(set(digests)) != 1:
            raise RuntimeError(f"the {dist.world} processes ended with different weights: {digests}")
        best = load(out)
        x_test = images_to_device(test.images, device)
        y_test = torch.as_tensor(test.labels, dtype=torch.int64, device=device)
        _, test_acc = trainer.evaluate(x_test, y_test, module=to_module(best).to(device), shard=False)
        return finish_training(args, best, out, history, seconds, test_acc, _machine(device))
    finally:
        # the DDP module and its pending gloo work go before the process group does, not at interpreter
        # exit (where gloo's threads releasing tensors was seen to abort the process)
        trainer = None
        gc.collect()
        close_distributed(dist)


def _machine(device) -> str:
    import torch

    from digitlab import cli

    base = cli.machine_description() if hasattr(cli, "machine_description") else \
        f"{platform.machine()}, {os.cpu_count()} cpus"
    text = f"{base}, torch {torch.get_num_threads()} threads"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


# -- export ----------------------------------------------------------------------------------------
def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model as ONNX (checked with onnxruntime) or as a PyTorch state dict")
    p.add_argument("model", type=Path, help="a digitlab model (.npz); with --spec, a PyTorch state dict "
                                            "(.safetensors, or .pt read with weights_only=True)")
    p.add_argument("--onnx", type=Path, help="write ONNX here, then check it against the NumPy model")
    p.add_argument("--safetensors", type=Path, help="write the PyTorch state dict of build_module(spec) here")
    p.add_argument("--spec", type=Path, help="MODEL is a state dict: take the architecture from this digitlab model")
    p.add_argument("--npz", type=Path, help="with --spec: write the imported weights as a digitlab model here")
    p.add_argument("--check-images", type=int, default=10000,
                   help="MNIST test images for the ONNX check (default all 10,000; 0: no check)")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from digitlab.cli import _say
    from digitlab.nn.model import load

    if not (args.onnx or args.safetensors or args.npz):
        raise DigitlabError("say what to write: --onnx OUT.onnx, --safetensors OUT.safetensors or (with --spec) "
                            "--npz OUT.npz")
    if args.npz and not args.spec:
        raise DigitlabError("--npz writes weights imported from a state dict; give the architecture with --spec")
    summary: dict = {"model": str(args.model)}
    if args.spec:  # a PyTorch state dict in, a digitlab model out
        _need("torch", "reading PyTorch state dicts")
        from digitlab.torch.checkpoint import import_state_dict, load_state_dict

        model = import_state_dict(load(args.spec), load_state_dict(args.model), name=str(args.model))
        model.meta.update({"imported_from": args.model.name})
        if args.npz:
            model.save(args.npz)
            summary["npz"] = str(args.npz)
            _say(args, f"wrote {args.npz} (the weights of {args.model}, architecture of {args.spec})")
    else:
        model = load(args.model)
    if args.safetensors:
        _need("torch", "--safetensors")
        from digitlab.torch.checkpoint import export_state_dict, save_safetensors

        save_safetensors(args.safetensors, export_state_dict(model), {"digitlab_spec": model.spec()})
        summary["safetensors"] = str(args.safetensors)
        _say(args, f"wrote {args.safetensors} (state dict of digitlab.torch.build_module(spec))")
    if args.onnx:
        _need("onnx", "--onnx")
        from digitlab.torch.export import check_onnx, export_onnx

        export_onnx(model, args.onnx)
        summary["onnx"] = str(args.onnx)
        if args.check_images > 0:
            _need("onnxruntime", "checking the ONNX file")
            from digitlab.data import load_mnist, to_float

            test = load_mnist("test")
            x = to_float(test.images[:args.check_images])
            if x.shape[1:] != model.input_shape:
                raise DigitlabError(f"the model's input is {model.input_shape}, not MNIST's: check with "
                                    f"--check-images 0 and test the file yourself")
            check = check_onnx(args.onnx, model, x)
            summary["check"] = check
            _say(args, f"wrote {args.onnx}; onnxruntime vs NumPy on {check['images']:,} MNIST test images: "
                       f"max logit difference {check['max_abs_diff']:.2g} ({check['max_rel_diff']:.2g} relative), "
                       f"{100 * check['same_predictions']:.2f} % identical predictions")
        else:
            _say(args, f"wrote {args.onnx} (not checked)")
    if args.json:
        print(json.dumps(summary))
    return 0


# -- eval of .onnx ---------------------------------------------------------------------------------
def load_eval_model(path: Path):
    """``digitlab eval``'s model: ``.onnx`` through onnxruntime, else a digitlab ``.npz`` (NumPy only)."""
    if path.suffix != ".onnx":
        from digitlab.nn.model import load

        return load(path)
    _need("onnxruntime", "evaluating an .onnx model")
    from digitlab.torch.onnx_model import OnnxModel

    return OnnxModel(path)
