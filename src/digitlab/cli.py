"""The `digitlab` command: ``digitlab train | eval | bench``.

Problems the user can fix (bad arguments, missing or corrupt files, a diverging run) print one line
``digitlab: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one readable line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 256,128, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"layer widths must be positive integers, got {text!r}")
    return values


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _load_data(source: str, split: str, val_size: int = 5000):
    from digitlab.data import load_idx_dataset, load_mnist

    if source == "mnist":
        return load_mnist(split, val_size=val_size)
    return load_idx_dataset(source, split, val_size=val_size)


def _say(args, text: str) -> None:
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout, flush=True)


ARCH_DEFAULTS = {
    "mlp": {"hidden": (256, 128), "dropout": 0.2, "epochs": 10, "lr": 0.1},
    "cnn": {"hidden": (128,), "dropout": 0.3, "epochs": 12, "lr": 0.05},
    "cnn5": {"hidden": (128,), "dropout": 0.3, "epochs": 12, "lr": 0.05},
}


# -- train ---------------------------------------------------------------------------------------
def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on MNIST (or any IDX data set)")
    p.add_argument("--arch", default="mlp", help="architecture: mlp (default), cnn, cnn5")
    p.add_argument("--hidden", type=_int_list, help="hidden widths: mlp 256,128; cnn 128 (its dense layer)")
    p.add_argument("--dropout", type=float, help="dropout before the last layer(s): mlp 0.2, cnn 0.3")
    p.add_argument("--epochs", type=_positive(int), help="mlp 10, cnn 12")
    p.add_argument("--augment", action="store_true", help="random shifts, rotations, scale, shear, elastic")
    p.add_argument("--batch-size", type=_positive(int), default=128)
    p.add_argument("--lr", type=_positive(float), help="peak learning rate: mlp 0.1, cnn 0.05 (sgd)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--schedule", choices=["constant", "step", "cosine", "onecycle"], default="cosine")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up epochs of the cosine schedule (0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=_positive(int), help="train on only the first N training images")
    p.add_argument("--val-size", type=_positive(int), default=5000)
    p.add_argument("--data", default="mnist", help="mnist, or a folder of IDX files in MNIST's layout")
    p.add_argument("--out", type=Path, help="where the best model goes (default models/ARCH.npz)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.resume.npz if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    from digitlab.torch.cli import add_torch_options

    add_torch_options(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from digitlab.data import to_float
    from digitlab.models import ARCHITECTURES, build
    from digitlab.nn import SGD, Adam, SoftmaxCrossEntropy, evaluate, fit, make_schedule
    from digitlab.nn.model import load
    from digitlab.torch.cli import cmd_train_torch, reject_torch_only

    if getattr(args, "backend", "numpy") == "torch":
        return cmd_train_torch(args)
    reject_torch_only(args)
    if args.arch not in ARCHITECTURES:
        raise DigitlabError(f"unknown --arch {args.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    for key, value in ARCH_DEFAULTS[args.arch].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    train = _load_data(args.data, "train", args.val_size)
    val = _load_data(args.data, "val", args.val_size)
    test = _load_data(args.data, "test")
    x_train, y_train = to_float(train.images), train.labels
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_val, x_test = to_float(val.images), to_float(test.images)
    if args.arch == "mlp":
        spec = ARCHITECTURES["mlp"](hidden=args.hidden, dropout=args.dropout, input_shape=x_train.shape[1:])
    else:
        spec = ARCHITECTURES[args.arch](hidden=args.hidden[0], dropout=args.dropout, input_shape=x_train.shape[1:])
    model = build(spec, seed=args.seed)
    if args.optimizer == "sgd":
        opt = SGD(model, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov and args.momentum > 0,
                  weight_decay=args.weight_decay)
    else:
        opt = Adam(model, lr=args.lr, weight_decay=args.weight_decay, decoupled=True)
    steps = -(-len(x_train) // args.batch_size)
    schedule = make_schedule(args.schedule, args.epochs * steps, steps, args.warmup)
    out = args.out or Path("models") / f"{args.arch}.npz"
    resume_path = out.with_name(out.stem + ".resume.npz")
    command = "digitlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    model.meta.update({"arch": args.arch, "command": command, "seed": args.seed, "data": args.data,
                       "train_images": len(x_train), "epochs_planned": args.epochs, "augment": args.augment})
    augment = None
    if args.augment:
        from digitlab.data.augment import Augment

        augment = Augment()
    _say(args, f"training {args.arch} ({model.num_params():,} parameters) on {len(x_train):,} images, "
               f"{args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr}")

    def report(log) -> None:
        _say(args, f"epoch {log.epoch:3d}  train loss {log.train_loss:.4f}  acc {log.train_accuracy:.4f}  "
                   f"val loss {log.val_loss:.4f}  acc {log.val_accuracy:.4f}  lr {log.lr:.3g}  {log.seconds:.1f}s")

    t0 = time.perf_counter()
    history = fit(model, opt, SoftmaxCrossEntropy(), x_train, y_train, x_val=x_val, y_val=val.labels,
                  epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, schedule=schedule,
                  checkpoint=out, resume_path=resume_path, resume=args.resume,
                  augment=augment, progress=not args.no_progress and sys.stderr.isatty(), on_epoch=report)
    seconds = time.perf_counter() - t0
    best = load(out)
    _, test_acc, _ = evaluate(best, x_test, test.labels)
    return finish_training(args, best, out, history, seconds, test_acc, machine_description())


def finish_training(args, best, out: Path, history, seconds: float, test_acc: float, machine: str) -> int:
    """Both backends end alike: the test accuracy and timing go into the best model's meta, the model
    is saved again with its card, and the summary is printed (one JSON object with ``--json``)."""
    best.meta.update({"test_accuracy": test_acc, "val_accuracy": history.best_val_accuracy,
                      "best_epoch": history.best_epoch, "train_seconds": round(seconds, 1), "machine": machine})
    best.save(out)
    card = write_card(best, out, history)
    summary = {"arch": args.arch, "test_accuracy": test_acc, "val_accuracy": history.best_val_accuracy,
               "best_epoch": history.best_epoch, "epochs": len(history.epochs), "seconds": round(seconds, 2),
               "params": best.num_params(), "model": str(out), "card": str(card)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"best epoch {history.best_epoch}: val accuracy {history.best_val_accuracy:.4f}, "
              f"test accuracy {test_acc:.4f} ({seconds:.1f}s); saved {out}")
    return 0


def machine_description() -> str:
    """CPU model and count, for model cards and benchmark reports."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cpus, {platform.system()} {platform.machine()}"


def write_card(model, path: Path, history) -> Path:
    """The model card beside the weights (``NAME.json``): what it is, how it was made, how good it is."""
    import numpy as _np

    from digitlab import __version__

    card = {
        "model": path.name, "digitlab": __version__, "numpy": _np.__version__, "python": platform.python_version(),
        "architecture": model.spec()["layers"], "params": model.num_params(), **model.meta,
        "history": [vars(e) for e in history.epochs],
    }
    card_path = path.with_suffix(".json")
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    os.replace(tmp, card_path)
    return card_path


# -- eval ----------------------------------------------------------------------------------------
def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="accuracy, per-class accuracy and confusion matrix of a model")
    p.add_argument("model", type=Path)
    p.add_argument("--data", default="mnist", help="mnist, or a folder of IDX files (test split is used)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from digitlab.data import to_float
    from digitlab.nn import confusion_matrix, evaluate
    from digitlab.torch.cli import load_eval_model

    model = load_eval_model(args.model)  # .npz, or .onnx through onnxruntime
    test = _load_data(args.data, "test")
    x = to_float(test.images)
    if x.shape[1:] != model.input_shape:
        raise DigitlabError(f"{args.data}: images of shape {x.shape[1:]} do not fit the model's input "
                            f"{model.input_shape}")
    _, acc, pred = evaluate(model, x, test.labels)
    k = len(model.classes)
    conf = confusion_matrix(test.labels, pred, max(k, int(test.labels.max()) + 1))
    per_class = (np.diag(conf) / np.maximum(conf.sum(axis=1), 1)).tolist()
    if args.json:
        print(json.dumps({"model": str(args.model), "data": args.data, "accuracy": acc, "n": int(len(x)),
                          "per_class": per_class, "confusion": conf.tolist()}))
        return 0
    print(f"{args.model} on {args.data} test ({len(x):,} images): accuracy {acc:.4f} "
          f"({int((pred != test.labels).sum())} errors)")
    print("per class:  " + "  ".join(f"{i}:{a:.3f}" for i, a in enumerate(per_class)))
    print("confusion (rows: true, columns: predicted)")
    print("     " + "".join(f"{j:>6d}" for j in range(conf.shape[1])))
    for i, row in enumerate(conf):
        print(f"{i:>4d} " + "".join(f"{v:>6d}" for v in row))
    return 0


# -- bench ---------------------------------------------------------------------------------------
def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks against PyTorch (each side in its own process)")
    p.add_argument("name", nargs="?", help="benchmark name, or 'all'")
    p.add_argument("--list", action="store_true", help="name the benchmarks")
    p.add_argument("--json", action="store_true")
    p.add_argument("--pairs", type=_positive(int), default=5, help="alternating NumPy/PyTorch pairs (5)")
    p.add_argument("--images", type=_positive(int), help="training benchmarks: only N images (a quick check)")
    p.add_argument("--data", help="real: the folder of real handwriting (default ../shared/real-dev)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from digitlab.bench import BENCHMARKS

    if args.list or not args.name:
        for name, bench in BENCHMARKS.items():
            print(f"{name:12s} {bench.description}")
        return 0
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        if name not in BENCHMARKS:
            raise DigitlabError(f"unknown benchmark {name!r}; `digitlab bench --list` names them")
        extra = {"data": args.data} if args.data else {}
        result = BENCHMARKS[name].run(pairs=args.pairs, images=args.images,
                                      log=lambda t: print(t, file=sys.stderr, flush=True), **extra)
        if args.json:
            print(json.dumps(result))
        else:
            print(BENCHMARKS[name].format(result))
    return 0


# -- journey -------------------------------------------------------------------------------------
def add_journey(sub) -> None:
    p = sub.add_parser("journey", help="the learning path: run its experiments, write figures, JSON and report")
    p.add_argument("--phase", type=int, action="append", choices=range(1, 6), metavar="N",
                   help="run only phase N (1-5; repeatable); default all")
    p.add_argument("--quick", action="store_true", help="small subsets, under a minute per phase (tests, CI)")
    p.add_argument("--out", type=Path, default=Path("runs/journey"), help="folder for figures, JSON, report")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_journey)


def cmd_journey(args) -> int:
    from digitlab.journey import run

    # rebuilt from the parsed options (not sys.argv, which is the caller's when main() is called with a list)
    command = " ".join(["digitlab journey", *(f"--phase {n}" for n in args.phase or []),
                        *(["--quick"] if args.quick else []), f"--seed {args.seed}",
                        f"--out {shlex.quote(str(args.out))}"])
    run(args.phase, args.out, quick=args.quick, seed=args.seed, command=command,
        log=lambda t: print(t, flush=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from digitlab import __version__

    parser = _Parser(prog="digitlab", description="Neural networks from first principles, up to reading "
                                                  "handwritten digits.")
    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    from digitlab.torch.cli import add_export
    from digitlab.vision.captures import add_captures, add_finetune
    from digitlab.vision.cli import add_live, add_predict, add_reject_train

    for add in (add_train, add_eval, add_bench, add_export, add_predict, add_reject_train, add_live, add_captures,
                add_finetune, add_journey):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except DigitlabError as exc:
        print(f"digitlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return 130
