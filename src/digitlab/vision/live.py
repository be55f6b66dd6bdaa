"""The live loop: frames in, stable readings out, as an annotated video, JSON lines or a window.

`LiveReader.process` is one frame's work: the still-image recogniser (every box of the frame in one
model call), then the `Tracker` (probabilities averaged per track, labels shown with hysteresis),
timed per stage. `run_live` drives a `digitlab.vision.sources.Source` through it and hands each result
to the outputs the command line asked for. `score_stability` measures, on the synthetic camera, how
often the stable reading of each number is right and how often it flips.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from digitlab.errors import DigitlabError
from digitlab.vision.pipeline import PipelineConfig, PipelineResult
from digitlab.vision.sources import Frame, Source
from digitlab.vision.tracking import Track, Tracker, TrackerConfig, iou


@dataclass
class LiveConfig:
    """The live reader's settings: the recogniser's (working resolution capped for speed: a camera
    frame's digits are large enough at 640 px) and the tracker's."""

    pipeline: PipelineConfig = field(default_factory=lambda: PipelineConfig(max_side=640, fast_downscale=True))
    # adaptive working resolution: while digits are tracked, work only as finely as the smallest of
    # them needs (it stays at least `min_digit_px` tall, the height of an MNIST digit's box), between
    # `min_side` and the pipeline's `max_side`; with nothing tracked, at `max_side`. The pixel stages
    # cost in proportion to the area, so large digits near the camera are read ~4x cheaper. A new digit
    # down to about a third of the smallest tracked one is still found (`min_height_px` is 8)
    adaptive: bool = True
    min_digit_px: int = 20
    min_side: int = 320
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    strip: bool = True  # the debug strip of 28x28 model inputs under the frame
    # a stable, confidently read digit whose box has not changed shape is re-read only every
    # (reuse_frames + 1)-th frame, staggered by track id; 0 re-reads every box in every frame
    reuse_frames: int = 6
    reuse_conf: float = 0.9     # ... if its last reading gave its shown label at least this probability
    reuse_iou: float = 0.5      # ... and the candidate overlaps the track's last box this much
    reuse_shape: float = 0.1    # ... and its width and height changed by at most this fraction since then


@dataclass
class LiveResult:
    frame: int
    t: float
    result: PipelineResult
    tracks: list[Track]
    numbers: list[dict]           # stable readings only
    ms: dict[str, float]
    inputs: dict[int, np.ndarray]  # track id -> its 28x28 model input in this frame

    def to_json(self) -> dict:
        return {"frame": self.frame, "t": round(self.t, 4), "numbers": self.numbers,
                "tracks": [t.to_json() for t in self.tracks], "ms": {k: round(v, 2) for k, v in self.ms.items()}}


class LiveReader:
    """Recogniser + tracker for one stream of frames (create one per stream: the tracker has memory)."""

    def __init__(self, model=None, config: LiveConfig | None = None, recognizer=None) -> None:
        from digitlab.vision.recognizer import Recognizer

        self.config = config or LiveConfig()
        self.recognizer = recognizer or Recognizer(model, self.config.pipeline)
        self.tracker = Tracker(self.config.tracker, self.recognizer.config)
        # track id -> (probabilities, 28x28 input, box) of its last fresh reading
        self._readings: dict[int, tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]] = {}
        self.frames = 0
        self.reused = 0    # boxes whose reading was reused, over the stream
        self._reused_boxes: set[tuple[int, int, int, int]] = set()  # this frame's, filled by _reuse
        self.classified = 0
        self.side = self.config.pipeline.max_side  # the working resolution of the last frame

    def working_side(self, shape: tuple[int, ...]) -> int:
        """The longer side to work at for a frame of ``shape``, from the digits seen in the last frame
        (see `LiveConfig.adaptive`): a multiple of 32 (so it changes in steps, not every frame)."""
        cfg = self.config
        top = cfg.pipeline.max_side
        seen = [t.box[3] for t in self.tracker.tracks if t.misses == 0]
        if not cfg.adaptive or not seen:
            return top
        side = max(shape[0], shape[1]) * cfg.min_digit_px / max(min(seen), 1)
        return int(min(top, max(cfg.min_side, 32 * np.ceil(side / 32))))

    def _reuse(self, box: tuple[int, int, int, int]):
        """The last reading of the stable track this candidate box continues, when it may stand in for a
        fresh one (see `LiveConfig`); None otherwise."""
        cfg = self.config
        best, best_iou = None, cfg.reuse_iou
        for t in self.tracker.tracks:
            if t.label is None or t.misses or t.id not in self._readings:
                continue
            overlap = iou(t.box, box)
            if overlap >= best_iou:
                best, best_iou = t, overlap
        if best is None or (self.frames + best.id) % (cfg.reuse_frames + 1) == 0:
            return None
        probs, image, (_, _, w, h) = self._readings[best.id]
        if abs(box[2] - w) > cfg.reuse_shape * w or abs(box[3] - h) > cfg.reuse_shape * h:
            return None
        if int(np.argmax(probs[:10])) != best.label or float(probs[best.label]) < cfg.reuse_conf:
            return None
        self._reused_boxes.add(box)
        return probs, image

    def process(self, frame: Frame, debug: bool = False) -> LiveResult:
        """One frame. ``debug``: keep the recogniser's stage images (``result.debug``) for the overlay."""
        t0 = time.perf_counter()
        self._reused_boxes.clear()
        self.side = self.working_side(frame.image.shape)
        result = self.recognizer(frame.image, reuse=self._reuse if self.config.reuse_frames > 0 else None,
                                 max_side=self.side, debug=debug)
        t1 = time.perf_counter()
        # a snapshot: the tracker goes on changing its tracks, a result must keep saying what this frame showed
        tracks = [copy.copy(t) for t in self.tracker.update_result(result)]
        numbers = self.tracker.stable_numbers()
        by_box = {d.box: d for d in result.digits}
        inputs = {}
        for t in tracks:
            d = by_box.get(t.box) if t.misses == 0 else None
            if d is None:
                continue
            inputs[t.id] = d.image
            if d.box not in self._reused_boxes and d.probs is not None:
                self._readings[t.id] = (d.probs, d.image, d.box)
        live_ids = {t.id for t in tracks}
        for tid in [k for k in self._readings if k not in live_ids]:
            del self._readings[tid]
        self.frames += 1
        self.reused += len(self._reused_boxes)
        self.classified += len(result.digits) + result.rejected - len(self._reused_boxes)
        t2 = time.perf_counter()
        ms = dict(result.ms)
        ms["track"] = 1e3 * (t2 - t1)
        ms["recognize"] = 1e3 * (t1 - t0)
        return LiveResult(frame.index, frame.t, result, tracks, numbers, ms, inputs)


# -- outputs -------------------------------------------------------------------------------------
def has_display() -> bool:
    """Whether a window can be opened: OpenCV built with a GUI backend (not opencv-python-headless) and,
    on Linux, a display to show it on."""
    info = cv2.getBuildInformation()
    gui = ""
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if not gui or gui.upper() == "NONE":
        return False
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return True


class VideoSink:
    """An MP4 written to ``path.partial.mp4`` and moved into place when closed, so an interrupted run
    never leaves a half-written file under the final name."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.stem + ".partial" + (self.path.suffix or ".mp4"))
        self.size = size  # (width, height)
        self.fps = float(fps)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
        if not self.writer.isOpened():
            raise DigitlabError(f"{self.path}: OpenCV cannot write an MP4 video here (is the folder writable?)")
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        self.writer.release()
        if self.frames:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


@dataclass
class LiveStats:
    frames: int = 0
    seconds: float = 0.0
    ms: list[float] = field(default_factory=list)
    captures: int = 0
    numbers: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        if not self.frames:
            return "no frames read"
        med = float(np.median(self.ms))
        texts = ", ".join(n["text"] for n in self.numbers) or "(none stable)"
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.frames / max(self.seconds, 1e-9):.1f} FPS), "
                f"{med:.1f} ms median per frame; last stable numbers: {texts}")


def run_live(source: Source, reader: LiveReader, *, out: str | Path | None = None, json_out=None,
             window: bool = False, max_frames: int | None = None, captures: str | Path | None = None,
             debug: bool = False, log=None) -> LiveStats:
    """Run ``source`` through ``reader`` until the source ends, ``max_frames`` are done, or (window) the
    user quits with q or Esc. ``json_out``: a text stream for one JSON line per frame. ``captures``:
    where the window's ``s`` + digit key saves crops (see `digitlab.vision.captures`)."""
    from digitlab.vision.overlay import annotate_live

    log = log or (lambda s: print(f"digitlab: {s}", file=sys.stderr, flush=True))
    # what exists now (the model, the libraries) lives for the whole run: out of the collector's sight,
    # its pauses inside the frame loop drop from ~1.5 ms to ~0.2 ms
    gc.freeze()
    stats = LiveStats()
    sink: VideoSink | None = None
    ui = None
    if window:
        try:
            ui = _Window(captures, log)
        except cv2.error as exc:  # a display that is set but cannot be reached
            log(f"cannot open a window ({str(exc).strip().splitlines()[-1]}); running headless")
    start = time.perf_counter()
    last = start
    fps = 0.0
    try:
        frames = iter(source)
        while max_frames is None or stats.frames < max_frames:
            t_wait = time.perf_counter()
            try:
                frame = next(frames)
            except StopIteration:
                break
            t_got = time.perf_counter()
            live = reader.process(frame, debug=debug)
            live.ms["capture"] = 1e3 * (t_got - t_wait)
            quit_now = False
            if out is not None or ui is not None:
                t_draw = time.perf_counter()
                shown = annotate_live(frame.image, live, fps=fps, strip=reader.config.strip,
                                      selected=ui.selected if ui else None, debug=debug)
                live.ms["overlay"] = 1e3 * (time.perf_counter() - t_draw)
                if out is not None and sink is None:
                    sink = VideoSink(out, source.fps or 30.0, (shown.shape[1], shown.shape[0]))
                if sink is not None:
                    if source.live:  # frames come as the loop allows: repeat them so the video keeps real time
                        while sink.frames < int(frame.t * sink.fps):
                            sink.write(shown)
                    sink.write(shown)
                if ui is not None and not ui.show(shown, frame, live):
                    quit_now = True
            now = time.perf_counter()
            live.ms["total"] = 1e3 * (now - t_wait)
            fps = 0.9 * fps + 0.1 / max(now - last, 1e-6) if stats.frames else 1 / max(now - last, 1e-6)
            last = now
            stats.frames += 1
            stats.ms.append(1e3 * (now - t_got))
            stats.numbers = live.numbers
            if json_out is not None:
                json_out.write(json.dumps(live.to_json()) + "\n")
                json_out.flush()
            if quit_now:
                break
    except KeyboardInterrupt:
        log("interrupted; closing the outputs")
    finally:
        stats.seconds = time.perf_counter() - start
        if sink is not None:
            sink.close()
        source.close()
        if ui is not None:
            stats.captures = ui.saved
            ui.close()
    return stats


class _Window:
    """The OpenCV window and its keys: q / Esc quit; s selects the box nearest the centre (Tab: the
    next one), then a digit key saves it with that label (x: "not a digit", Esc: cancel)."""

    def __init__(self, captures: str | Path | None, log) -> None:
        self.captures = Path(captures) if captures else Path("captures")
        self.log = log
        self.selected: int | None = None
        self.saved = 0
        cv2.namedWindow("digitlab live", cv2.WINDOW_NORMAL)

    def show(self, image: np.ndarray, frame: Frame, live: LiveResult) -> bool:
        cv2.imshow("digitlab live", image)
        key = cv2.waitKey(1) & 0xFF
        if cv2.getWindowProperty("digitlab live", cv2.WND_PROP_VISIBLE) < 1:  # closed with its X button
            return False
        if key == 255:
            return True
        if self.selected is None:
            if key in (ord("q"), 27):
                return False
            if key == ord("s"):
                self.selected = _nearest_centre(live, frame.image.shape)
                if self.selected is None:
                    self.log("no box to save in this frame")
            return True
        if key == 27:
            self.selected = None
        elif key == 9:  # Tab
            ids = sorted(live.inputs)
            if ids:
                self.selected = ids[(ids.index(self.selected) + 1) % len(ids)] if self.selected in ids else ids[0]
        elif chr(key) in "0123456789x":
            self._save(frame, live, 10 if chr(key) == "x" else int(chr(key)))
            self.selected = None
        return True

    def _save(self, frame: Frame, live: LiveResult, label: int) -> None:
        from digitlab.vision.captures import save_capture

        track = next((t for t in live.tracks if t.id == self.selected), None)
        if track is None or track.id not in live.inputs:
            self.log("the selected box is not in this frame any more; press s again")
            return
        x, y, w, h = track.box
        path = save_capture(self.captures, frame.image[y:y + h, x:x + w], live.inputs[track.id], label,
                            source="live", frame=frame.index, box=track.box, predicted=track.label,
                            confidence=track.confidence)
        self.saved += 1
        self.log(f"saved {path} as {'not a digit' if label == 10 else label}")

    def close(self) -> None:
        cv2.destroyAllWindows()


def _nearest_centre(live: LiveResult, shape: tuple[int, ...]) -> int | None:
    cy, cx = shape[0] / 2, shape[1] / 2
    seen = [t for t in live.tracks if t.id in live.inputs]
    if not seen:
        return None
    return min(seen, key=lambda t: (t.box[0] + t.box[2] / 2 - cx) ** 2 + (t.box[1] + t.box[3] / 2 - cy) ** 2).id


# -- stability -----------------------------------------------------------------------------------
def score_stability(results: list[LiveResult], truths: list, settle: int = 15, min_iou: float = 0.3) -> dict:
    """How good the stable readings of a synthetic video are. ``truths[i]`` is frame i's
    `digitlab.data.video.VideoFrame`. After the first ``settle`` frames, each number wholly in view and
    not under the hand (a *visible number-frame*) is

    - ``right`` when a stable reading has its exact text and overlaps it (IoU >= ``min_iou``);
    - ``wrong`` when it is not right but some stable reading touches it (IoU > 0: a number shown short
      of a digit, or split in two, counts here, not as unseen);
    - ``missed`` when no stable reading touches it.

    ``right_rate = right / visible`` is the headline (what a user sees); ``correct = right / (right +
    wrong)`` the accuracy of what is shown, ``coverage = (right + wrong) / visible``. ``false_readings``
    counts stable readings that touch no number at all (hidden ones included). ``flips`` counts changes
    of the text shown for a number between consecutive frames in which it is right or wrong."""
    visible = right = wrong = flips = false = 0
    last_text: dict[int, str] = {}
    wrong_examples: list[dict] = []
    for res, truth in zip(results, truths, strict=True):
        if res.frame < settle:
            continue
        for n in res.numbers:
            if not any(iou(tuple(n["box"]), t.box) > 0 for t in truth.numbers):
                false += 1
        for k, number in enumerate(truth.numbers):
            if not number.visible:
                last_text.pop(k, None)  # a hidden number may come back read afresh: not a flip
                continue
            visible += 1
            touching = [n for n in res.numbers if iou(tuple(n["box"]), number.box) > 0]
            if not touching:
                last_text.pop(k, None)
                continue
            ok = any(n["text"] == number.text and iou(tuple(n["box"]), number.box) >= min_iou for n in touching)
            shown = " ".join(n["text"] for n in sorted(touching, key=lambda n: n["box"][0]))
            if ok:
                right += 1
                shown = number.text
            else:
                wrong += 1
                if len(wrong_examples) < 10:
                    wrong_examples.append({"frame": res.frame, "truth": number.text, "read": shown})
            if k in last_text and last_text[k] != shown:
                flips += 1
            last_text[k] = shown
    shown_frames = right + wrong
    return {"frames": len(results), "settle": settle, "number_frames_visible": visible, "right": right,
            "wrong": wrong, "missed": visible - shown_frames, "false_readings": false,
            "right_rate": right / visible if visible else 0.0,
            "correct": right / shown_frames if shown_frames else 0.0,
            "coverage": shown_frames / visible if visible else 0.0,
            "flips": flips, "flip_rate": flips / shown_frames if shown_frames else 0.0,
            "wrong_examples": wrong_examples}
