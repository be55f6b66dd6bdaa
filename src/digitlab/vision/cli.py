"""``digitlab predict``: read every digit and number in photos, as JSON lines and annotated copies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="find and read handwritten digits and numbers in images")
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    p.add_argument("--model", type=Path, help="model file (.npz, or .onnx with onnxruntime); default: the shipped CNN")
    p.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    p.add_argument("--out", type=Path, help="write annotated copies here")
    p.add_argument("--debug", action="store_true", help="with --out: also every stage's image and the 28x28 inputs")
    p.add_argument("--threshold", type=float, help="confidence below which a box is rejected (default: calibrated)")
    p.set_defaults(func=cmd_predict)


def read_image(path: Path) -> np.ndarray:
    """BGR image of a file, upright per its EXIF orientation; a clear error for anything unreadable."""
    import cv2

    if not path.is_file():
        raise DigitlabError(f"{path}: no such file")
    data = path.read_bytes()
    if not data:
        raise DigitlabError(f"{path}: the file is empty")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DigitlabError(f"{path}: not an image OpenCV can read (corrupt, truncated or another format)")
    if img.ndim == 3 and img.shape[2] == 4:  # transparent canvas: lay it over white paper
        from digitlab.vision.pipeline import to_uint8

        img = to_uint8(img)
        alpha = img[:, :, 3:].astype(np.float32) / 255
        img = (img[:, :, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    else:  # EXIF orientation and colour handling of the ordinary path
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return img


def expand(inputs: list[Path]) -> list[Path]:
    files = []
    for p in inputs:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                print(f"digitlab: warning: {p}: no images in this folder", file=sys.stderr)
            files += found
        else:
            files.append(p)
    return files


def cmd_predict(args) -> int:
    import cv2

    from digitlab.vision import PipelineConfig, Recognizer
    from digitlab.vision.overlay import annotate, input_strip

    rec = Recognizer(args.model, PipelineConfig(reject_threshold=args.threshold))
    failed = 0
    files = expand(args.inputs)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    stems: dict[str, int] = {}
    for path in files:
        try:
            img = read_image(path)
            res = rec(img, debug=args.debug)
        except DigitlabError as exc:
            print(f"digitlab: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(res.to_json(str(path))), flush=True)
        else:
            texts = ", ".join(n.text for n in res.numbers) or "(no digits found)"
            print(f"{path}: {texts}  [{len(res.digits)} digits, {res.rejected} rejected, "
                  f"{sum(res.ms.values()):.0f} ms]")
        if args.out:
            seen = stems.get(path.stem, 0)  # a.png and a.jpg, or two folders' 1.png, must not overwrite
            stems[path.stem] = seen + 1
            stem = path.stem if not seen else f"{path.stem}-{seen + 1}"
            target = args.out / f"{stem}.annotated.png"
            if not cv2.imwrite(str(target), annotate(img, res)):
                raise DigitlabError(f"{target}: could not write the annotated image (is --out writable?)")
            if not args.json:
                print(f"  wrote {target}")
            if args.debug:
                for name, stage in res.debug.items():
                    if stage.ndim >= 2:
                        cv2.imwrite(str(args.out / f"{stem}.{name}.png"), stage)
                cv2.imwrite(str(args.out / f"{stem}.inputs.png"), input_strip(res, scale=3))
    if failed and failed == len(files):
        return 2
    return 1 if failed else 0


BASE_KEYS = ("command", "train_seconds", "val_accuracy", "best_epoch", "epoch", "epochs_planned", "train_images",
             "augment", "seed", "data", "base_test_accuracy")


def add_reject_train(sub) -> None:
    p = sub.add_parser("reject-train", help="grow a 10-class model an 11th class 'not a digit' and calibrate it")
    p.add_argument("--base", type=Path, required=True, help="the trained 10-class model (.npz)")
    p.add_argument("--out", type=Path, required=True, help="where the 11-class model goes (.npz, card beside it)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--negatives", type=int, default=15000)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--pipeline-pages", type=int, default=None,
                   help="synthetic camera pages of MNIST train digits whose pipeline inputs (digits and "
                        "non-digits) join the training set (default 2000; 0: MNIST and synthetic negatives only)")
    p.add_argument("--pipeline-val-pages", type=int, default=None,
                   help="pages of MNIST val digits whose pipeline inputs join the validation/calibration set "
                        "(default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-risk", type=float, default=0.02, help="calibrate the threshold to this validation risk")
    p.add_argument("--calibrate-only", action="store_true",
                   help="--base is already an 11-class model: only recalibrate temperature and threshold")
    p.add_argument("--plot", type=Path, help="write the risk-coverage plot here (PNG)")
    p.add_argument("--progress", action="store_true", help="a progress bar per epoch (stderr)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reject_train)


def cmd_reject_train(args) -> int:
    import shlex
    import time

    from digitlab.cli import machine_description
    from digitlab.nn.model import load
    from digitlab.vision.reject import calibrate, train_reject

    base = load(args.base)
    want = 11 if args.calibrate_only else 10
    if len(base.classes) != want:
        raise DigitlabError(f"{args.base}: expected a {want}-class model, it has {len(base.classes)} classes")
    t0 = time.perf_counter()
    command = "digitlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.calibrate_only:
        model = base
        extra = {} if args.pipeline_val_pages is None else {"pipeline_val_pages": args.pipeline_val_pages}
        report = calibrate(model, seed=args.seed, max_risk=args.max_risk,
                           log=lambda s: print(s, file=sys.stderr, flush=True), **extra)
        model.meta["calibrate_command"] = command
    else:
        base_meta = {**base.meta, "base_test_accuracy": base.meta.get("test_accuracy")}
        extra = {k: v for k, v in (("pipeline_pages", args.pipeline_pages),
                                    ("pipeline_val_pages", args.pipeline_val_pages)) if v is not None}
        model, report = train_reject(base, negatives=args.negatives, epochs=args.epochs, lr=args.lr,
                                     seed=args.seed, max_risk=args.max_risk, progress=args.progress,
                                     log=lambda s: print(s, file=sys.stderr, flush=True), **extra)
        model.meta = {**base_meta, "base_model": str(args.base), "reject_command": command,
                      "reject_seconds": round(time.perf_counter() - t0, 1), "machine": machine_description(),
                      **model.meta}
    seconds = time.perf_counter() - t0
    model.meta["test_accuracy"] = report["mnist_test_accuracy_digit_argmax"]
    model.save(args.out)
    meta = {k: v for k, v in model.meta.items() if k != "reject_report"}
    # what describes the 10-class training goes under "base", so no number of it passes for this model's
    base = {k: meta.pop(k) for k in BASE_KEYS if k in meta}
    card = {"model": args.out.name, "classes": model.classes, "architecture": model.spec()["layers"],
            "params": model.num_params(), **meta, "base": base, "reject": report}
    card_path = args.out.with_suffix(".json")
    if args.calibrate_only and card_path.is_file():  # keep the fine-tuning history of the card we update
        old = json.loads(card_path.read_text())
        card["reject_epochs"] = old.get("reject_epochs") or old.get("reject", {}).get("epochs")
    else:
        card["reject_epochs"] = report.pop("epochs", None)
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    if args.plot:
        plot_risk_coverage(report["risk_coverage_test"], args.plot, report["reject_threshold"])
    summary = {k: report[k] for k in ("temperature", "reject_threshold", "mnist_test_accuracy_digit_argmax",
                                      "mnist_test_rejected_at_threshold", "negatives_test_rejected_at_threshold",
                                      "ece_val_before", "ece_val_after")}
    summary.update({"seconds": round(seconds, 1), "model": str(args.out), "card": str(card_path)})
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def plot_risk_coverage(rows: list[dict], path: Path, chosen: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    cov = [r["coverage"] for r in rows]
    risk = [100 * r["risk"] for r in rows]
    ax.plot(cov, risk, "o-")
    for r, c, k in zip(rows, cov, risk, strict=True):
        ax.annotate(f"{r['threshold']:.2f}", (c, k), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("coverage (share of MNIST test digits accepted)")
    ax.set_ylabel("risk (% of accepted boxes wrong)")
    ax.set_title(f"Risk-coverage on MNIST test + 2,000 negatives (threshold {chosen:.2f})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_live(sub) -> None:
    p = sub.add_parser("live", help="read digits live from a camera, a video, images or the synthetic camera")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, metavar="N", help="camera index (default: 0 when no other source)")
    src.add_argument("--video", type=Path, metavar="PATH", help="a video file")
    src.add_argument("--images", type=Path, metavar="PATH", help="an image file or a folder of images")
    src.add_argument("--synthetic", action="store_true", help="the synthetic camera: a moving page")
    p.add_argument("--out", type=Path, metavar="FILE.mp4", help="write the annotated video here")
    p.add_argument("--json", action="store_true", help="one JSON line per frame on stdout")
    p.add_argument("--no-window", action="store_true", help="do not open a window (headless)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--debug", action="store_true",
                   help="every stage's milliseconds and its image (gray, ink, binary) on the overlay")
    p.add_argument("--model", type=Path, help="model file (default: the shipped CNN)")
    p.add_argument("--captures", type=Path, default=Path("captures"),
                   help="where the window's s + digit key saves crops (default: ./captures)")
    p.add_argument("--seed", type=int, default=0, help="--synthetic: which page and camera path")
    p.add_argument("--size", default="640x480", metavar="WxH", help="--synthetic: frame size (default 640x480)")
    p.add_argument("--no-thread", action="store_true", help="read frames in the main thread (no capture thread)")
    p.set_defaults(func=cmd_live)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DigitlabError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if w < 64 or h < 64:
        raise DigitlabError(f"--size {text!r}: at least 64x64")
    return h, w


def cmd_live(args) -> int:
    from digitlab.vision.live import LiveReader, has_display, run_live
    from digitlab.vision.sources import Prefetch, open_source

    if args.max_frames is not None and args.max_frames < 1:
        raise DigitlabError("--max-frames must be at least 1")
    camera = args.camera
    if camera is None and args.video is None and args.images is None and not args.synthetic:
        camera = 0
    window = not args.no_window
    if window and not has_display():
        print("digitlab: no display (or an OpenCV without GUI support, such as opencv-python-headless): "
              "running headless" + ("" if args.out or args.json else "; add --out FILE.mp4 or --json to see results"),
              file=sys.stderr)
        window = False
    if args.out is not None and args.out.suffix.lower() != ".mp4":
        raise DigitlabError(f"--out {args.out}: the annotated video is written as MP4; name it FILE.mp4")
    source = open_source(camera=camera, video=args.video, images=args.images, synthetic=args.synthetic,
                         seed=args.seed, frames=args.max_frames, size=_parse_size(args.size))
    if not args.no_thread:
        source = Prefetch(source)
    import cv2
    from threadpoolctl import threadpool_limits

    reader = LiveReader(args.model)
    # the frame loop on one core (a few small matrix products per frame gain nothing from a second BLAS
    # thread, and two pools fighting over two cores stall), the capture thread on the other
    cv2.setNumThreads(1)
    with threadpool_limits(1):
        stats = run_live(source, reader, out=args.out, json_out=sys.stdout if args.json else None, window=window,
                         max_frames=args.max_frames, captures=args.captures, debug=args.debug)
    print(f"digitlab: {stats.summary()}", file=sys.stderr)
    if args.out is not None and stats.frames:
        print(f"digitlab: wrote {args.out}", file=sys.stderr)
    return 0 if stats.frames else 2
