"""Where frames come from: a camera, a video file, an image or a folder of images, or the synthetic
camera, all behind one iterator of timestamped frames.

Every source yields `Frame` objects (index, seconds since the start, a BGR uint8 image and, for the
synthetic camera only, the truth) and is closed by ``close()`` or a ``with`` block. What can go wrong
at the start (no camera at that index, a file that is missing or is no video) raises a `DigitlabError`
that says what to do; a live camera that stops delivering frames is reopened a few times
(``reconnect`` attempts, ``retry_delay`` apart) before the source gives up with a clear message.

`Prefetch` wraps any source in a reader thread, so that capture (decoding, waiting for the camera)
overlaps with recognition. For a live camera it keeps only the newest frame (a reader that falls behind
must skip frames, not lag ever further behind); for files it keeps them all, in order.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from digitlab.errors import DigitlabError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Frame:
    index: int
    t: float              # seconds since the first frame (the video's own clock for files)
    image: np.ndarray     # BGR uint8
    truth: object = None  # the synthetic camera's `digitlab.data.video.VideoFrame`, else None


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A camera or file frame as 3-channel BGR uint8 (gray, single-channel, BGRA, 16-bit all occur)."""
    if image.dtype != np.uint8:
        from digitlab.vision.pipeline import to_uint8

        image = to_uint8(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class Source:
    """Base class: iterate for frames; ``fps`` is the nominal rate (None when unknown); ``live`` says
    whether frames are produced in real time (a camera) rather than read from storage."""

    fps: float | None = None
    live: bool = False
    name: str = "source"

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CameraSource(Source):
    """A camera by index (``cv2.VideoCapture(index)``)."""

    live = True

    def __init__(self, index: int = 0, reconnect: int = 3, retry_delay: float = 0.5,
                 size: tuple[int, int] | None = None, log=None) -> None:
        self.index, self.reconnect, self.retry_delay, self.size = int(index), int(reconnect), float(retry_delay), size
        self.name = f"camera {index}"
        self.log = log or (lambda s: print(f"digitlab: {s}", file=sys.stderr, flush=True))
        self.cap = self._open()
        if self.cap is None:
            raise DigitlabError(f"no camera at index {index}: is one connected and free (not used by another "
                                "program)? Try another --camera N, or read a file with --video PATH")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None

    def _open(self):
        cap = cv2.VideoCapture(self.index)
        if not cap.isOpened():
            cap.release()
            return None
        if self.size:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[1])
        return cap

    def __iter__(self) -> Iterator[Frame]:
        start, i = time.perf_counter(), 0
        while self.cap is not None:
            ok, img = self.cap.read()
            if not ok or img is None:
                if not self._reopen():
                    raise DigitlabError(f"{self.name} stopped delivering frames and could not be reopened "
                                        f"after {self.reconnect} attempts (unplugged?)")
                continue
            yield Frame(i, time.perf_counter() - start, as_bgr(img))
            i += 1

    def _reopen(self) -> bool:
        if self.cap is not None:
            self.cap.release()
        for attempt in range(1, self.reconnect + 1):
            self.log(f"{self.name}: no frame; reconnecting ({attempt}/{self.reconnect})")
            time.sleep(self.retry_delay)
            self.cap = self._open()
            if self.cap is not None:
                return True
        self.cap = None
        return False

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class VideoSource(Source):
    """A video file; ``t`` is the video's own clock (frame index / fps)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        if not self.path.is_file():
            raise DigitlabError(f"{self.path}: no such video file")
        if self.path.stat().st_size == 0:
            raise DigitlabError(f"{self.path}: the file is empty")
        self.cap = cv2.VideoCapture(str(self.path))
        opened = self.cap.isOpened()
        ok, first = self.cap.read() if opened else (False, None)
        if not ok or first is None:
            self.cap.release()
            if opened:
                raise DigitlabError(f"{self.path}: the video opens but has no frame OpenCV can decode (empty, or "
                                    "a codec this OpenCV build lacks; try converting it to MP4/H.264)")
            raise DigitlabError(f"{self.path}: not a video OpenCV can read (corrupt, truncated, or a codec this "
                                "OpenCV build lacks; try converting it to MP4/H.264)")
        self._first = first
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 30.0
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frames = count if count > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        i, img = 0, self._first
        while img is not None:
            yield Frame(i, i / self.fps, as_bgr(img))
            i += 1
            ok, img = self.cap.read()
            if not ok:
                break

    def close(self) -> None:
        self.cap.release()


class ImageSource(Source):
    """An image file, or a folder of images in name order, as frames ``1 / fps`` apart. Unreadable files
    are skipped with a warning (one bad photo must not stop a folder)."""

    def __init__(self, path: str | Path, fps: float = 10.0, repeat: int = 1, log=None) -> None:
        from digitlab.vision.cli import IMAGE_SUFFIXES

        self.path = Path(path)
        self.name = str(self.path)
        self.fps, self.repeat = float(fps), max(1, int(repeat))
        self.log = log or (lambda s: print(f"digitlab: warning: {s}", file=sys.stderr, flush=True))
        if self.path.is_dir():
            self.files = sorted(f for f in self.path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise DigitlabError(f"{self.path}: no images in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise DigitlabError(f"{self.path}: no such image file or folder")

    def __iter__(self) -> Iterator[Frame]:
        from digitlab.vision.cli import read_image

        i = 0
        for f in self.files:
            try:
                img = read_image(f)
            except DigitlabError as exc:
                self.log(str(exc))
                continue
            img = as_bgr(img)
            for _ in range(self.repeat):
                yield Frame(i, i / self.fps, img)
                i += 1


class SyntheticSource(Source):
    """The synthetic camera: a moving page (`digitlab.data.video.MovingPage`), with truth per frame."""

    def __init__(self, seed: int = 0, size: tuple[int, int] = (480, 640), frames: int = 150, fps: float = 30.0,
                 digits: int = 8, **kwargs) -> None:
        from digitlab.data.video import MovingPage

        self.video = MovingPage(seed, size=size, digits=digits, frames=frames, fps=fps, **kwargs)
        self.fps = float(fps)
        self.frames = int(frames)
        self.name = f"synthetic (seed {seed}, {size[1]}x{size[0]})"

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.frames):
            v = self.video.frame(i)
            yield Frame(i, v.t, v.image, v)


_END = object()


class Prefetch(Source):
    """Reads ``source`` in a background thread. Files: every frame, in order (a queue of ``depth``).
    Live sources: only the newest frame is kept, older unread ones are dropped (``dropped`` counts them).
    Errors in the reader thread are raised in the consumer."""

    def __init__(self, source: Source, depth: int = 4, stall_seconds: float = 5.0) -> None:
        self.source = source
        self.stall_seconds = float(stall_seconds)  # a live source silent this long is reported, not waited on
        self.fps, self.live, self.name = source.fps, source.live, source.name
        self.dropped = 0
        self._q: queue.Queue = queue.Queue(maxsize=1 if source.live else max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="digitlab-capture", daemon=True)
        self._thread.start()

    def _put(self, item) -> None:
        if self.source.live and isinstance(item, Frame):  # newest frame wins, at once
            while not self._stop.is_set():
                try:
                    self._q.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._q.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
            return
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                pass

    def _run(self) -> None:
        try:
            for frame in self.source:
                if self._stop.is_set():
                    break
                self._put(frame)
        except BaseException as exc:  # handed to the consumer
            self._put(exc)
        finally:  # the reader closes what it reads, so nothing is released under its feet
            self.source.close()
        self._put(_END)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            try:
                item = self._q.get(timeout=self.stall_seconds if self.live else None)
            except queue.Empty:
                raise DigitlabError(f"{self.name}: no frame for {self.stall_seconds:.0f} s (the camera hangs; "
                                    "unplug and replug it, or close other programs using it)") from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a reader waiting to put its last frame
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5.0)


def open_source(camera: int | None = None, video: str | Path | None = None, images: str | Path | None = None,
                synthetic: bool = False, seed: int = 0, frames: int | None = None,
                size: tuple[int, int] = (480, 640)) -> Source:
    """The source the command line asked for (exactly one of the four)."""
    chosen = [camera is not None, video is not None, images is not None, bool(synthetic)]
    if sum(chosen) != 1:
        raise DigitlabError("choose exactly one source: --camera N, --video PATH, --images PATH or --synthetic")
    if camera is not None:
        return CameraSource(camera)
    if video is not None:
        path = Path(video)
        if path.suffix.lower() not in VIDEO_SUFFIXES and path.is_file():
            from digitlab.vision.cli import IMAGE_SUFFIXES

            if path.suffix.lower() in IMAGE_SUFFIXES:
                raise DigitlabError(f"{path}: this is an image; use --images {path}")
        return VideoSource(path)
    if images is not None:  # one photo: shown for a few frames, so that its readings can become stable
        return ImageSource(images, repeat=1 if Path(images).is_dir() else 5)
    return SyntheticSource(seed, size=size, frames=frames or 150)
