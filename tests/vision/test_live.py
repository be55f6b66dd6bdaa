"""Sources, the live loop, its outputs, and the stability of its readings on the synthetic camera."""

import json
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from digitlab.errors import DigitlabError
from digitlab.vision.live import LiveReader, has_display, run_live, score_stability
from digitlab.vision.sources import (
    CameraSource,
    Frame,
    ImageSource,
    Prefetch,
    Source,
    SyntheticSource,
    VideoSource,
    open_source,
)


@pytest.fixture(scope="module")
def reader_factory():
    from digitlab.vision.live import LiveConfig
    from digitlab.vision.recognizer import Recognizer

    cfg = LiveConfig()
    rec = Recognizer(None, cfg.pipeline)

    def make():
        return LiveReader(config=cfg, recognizer=rec)

    return make


def test_synthetic_video_reads_stably(reader_factory):
    source = SyntheticSource(seed=1, frames=75)
    reader = reader_factory()
    results, truths = [], []
    for frame in source:
        results.append(reader.process(frame))
        truths.append(frame.truth)
    score = score_stability(results, truths, settle=15)
    assert score["right"] + score["wrong"] + score["missed"] == score["number_frames_visible"] > 80
    assert score["right_rate"] >= 0.95, score["wrong_examples"]
    assert score["correct"] >= 0.99 and score["flip_rate"] < 0.01 and score["false_readings"] == 0
    assert any(not n.visible for t in truths for n in t.numbers), "the hand never passed"


def test_tracks_keep_their_ids_while_the_camera_moves(reader_factory):
    reader = reader_factory()
    results = [reader.process(f) for f in SyntheticSource(seed=1, frames=45, hand=False)]
    stable = [{t.id for t in r.tracks if t.state == "stable"} for r in results]
    assert len(stable[10]) == 8 and stable[10] == stable[-1]  # one track per digit, start to end
    assert sum(t.flips for t in results[-1].tracks) == 0


def test_headless_live_writes_playable_mp4_and_json_lines(tmp_path):
    out = tmp_path / "live.mp4"
    proc = subprocess.run([sys.executable, "-m", "digitlab", "live", "--synthetic", "--max-frames", "20",
                           "--out", str(out), "--json", "--seed", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [rec["frame"] for rec in lines] == list(range(20))
    assert all(set(rec) == {"frame", "t", "numbers", "tracks", "ms"} for rec in lines)
    assert lines[-1]["t"] == pytest.approx(19 / 30, abs=1e-3)
    assert all({"id", "box", "label", "confidence", "state"} <= set(t) for rec in lines for t in rec["tracks"])
    assert any(rec["numbers"] for rec in lines[10:]), "nothing became stable in 20 frames"
    for rec in lines:
        for n in rec["numbers"]:
            assert n["text"].isdigit() and len(n["box"]) == 4
    if not has_display():
        assert "headless" in proc.stderr
    cap = cv2.VideoCapture(str(out))
    frames = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames += 1
        assert img.shape[1] == 640 and img.shape[0] > 480  # status band, frame, debug strip
    assert frames == 20
    assert not list(tmp_path.glob("*.partial*"))


def test_missing_camera_and_bad_video_fail_cleanly(tmp_path):
    with pytest.raises(DigitlabError, match="no camera at index 97"):
        CameraSource(97, reconnect=0)
    with pytest.raises(DigitlabError, match="no such video"):
        VideoSource(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    with pytest.raises(DigitlabError, match="not a video"):
        VideoSource(bad)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DigitlabError, match="empty"):
        VideoSource(empty)
    with pytest.raises(DigitlabError, match="exactly one source"):
        open_source(camera=0, synthetic=True)
    proc = subprocess.run([sys.executable, "-m", "digitlab", "live", "--video", str(bad), "--no-window"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a video" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "digitlab", "live", "--camera", "97", "--no-window"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no camera at index 97" in proc.stderr and "Traceback" not in proc.stderr


def test_video_and_image_sources_round_trip(tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (160, 120))
    for i in range(12):
        img = np.full((120, 160, 3), 20 * i, np.uint8)
        writer.write(img)
    writer.release()
    src = VideoSource(video)
    frames = list(src)
    src.close()
    assert len(frames) == 12 and src.fps == pytest.approx(25.0)
    assert [f.index for f in frames] == list(range(12))
    assert frames[5].t == pytest.approx(5 / 25)
    assert abs(float(frames[5].image.mean()) - 100) < 6  # lossy codec, but the right frame in order
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"{k}.png"), np.full((50, 60, 3), 80 * k, np.uint8))
    (folder / "broken.png").write_bytes(b"not a png")
    warnings = []
    frames = list(ImageSource(folder, log=warnings.append))
    assert [int(f.image.mean()) for f in frames] == [0, 80, 160]
    assert any("broken.png" in w for w in warnings)


class _Flaky(Source):
    """A 'camera' whose reader thread fails after three frames."""

    live = False

    def __iter__(self):
        for i in range(3):
            yield Frame(i, i / 10, np.zeros((8, 8, 3), np.uint8))
        raise DigitlabError("camera unplugged")


def test_prefetch_keeps_order_and_passes_errors_on():
    src = Prefetch(SyntheticSource(seed=0, frames=6, size=(240, 320)))
    assert [f.index for f in src] == list(range(6))
    src.close()
    got = []
    with pytest.raises(DigitlabError, match="unplugged"):
        for f in Prefetch(_Flaky()):
            got.append(f.index)
    assert got == [0, 1, 2]


class _FastCamera(Source):
    """A live source that produces frames faster than they are consumed."""

    live = True

    def __iter__(self):
        for i in range(40):
            time.sleep(0.001)
            yield Frame(i, i / 1000, np.zeros((4, 4, 3), np.uint8))


def test_prefetch_drops_stale_frames_of_a_live_source():
    src = Prefetch(_FastCamera())
    seen = []
    for f in src:
        seen.append(f.index)
        time.sleep(0.01)
    assert seen == sorted(seen) and seen[-1] == 39
    assert src.dropped > 0 and len(seen) < 40


def test_run_live_stops_at_max_frames_and_counts(reader_factory, tmp_path):
    lines = []

    class Out:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    stats = run_live(SyntheticSource(seed=3, frames=50, size=(240, 320)), reader_factory(), json_out=Out(),
                     max_frames=7)
    assert stats.frames == 7 and len(lines) == 7 and len(stats.ms) == 7


class _FakeCapture:
    """Stands in for cv2.VideoCapture: ``plan`` says, per opening, how many frames it gives (None: fails to open)."""

    openings: list = []

    def __init__(self, index):
        self.frames = _FakeCapture.openings.pop(0) if _FakeCapture.openings else None

    def isOpened(self):
        return self.frames is not None

    def read(self):
        if self.frames:
            self.frames -= 1
            return True, np.zeros((6, 8, 3), np.uint8)
        return False, None

    def get(self, prop):
        return 30.0

    def set(self, prop, value):
        return True

    def release(self):
        pass


def test_camera_reconnects_then_gives_up_with_a_clear_message(monkeypatch):
    import digitlab.vision.sources as S

    monkeypatch.setattr(S.cv2, "VideoCapture", _FakeCapture)
    logs = []
    # opens with 2 frames, drops; reopening fails once, then works with 3 frames; then never again
    _FakeCapture.openings = [2, None, 3]
    cam = CameraSource(0, reconnect=2, retry_delay=0.0, log=logs.append)
    got = []
    with pytest.raises(DigitlabError, match="stopped delivering frames.*2 attempts"):
        for f in cam:
            got.append(f.index)
    assert got == [0, 1, 2, 3, 4]
    # first drop: attempt 1/2 fails, 2/2 works; second drop: 1/2 and 2/2 fail
    assert [m.split("(")[1] for m in logs] == ["1/2)", "2/2)", "1/2)", "2/2)"]
    cam.close()


def test_overlay_colours_say_stable_tentative_rejected(reader_factory):
    from digitlab.vision.overlay import GREEN, ORANGE, RED, annotate_live

    reader = reader_factory()
    src = SyntheticSource(seed=5, frames=8, size=(240, 320), hand=False)
    lives = [reader.process(f) for f in src]
    first, last = lives[0], lives[-1]
    assert all(t.state == "tentative" for t in first.tracks)
    assert any(t.state == "stable" for t in last.tracks)

    a = annotate_live(src.video.frame(0).image, first)
    b = annotate_live(src.video.frame(7).image, last)
    assert a.shape[0] > 240 + 64 and a.shape[:2] == b.shape[:2]  # status band + frame + strip, always one size
    top = a.shape[0] - 240 - 64  # the status band's height (the strip is 64 px)
    assert a[:top].mean() < 60  # a dark band ...
    assert (a[:top] > 200).any()  # ... with the FPS line written on it

    def colours(img, box):
        x, y, w, h = box
        edge = img[y + top, x:x + w + 1]
        return {tuple(int(v) for v in px) for px in edge}

    t0 = first.tracks[0]
    assert ORANGE in colours(a, t0.box)
    stable = next(t for t in last.tracks if t.state == "stable")
    assert GREEN in colours(b, stable.box)
    edge = (b[top + 240 + 3] != 40).any(axis=1)  # the strip's row of the tiles' top frame edges (band grey 40)
    tiles = int(np.sum(edge[1:] & ~edge[:-1]) + edge[0])
    shown = len(last.inputs) + len(last.result.rejected_inputs)
    assert len(last.inputs) >= 4 and tiles == min(shown, (320 - 4) // (56 + 6))  # as many as fit
    first.result.rejected_boxes.append((5, 5, 30, 30))
    first.result.rejected_inputs.insert(0, np.ones((28, 28), np.float32))
    first.inputs.clear()  # the rejected box's input is then the strip's first tile, framed red
    c = annotate_live(src.video.frame(0).image, first)
    assert RED in colours(c, (5, 5, 30, 30))
    strip = c[top + 240:]
    assert tuple(int(v) for v in strip[30, 3]) == RED and strip[10:50, 10:50].min() > 200


def test_window_keys_save_a_capture_that_review_and_load_read_back(reader_factory, tmp_path, monkeypatch):
    """s then a digit key in the window saves the box nearest the centre; x saves it as "not a digit"."""
    import digitlab.vision.live as L
    from digitlab.vision.captures import load_captures

    keys = iter([255, ord("s"), ord("7"), 255, ord("s"), 9, ord("x"), ord("q")])
    monkeypatch.setattr(L.cv2, "namedWindow", lambda *a, **k: None)
    monkeypatch.setattr(L.cv2, "imshow", lambda *a, **k: None)
    monkeypatch.setattr(L.cv2, "waitKey", lambda *a: next(keys))
    monkeypatch.setattr(L.cv2, "destroyAllWindows", lambda: None)
    monkeypatch.setattr(L.cv2, "getWindowProperty", lambda *a: 1.0)
    folder = tmp_path / "caps"
    stats = run_live(SyntheticSource(seed=1, frames=30, hand=False), reader_factory(), window=True,
                     captures=folder, log=lambda s: None)
    assert stats.frames == 8 and stats.captures == 2  # q on the 8th frame ends the run
    caps = load_captures(folder)
    assert caps.labels.tolist() == [7, 10]
    assert caps.inputs.shape == (2, 1, 28, 28) and caps.inputs.max() > 0.5
    assert all(c.ndim == 3 and min(c.shape[:2]) >= 15 for c in caps.crops)


def test_score_counts_short_and_split_readings_as_wrong():
    from types import SimpleNamespace as NS

    from digitlab.data.video import NumberInFrame

    truth = NS(numbers=(NumberInFrame("252", (100, 100, 90, 30), True, ()),
                        NumberInFrame("77", (100, 200, 60, 30), True, ())))

    def res(i, numbers):
        return NS(frame=i, numbers=numbers)

    results = [res(0, [{"text": "252", "box": [100, 100, 90, 30]}]),                       # right
               res(1, [{"text": "2", "box": [100, 100, 25, 30]}, {"text": "2", "box": [165, 100, 25, 30]}]),
               res(2, [{"text": "25", "box": [100, 100, 60, 30]}, {"text": "9", "box": [400, 10, 20, 30]}])]
    s = score_stability(results, [truth] * 3, settle=0)
    assert (s["right"], s["wrong"], s["missed"]) == (1, 2, 3)  # "77" never shown: missed three times
    assert s["false_readings"] == 1 and s["flips"] == 2
    assert s["right_rate"] == pytest.approx(1 / 6) and s["correct"] == pytest.approx(1 / 3)


def test_reuse_changes_no_reading_and_saves_model_calls(reader_factory):
    from digitlab.vision.live import LiveConfig

    frames = list(SyntheticSource(seed=4, frames=30, hand=False))
    base = reader_factory()
    fresh = LiveReader(config=LiveConfig(reuse_frames=0), recognizer=base.recognizer)
    with_reuse = [base.process(f).numbers for f in frames]
    without = [fresh.process(f).numbers for f in frames]
    assert [[n["text"] for n in x] for x in with_reuse] == [[n["text"] for n in x] for x in without]
    assert base.reused > 0.4 * (base.reused + base.classified) and fresh.reused == 0


def test_adaptive_resolution_follows_the_smallest_digit_and_reads_the_same(reader_factory):
    from digitlab.vision.live import LiveConfig

    frames = list(SyntheticSource(seed=2, frames=30, hand=False))
    adaptive = reader_factory()
    assert adaptive.working_side(frames[0].image.shape) == 640  # nothing tracked yet: full working size
    fixed = LiveReader(config=LiveConfig(adaptive=False), recognizer=adaptive.recognizer)
    sides, texts_a, texts_f = [], [], []
    for f in frames:
        texts_a.append([n["text"] for n in adaptive.process(f).numbers])
        sides.append(adaptive.side)
        texts_f.append([n["text"] for n in fixed.process(f).numbers])
        assert fixed.side == 640
        seen = [t.box[3] for t in adaptive.tracker.tracks if t.misses == 0]
        if seen:  # the next frame's scale keeps the smallest digit at least min_digit_px tall, or is the cap
            side = adaptive.working_side(f.image.shape)
            assert side % 32 == 0 and 320 <= side <= 640
            assert side == 640 or min(seen) * side / 640 >= adaptive.config.min_digit_px
    assert sides[0] == 640 and min(sides[1:]) < 640  # these digits are large: it works coarser
    assert texts_a[10:] == texts_f[10:] and all(texts_a[10:])  # ... and reads the same numbers


def test_debug_overlay_shows_the_stage_images(reader_factory):
    from digitlab.vision.overlay import STAGE_VIEWS, annotate_live

    reader = reader_factory()
    for frame in SyntheticSource(seed=1, frames=3, hand=False):
        live = reader.process(frame, debug=True)
    assert {k for k, _ in STAGE_VIEWS} <= set(live.result.debug)
    plain = annotate_live(frame.image, live)
    shown = annotate_live(frame.image, live, debug=True)
    assert shown.shape[1] == plain.shape[1] and shown.shape[0] > plain.shape[0]
    band = shown[plain.shape[0]:, 2 * shown.shape[1] // 3:]  # the binary mask's tile: ink on black
    assert (band > 200).mean() > 0.002 and (band < 10).mean() > 0.5
    assert not reader_factory().process(frame).result.debug  # without debug no stage images are kept


class _Frozen(Source):
    """A live camera whose driver hangs after one frame."""

    live = True

    def __init__(self):
        self.closed = threading.Event()

    def __iter__(self):
        yield Frame(0, 0.0, np.zeros((4, 4, 3), np.uint8))
        self.closed.wait(10)

    def close(self):
        self.closed.set()


def test_a_hanging_camera_is_reported_not_waited_on():
    src = Prefetch(_Frozen(), stall_seconds=0.3)
    t0 = time.perf_counter()
    with pytest.raises(DigitlabError, match="no frame for"):
        for _ in src:
            pass
    assert time.perf_counter() - t0 < 3
    src.close()


def test_frames_of_any_camera_format_become_bgr_uint8():
    from digitlab.vision.sources import as_bgr

    for img in (np.full((6, 8), 7, np.uint8), np.full((6, 8, 1), 7, np.uint8), np.full((6, 8, 4), 7, np.uint8),
                np.full((6, 8, 3), 7 * 257, np.uint16)):
        out = as_bgr(img)
        assert out.shape == (6, 8, 3) and out.dtype == np.uint8 and int(out[0, 0, 0]) == 7
