"""``live``: the live reader's frame loop on synthetic camera videos, and how stable its readings are.

For each frame size (640x480 and 1280x720), a moving page of about 8 digits (`digitlab.data.video`) is
rendered and encoded to an MP4 first, so that what is timed is what a camera loop does: decode a frame,
run the full pipeline (illumination flattening, auto threshold, line removal, candidates, MNIST
normalisation, the NumPy model with its "not a digit" class, grouping) and the tracker. Two loops:

- ``single``: one thread for everything (BLAS and OpenCV limited to one thread): per frame, decode +
  recognise + track. Keys ``ms_median_640x480``, ``ms_p99_640x480``, ``fps_640x480`` and per stage.
  ``cpu_ms_median_640x480`` is the same loop's thread CPU time: on a shared machine the wall clock
  also counts the time other jobs held the core, the CPU time does not (cache sharing still counts).
- ``thread``: frames decoded by the capture thread (`Prefetch`) while the main thread recognises; the
  per-frame time is the interval between finished frames. Keys ``..._thread_640x480``.

A *bare* classic pipeline (blur, Otsu, opening, contours, 28x28 crops, the same model) is timed on the
same frames for orientation. Stability (`score_stability`) is scored on the same videos and on extra
seeds: share of correct stable readings and flips, after 15 frames of settling.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

SIZES = ((480, 640), (720, 1280))


def _encode(video, path: Path) -> list:
    h, w = video.size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), video.fps, (w, h))
    truths = []
    for i in range(len(video)):
        f = video.frame(i)
        writer.write(f.image)
        truths.append(f)
    writer.release()
    return truths


def _bare(recognizer, image: np.ndarray) -> int:
    """The classic pipeline of the tutorials: blur, Otsu, opening, external contours, 28x28, one model call."""
    from digitlab.vision.normalize import to_mnist

    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    gray = cv2.GaussianBlur(gray, (5, 5), 0)
    _, mask = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = [cv2.boundingRect(c) for c in contours]
    boxes = [b for b in boxes if 12 <= b[3] <= 0.8 * image.shape[0]]
    batch = np.zeros((len(boxes), 1, 28, 28), np.float32)
    for i, (x, y, w, h) in enumerate(boxes):
        batch[i, 0] = to_mnist(mask[y:y + h, x:x + w], stroke=False)
    recognizer.probabilities(batch)
    return len(boxes)


def _stats(ms: list[float]) -> tuple[float, float]:
    return float(np.median(ms)), float(np.percentile(ms, 99))


def run_live_bench(frames: int = 150, seed: int = 0, stability_seeds: int = 4, sizes=SIZES,
                   log=lambda s: None) -> dict:
    from threadpoolctl import threadpool_limits

    from digitlab.cli import machine_description
    from digitlab.data.video import MovingPage
    from digitlab.vision.live import LiveConfig, LiveReader, score_stability
    from digitlab.vision.recognizer import Recognizer
    from digitlab.vision.sources import Frame, Prefetch, VideoSource

    cfg = LiveConfig()
    recognizer = Recognizer(None, cfg.pipeline)
    out: dict = {"frames": frames, "seed": seed, "digits": 8, "machine": machine_description(),
                 "command": "digitlab bench live --json", "codec": "mp4v", "sizes": [f"{w}x{h}" for h, w in sizes]}
    stability_runs = []
    t_start = time.perf_counter()
    gc.freeze()  # as `run_live` does: the model and libraries out of the collector's sight
    with tempfile.TemporaryDirectory() as tmp:
        for h, w in sizes:
            key = f"{w}x{h}"
            video = MovingPage(seed, size=(h, w), digits=8, frames=frames)
            path = Path(tmp) / f"{key}.mp4"
            truths = _encode(video, path)
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                with threadpool_limits(1):
                    for f in truths[:5]:  # warm-up: first calls allocate and fill caches
                        recognizer(f.image)
                    # single thread: decode, recognise, track, one after the other
                    reader = LiveReader(config=cfg, recognizer=recognizer)
                    source = VideoSource(path)
                    per_frame, cpu, stages, results, sides = [], [], {}, [], []
                    it = iter(source)
                    while True:
                        t0, c0 = time.perf_counter(), time.thread_time()
                        frame = next(it, None)
                        if frame is None:
                            break
                        t1 = time.perf_counter()
                        res = reader.process(frame)
                        t2 = time.perf_counter()
                        per_frame.append(1e3 * (t2 - t0))
                        cpu.append(1e3 * (time.thread_time() - c0))
                        res.ms["decode"] = 1e3 * (t1 - t0)
                        for k, v in res.ms.items():
                            stages.setdefault(k, []).append(v)
                        results.append(res)
                        sides.append(reader.side)
                    source.close()
                    med, p99 = _stats(per_frame)
                    out[f"ms_median_{key}"], out[f"ms_p99_{key}"] = round(med, 2), round(p99, 2)
                    out[f"fps_{key}"] = round(1e3 / med, 1)
                    # CPU time of the loop's thread: what the frame costs when no other job shares the core
                    out[f"cpu_ms_median_{key}"], out[f"cpu_ms_p99_{key}"] = (round(v, 2) for v in _stats(cpu))
                    # the adaptive working resolution (longer side, px) the frames were read at
                    out[f"working_side_median_{key}"] = int(np.median(sides))
                    values, counts = np.unique(sides, return_counts=True)
                    out[f"working_side_counts_{key}"] = {str(k): int(v) for k, v in zip(values, counts, strict=True)}
                    out[f"reused_share_{key}"] = round(reader.reused / max(reader.reused + reader.classified, 1), 3)
                    out[f"stages_ms_median_{key}"] = {k: round(float(np.median(v)), 3) for k, v in stages.items()}
                    recog = stages["recognize"]
                    out[f"ms_median_recognize_{key}"] = round(float(np.median(recog)), 2)
                    out[f"ms_p99_recognize_{key}"] = round(float(np.percentile(recog, 99)), 2)
                    score = score_stability(results, truths)
                    stability_runs.append({"size": key, "seed": seed, **score})
                    log(f"live {key}: single thread {med:.1f} ms median, {p99:.1f} ms p99; stable readings "
                        f"{100 * score['right_rate']:.1f}% right, {score['flips']} flips")

                    # the same loop re-reading every box in every frame (no reuse): the full per-frame cost
                    reader = LiveReader(config=LiveConfig(reuse_frames=0), recognizer=recognizer)
                    noreuse = []
                    for f in truths:
                        c0 = time.thread_time()
                        reader.process(Frame(f.index, f.t, f.image))
                        noreuse.append(1e3 * (time.thread_time() - c0))
                    out[f"cpu_ms_median_noreuse_{key}"], out[f"cpu_ms_p99_noreuse_{key}"] = (
                        round(v, 2) for v in _stats(noreuse))

                    # bare classic pipeline on the same frames
                    bare, bare_cpu = [], []
                    for f in truths:
                        t0, c0 = time.perf_counter(), time.thread_time()
                        _bare(recognizer, f.image)
                        bare.append(1e3 * (time.perf_counter() - t0))
                        bare_cpu.append(1e3 * (time.thread_time() - c0))
                    out[f"ms_median_bare_{key}"] = round(float(np.median(bare)), 2)
                    out[f"cpu_ms_median_bare_{key}"] = round(float(np.median(bare_cpu)), 2)

                    # with the capture thread: decoding overlaps recognition
                    reader = LiveReader(config=cfg, recognizer=recognizer)
                    source = Prefetch(VideoSource(path))
                    ends = [time.perf_counter()]
                    for frame in source:
                        reader.process(frame)
                        ends.append(time.perf_counter())
                    source.close()
                    gaps = 1e3 * np.diff(ends)[1:]  # the first interval includes starting the thread
                    med, p99 = _stats(list(gaps))
                    out[f"ms_median_thread_{key}"], out[f"ms_p99_thread_{key}"] = round(med, 2), round(p99, 2)
                    out[f"fps_thread_{key}"] = round(1e3 / med, 1)
            finally:
                cv2.setNumThreads(threads)
    # stability on more videos (640x480), each a different page and camera path
    recognizer = Recognizer(None, cfg.pipeline)
    for s in range(seed + 1, seed + 1 + stability_seeds):
        video = MovingPage(s, size=SIZES[0], digits=8, frames=frames)
        reader = LiveReader(config=cfg, recognizer=recognizer)
        results, truths = [], []
        for i in range(len(video)):
            f = video.frame(i)
            results.append(reader.process(Frame(i, f.t, f.image, f)))
            truths.append(f)
        score = score_stability(results, truths)
        stability_runs.append({"size": "640x480", "seed": s, **score})
        log(f"stability seed {s}: {100 * score['right_rate']:.1f}% right, coverage {100 * score['coverage']:.1f}%, "
            f"{score['flips']} flips")
    tot = {k: sum(r[k] for r in stability_runs) for k in ("number_frames_visible", "right", "wrong", "flips",
                                                           "false_readings")}
    shown = tot["right"] + tot["wrong"]
    visible = tot["number_frames_visible"]
    out["stable_right_rate"] = round(tot["right"] / visible, 4) if visible else 0.0  # of visible number-frames
    out["stable_correct"] = round(tot["right"] / shown, 4) if shown else 0.0        # of shown readings
    out["stable_coverage"] = round(shown / visible, 4) if visible else 0.0
    out["flip_rate"] = round(tot["flips"] / shown, 5) if shown else 0.0
    out["false_readings"] = tot["false_readings"]
    worst = min(stability_runs, key=lambda r: r["right_rate"])
    out["worst_run"] = {k: worst[k] for k in ("size", "seed", "right_rate", "correct", "coverage", "flips",
                                              "wrong_examples")}
    out["stability_runs"] = stability_runs
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    return out


class LiveBench:
    name = "live"
    description = "the live frame loop at 640x480 and 1280x720 (~8 digits): ms per frame and stage, FPS, stability"

    def run(self, pairs: int = 5, log=lambda s: None, images: int | None = None, data: str | None = None) -> dict:
        return run_live_bench(frames=images or 150, log=log)

    def format(self, r: dict) -> str:
        lines = [f"live: synthetic moving pages, 8 digits, {r['frames']} frames per video, {r['seconds']:.0f} s"]
        for k in r["sizes"]:
            lines.append(f"  {k}: one thread {r[f'ms_median_{k}']:.1f} ms median / {r[f'ms_p99_{k}']:.1f} ms p99 "
                         f"({r[f'fps_{k}']:.0f} FPS); capture thread {r[f'ms_median_thread_{k}']:.1f} / "
                         f"{r[f'ms_p99_thread_{k}']:.1f} ms ({r[f'fps_thread_{k}']:.0f} FPS); "
                         f"bare classic pipeline {r[f'ms_median_bare_{k}']:.1f} ms")
            lines.append(f"    CPU time of the loop thread: {r[f'cpu_ms_median_{k}']:.1f} / "
                         f"{r[f'cpu_ms_p99_{k}']:.1f} ms "
                         f"(every box re-read: {r[f'cpu_ms_median_noreuse_{k}']:.1f} / "
                         f"{r[f'cpu_ms_p99_noreuse_{k}']:.1f} ms; bare pipeline {r[f'cpu_ms_median_bare_{k}']:.1f} ms)")
            lines.append("    stages (median ms): " + ", ".join(f"{s} {v:.2f}" for s, v in
                                                            r[f"stages_ms_median_{k}"].items()))
        lines.append(f"  stable readings ({len(r['stability_runs'])} videos): right in "
                     f"{100 * r['stable_right_rate']:.2f}% "
                     f"of visible number-frames (shown in {100 * r['stable_coverage']:.1f}%, of those "
                     f"{100 * r['stable_correct']:.2f}% right), flip rate {100 * r['flip_rate']:.3f}%, "
                     f"{r['false_readings']} false readings")
        w = r["worst_run"]
        lines.append(f"  worst video: {w['size']} seed {w['seed']}: {100 * w['right_rate']:.1f}% right, "
                     f"e.g. {w['wrong_examples'][:2]}")
        return "\n".join(lines)
