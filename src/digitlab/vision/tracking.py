"""Stable readings for a live camera: digit boxes tracked across frames, probabilities averaged, labels
shown with hysteresis.

A single frame's reading flickers: the same 7 is read as 1 in one frame in ten, a box is missed now and
then, and a number's text jumps with it. `Tracker` fixes that in three layers, each cheap enough for
every frame:

1. **Matching.** Each frame's boxes are matched to the live tracks greedily, best pair first: any pair
   whose IoU (against the track's box moved by its velocity) reaches ``iou_match`` comes before any pair
   matched only by centre distance, which must be within ``max_centre_dist`` box heights (fast motion
   or small boxes leave no overlap). Each box matches at most one track and vice versa.
2. **Averaging.** A track keeps an exponential moving average of the *class probabilities* (not the
   pixels: averaging probabilities is what a single misread frame cannot move far).
3. **Hysteresis.** A track is ``"tentative"`` until ``appear_frames`` frames agree (that frame's argmax
   is the same digit with probability >= ``appear_conf``; not necessarily in a row, so one misread
   early frame delays a digit by one frame, not by the average's memory) and the average leads with
   that digit too; then it is
   ``"stable"`` and shows its label. It keeps showing it while the averaged confidence stays above the
   lower ``hold_conf``; ``lost_frames`` frames in a row below it (none of them a confident reading of
   the label) take the label away (back to tentative). The shown label changes only when another
   digit leads the average for ``appear_frames`` frames in a row, so a true 7 read as 1 now and then
   is never shown as 1. A track
   with no box in a frame is ``"lost"`` (it keeps its label: one dropped detection must not blank the
   reading) and is removed at the ``lost_frames``-th miss in a row. A removed stable track is
   remembered for ``recall_frames`` frames, moving with the scene (the median shift of the matched
   boxes): a new track there whose first reading is confidently the same digit *is* that track again,
   with its id and its label at once, so a number uncovered by a passing hand is not re-scanned.

Numbers are stabilised one level up: the tracks showing a label are grouped with
`digitlab.vision.pipeline.group_numbers`, each number is matched to the previous frame's numbers by the
track ids it contains, and its shown text changes only after the new text was seen for
``number_frames`` frames in a row, except that a complete new number, or one that only gains newly
stable digits, is shown at once (see `Tracker._update_numbers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

import numpy as np

from digitlab.vision.pipeline import Digit, PipelineConfig, PipelineResult, group_numbers

Box = tuple[int, int, int, int]


@dataclass
class TrackerConfig:
    iou_match: float = 0.3          # a box overlapping a track's (predicted) box this much is the same digit
    max_centre_dist: float = 0.6    # ... otherwise its centre must be this close, in box heights
    ema: float = 0.6                # weight of the running average; a new frame gets 1 - ema
    appear_frames: int = 3          # agreeing frames before a label is shown, or before it changes
    appear_conf: float = 0.7        # a frame agrees only when its probability reaches this
    hold_conf: float = 0.5          # a shown label is kept while the averaged confidence stays above this
    lost_frames: int = 5            # frames without a box (or below hold_conf) before a track goes
    number_frames: int = 3          # frames a number's new text must be seen before it is shown
    velocity: float = 0.5           # smoothing of the per-frame motion used to predict a track's box
    num_classes: int = 11           # probability vectors are padded to this (10 digits + "not a digit")
    hide_incomplete: bool = True    # a shown number with a digit being read beside it is hidden meanwhile
    recall_frames: int = 90         # a stable track that goes is remembered this long (moving with the
                                    # scene): a digit back from under a hand, read the same, is shown at once


@dataclass
class Track:
    """One digit followed across frames. ``label`` is the *shown* label (None while tentative) and
    ``confidence`` the averaged probability of it (of the leading digit while none is shown)."""

    id: int
    box: Box
    probs: np.ndarray
    label: int | None
    confidence: float
    state: str  # "tentative" | "stable" | "lost"
    age: int = 1      # frames since the track was created, this one included
    hits: int = 1     # frames with a matching box
    misses: int = 0   # frames in a row without one
    flips: int = 0    # times the *shown* label changed from one digit to another
    votes: np.ndarray = field(default_factory=lambda: np.zeros(10, np.int64), repr=False)
    challenger: int | None = field(default=None, repr=False)
    challenger_run: int = field(default=0, repr=False)
    weak: int = field(default=0, repr=False)   # matched frames in a row below hold_conf
    tentative_since: int = field(default=0, repr=False)  # tracker frame it was created or lost its label
    velocity: tuple[float, float] = field(default=(0.0, 0.0), repr=False)

    @property
    def shown(self) -> bool:
        """Whether the track currently shows a label (stable, or stable before a few missed frames)."""
        return self.label is not None

    def to_json(self) -> dict:
        return {"id": self.id, "box": list(self.box), "label": self.label,
                "confidence": round(float(self.confidence), 4), "state": self.state}


@dataclass
class _Ghost:
    """A stable track that went (see `TrackerConfig.recall_frames`); ``x, y`` move with the scene."""

    id: int
    label: int
    box: Box
    probs: np.ndarray
    since: int
    x: float = 0.0
    y: float = 0.0

    def __post_init__(self) -> None:
        self.x, self.y = float(self.box[0]), float(self.box[1])


@dataclass
class _NumberTrack:
    ids: frozenset[int]
    box: Box
    text: str | None          # shown text (None until seen for number_frames frames)
    pending: str
    pending_run: int
    line: int = 0             # text line index from group_numbers, for reading order
    shrunk: bool = False      # its shown text lost digits (hidden, gone): it is not the whole number
    shown_ids: frozenset[int] = frozenset()  # the tracks its shown text was read from


def iou(a: Box | tuple[float, ...], b: Box | tuple[float, ...]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def _beside(box: Box, number: Box, line_overlap: float, gap: float) -> bool:
    """Whether ``box`` would join ``number`` in `group_numbers`: on its text line and within the gap."""
    overlap = min(box[1] + box[3], number[1] + number[3]) - max(box[1], number[1])
    if overlap < line_overlap * min(box[3], number[3]):
        return False
    height = number[3]
    return box[0] <= number[0] + number[2] + gap * height and box[0] + box[2] >= number[0] - gap * height


def probs_from_top3(top3: list[tuple[int, float]], num_classes: int = 10) -> np.ndarray:
    """A full probability vector from a digit's top-3 ``(label, p)``: the pipeline keeps only those, so
    the remaining mass ``1 - sum(p)`` is spread evenly over the other classes. This loses nothing that
    matters for tracking (the argmax and its probability are exact) and keeps the vector a distribution."""
    probs = np.zeros(num_classes, np.float64)
    for k, p in top3:
        probs[int(k)] = float(p)
    rest = max(0.0, 1.0 - float(probs.sum()))
    others = [i for i in range(num_classes) if i not in {int(k) for k, _ in top3}]
    if others:
        probs[others] = rest / len(others)
    return probs


def match(tracks: list[Track], boxes: list[Box], cfg: TrackerConfig) -> list[tuple[int, int]]:
    """Greedy matching, best pair first: ``(track index, box index)`` pairs. IoU pairs (against each
    track's box moved by its velocity) rank above every centre-distance pair, so a box is taken by the
    track that overlaps it rather than by a neighbour that is merely near."""
    if not tracks or not boxes:
        return []
    # every (track, box) pair at once: IoU and centre distance matrices, rows = tracks
    steps = np.array([t.misses + 1 for t in tracks], np.float64)
    tb = np.array([t.box for t in tracks], np.float64)
    vel = np.array([t.velocity for t in tracks], np.float64)
    px, py = tb[:, 0] + vel[:, 0] * steps, tb[:, 1] + vel[:, 1] * steps  # each track's box moved on
    pw, ph = tb[:, 2], tb[:, 3]
    b = np.array(boxes, np.float64)
    bx, by, bw, bh = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    ix = np.minimum((px + pw)[:, None], (bx + bw)[None]) - np.maximum(px[:, None], bx[None])
    iy = np.minimum((py + ph)[:, None], (by + bh)[None]) - np.maximum(py[:, None], by[None])
    inter = np.where((ix > 0) & (iy > 0), ix * iy, 0.0)
    union = (pw * ph)[:, None] + (bw * bh)[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = np.where(union > 0, inter / union, 0.0)
    height = np.maximum((ph[:, None] + bh[None]) / 2, 1e-9)
    dist = np.hypot((bx + bw / 2)[None] - (px + pw / 2)[:, None],
                    (by + bh / 2)[None] - (py + ph / 2)[:, None]) / height
    by_iou = overlap >= cfg.iou_match
    score = np.where(by_iou, 1.0 + overlap, 1.0 - dist / (cfg.max_centre_dist + 1e-9))
    valid = by_iou | (dist <= cfg.max_centre_dist)
    ti_all, bi_all = np.nonzero(valid)  # row-major: the order the pairs were listed in before sorting
    pairs = list(zip(score[ti_all, bi_all].tolist(), ti_all.tolist(), bi_all.tolist(), strict=True))
    pairs.sort(key=lambda p: -p[0])
    used_t: set[int] = set()
    used_b: set[int] = set()
    out = []
    for _, ti, bi in pairs:
        if ti in used_t or bi in used_b:
            continue
        used_t.add(ti)
        used_b.add(bi)
        out.append((ti, bi))
    return out


class Tracker:
    """Follows digit boxes across the frames of a video and shows only stable readings (see the module
    docstring for the rules). Feed it every frame with `update` (boxes and probability vectors) or
    `update_result` (a `PipelineResult`); read `stable_numbers` or `to_json` after each."""

    def __init__(self, config: TrackerConfig | None = None, pipeline_config: PipelineConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.pipeline_config = pipeline_config or PipelineConfig()
        self.tracks: list[Track] = []
        self.frame = 0
        self._next_id = 0
        self._numbers: list[_NumberTrack] = []
        self._ghosts: list[_Ghost] = []  # stable tracks gone recently, for `recall_frames`

    # -- digits ----------------------------------------------------------------------------------
    def _vector(self, probs: np.ndarray) -> np.ndarray:
        p = np.asarray(probs, np.float64).ravel()
        n = self.config.num_classes
        if len(p) > n:
            raise ValueError(f"probability vector of {len(p)} classes, TrackerConfig.num_classes is {n}")
        if len(p) < 10:
            raise ValueError(f"probability vector of {len(p)} classes: need at least the 10 digits")
        if len(p) == n:
            return np.array(p, np.float64)  # a copy: the caller's array may change
        out = np.zeros(n, np.float64)
        out[:len(p)] = p
        return out

    def update(self, detections: list[tuple[Box, np.ndarray]]) -> list[Track]:
        """One frame: detections are ``(box, class-probability vector)`` pairs (10 digits, optionally an
        11th "not a digit"); returns all live tracks (tentative, stable and lost)."""
        cfg = self.config
        self.frame += 1
        boxes = [tuple(int(v) for v in box) for box, _ in detections]
        vectors = [self._vector(p) for _, p in detections]
        pairs = match(self.tracks, boxes, cfg)  # type: ignore[arg-type]
        matched_t = {ti for ti, _ in pairs}
        matched_b = {bi for _, bi in pairs}
        self._move_ghosts([(self.tracks[ti].box, boxes[bi]) for ti, bi in pairs])
        for ti, bi in pairs:
            self._observe(self.tracks[ti], boxes[bi], vectors[bi])  # type: ignore[arg-type]
        survivors = []
        for ti, t in enumerate(self.tracks):
            if ti not in matched_t:
                t.age += 1
                t.misses += 1
                t.state = "lost"
                if t.misses >= cfg.lost_frames:
                    if t.label is not None and cfg.recall_frames > 0:
                        moved = (round(t.box[0] + t.velocity[0] * t.misses), round(t.box[1] + t.velocity[1] * t.misses),
                                 t.box[2], t.box[3])  # where its motion would have taken it meanwhile
                        self._ghosts.append(_Ghost(t.id, t.label, moved, t.probs.copy(), self.frame))
                    continue
            survivors.append(t)
        for bi, (box, p) in enumerate(zip(boxes, vectors, strict=True)):
            if bi not in matched_b:
                survivors.append(self._new_track(box, p))  # type: ignore[arg-type]
        self.tracks = survivors
        self._update_numbers()
        return list(self.tracks)

    def update_result(self, result: PipelineResult) -> list[Track]:
        """One frame from the pipeline: its digits' boxes with their full probability vectors (rebuilt from
        ``top3`` by `probs_from_top3` for a digit that carries none; rejected boxes are not passed on)."""
        return self.update([(d.box, d.probs if d.probs is not None else probs_from_top3(d.top3, 10))
                            for d in result.digits])

    def _new_track(self, box: Box, p: np.ndarray) -> Track:
        t = Track(self._next_id, box, p.copy(), None, 0.0, "tentative", age=0, hits=0, tentative_since=self.frame)
        self._next_id += 1
        self._observe(t, box, p, first=True)
        if t.label is None:
            self._recall(t, p)
        return t

    def _move_ghosts(self, moves: list[tuple[Box, Box]]) -> None:
        """Move the remembered tracks with the scene (the median shift of this frame's matched boxes) and
        forget those older than ``recall_frames``."""
        cfg = self.config
        self._ghosts = [g for g in self._ghosts if self.frame - g.since <= cfg.recall_frames]
        if not self._ghosts or not moves:
            return
        dx = float(median([(b[0] + b[2] / 2) - (a[0] + a[2] / 2) for a, b in moves]))  # (a short list:
        dy = float(median([(b[1] + b[3] / 2) - (a[1] + a[3] / 2) for a, b in moves]))  # ~20x np.median's speed)
        for g in self._ghosts:
            g.x += dx
            g.y += dy

    def _recall(self, t: Track, p: np.ndarray) -> None:
        """A new track where a stable one went recently, read confidently as the same digit, is that track
        back (its id, its label at once): a number uncovered by a passing hand is not read afresh."""
        cfg = self.config
        label = int(np.argmax(p[:10]))
        if float(p[label]) < cfg.appear_conf:
            return
        best, best_iou = None, cfg.iou_match
        for g in self._ghosts:
            if g.label != label or any(other.id == g.id for other in self.tracks):
                continue
            overlap = iou((g.x, g.y, g.box[2], g.box[3]), t.box)
            if overlap >= best_iou:
                best, best_iou = g, overlap
        if best is None:
            return
        self._ghosts.remove(best)
        t.id = best.id
        t.label = label
        t.probs = cfg.ema * best.probs + (1 - cfg.ema) * p
        t.state = "stable"
        t.confidence = float(t.probs[label])

    def _observe(self, t: Track, box: Box, p: np.ndarray, first: bool = False) -> None:
        """Fold one matched frame into a track and apply the hysteresis rules."""
        cfg = self.config
        if not first:
            old_c = (t.box[0] + t.box[2] / 2, t.box[1] + t.box[3] / 2)
            new_c = (box[0] + box[2] / 2, box[1] + box[3] / 2)
            steps = t.misses + 1
            a = cfg.velocity
            t.velocity = (a * t.velocity[0] + (1 - a) * (new_c[0] - old_c[0]) / steps,
                          a * t.velocity[1] + (1 - a) * (new_c[1] - old_c[1]) / steps)
            t.probs = cfg.ema * t.probs + (1 - cfg.ema) * p
        t.box = box
        t.age += 1
        t.hits += 1
        t.misses = 0
        frame_label = int(np.argmax(p[:10]))
        # the average leads with "not a digit" -> no digit leads it at all
        avg_label = int(np.argmax(t.probs)) if int(np.argmax(t.probs)) < 10 else None
        lead_conf = float(t.probs[:10].max())

        if t.label is None:  # tentative: collect agreeing frames
            if float(p[frame_label]) >= cfg.appear_conf:
                t.votes[frame_label] += 1
            best = int(np.argmax(t.votes))
            if t.votes[best] >= cfg.appear_frames and avg_label == best and lead_conf >= cfg.hold_conf:
                t.label = best
                t.weak = 0
                t.challenger, t.challenger_run = None, 0
        else:  # stable: hold, or change label only after a challenger leads k frames in a row
            # weak: the average is below hold_conf and this frame does not confidently show the label
            # either (a clean frame after a burst of misreads proves the digit is still there)
            agrees = frame_label == t.label and float(p[frame_label]) >= cfg.appear_conf
            if (lead_conf < cfg.hold_conf or avg_label is None) and not agrees:
                t.weak += 1
            else:
                t.weak = 0
            if avg_label is not None and avg_label != t.label and lead_conf >= cfg.hold_conf:
                t.challenger_run = t.challenger_run + 1 if t.challenger == avg_label else 1
                t.challenger = avg_label
                if t.challenger_run >= cfg.appear_frames:
                    t.label = avg_label
                    t.flips += 1
                    t.challenger, t.challenger_run = None, 0
            else:
                t.challenger, t.challenger_run = None, 0
            if t.weak >= cfg.lost_frames:  # confidence gone for good: the label disappears
                t.label = None
                t.votes[:] = 0
                t.tentative_since = self.frame
                t.weak = 0
        t.state = "stable" if t.label is not None else "tentative"
        t.confidence = float(t.probs[t.label]) if t.label is not None else lead_conf

    # -- numbers ---------------------------------------------------------------------------------
    def _update_numbers(self) -> None:
        """Group the tracks showing a label into numbers, match them to the last frame's numbers by the
        track ids they share, and decide each number's shown text:

        * a number appears as soon as it is *complete*: no tentative track seen this frame beside it on
          its line, tentative for fewer than ``3 * appear_frames`` frames. Its digits already passed their
          own hysteresis, and a digit still being read (or one that just lost its label) must not make it
          show a truncated text first; a lasting non-digit beside it only delays it that long;
        * a change that only *adds* digits (every old track still in it, the number complete) is shown at
          once, for the same reason;
        * any other change (a digit gone, numbers split or joined) is shown only after the new text was
          seen for ``number_frames`` frames in a row;
        * a shown number that becomes incomplete (a digit is being read beside it: one coming back from
          under a hand, say) is hidden until it is complete again (with ``hide_incomplete``; always when
          its text had lost digits): for those few frames its text would be a wrong reading.
        """
        cfg = self.pipeline_config
        shown = [t for t in self.tracks if t.label is not None]
        digits = [Digit(t.box, int(t.label or 0), t.confidence, [(int(t.label or 0), t.confidence)],
                        np.zeros((0, 0), np.float32)) for t in shown]
        id_of = {id(d): t.id for d, t in zip(digits, shown, strict=True)}
        numbers = group_numbers(digits, cfg) if digits else []
        patience = 3 * self.config.appear_frames  # a box unread for longer is not a digit being read
        reading = [t for t in self.tracks if t.label is None and t.misses == 0
                   and self.frame - t.tentative_since < patience]
        current = [(frozenset(id_of[id(d)] for d in n.digits), n.box, n.text, n.line,
                    not any(_beside(t.box, n.box, cfg.line_overlap, cfg.number_gap) for t in reading))
                   for n in numbers]
        pairs: list[tuple[float, int, int]] = []
        for oi, old in enumerate(self._numbers):
            for ci, (ids, box, *_rest) in enumerate(current):
                jac = len(old.ids & ids) / len(old.ids | ids)
                score = jac if jac > 0 else 0.5 * iou(old.box, box)
                if score > 0:
                    pairs.append((score, oi, ci))
        pairs.sort(key=lambda p: -p[0])
        used_o: set[int] = set()
        used_c: set[int] = set()
        updated: list[_NumberTrack] = []
        k = self.config.number_frames
        for _, oi, ci in pairs:
            if oi in used_o or ci in used_c:
                continue
            used_o.add(oi)
            used_c.add(ci)
            old = self._numbers[oi]
            ids, box, text, line, complete = current[ci]
            grows = old.ids <= ids
            old_ids = old.ids
            old.ids, old.box, old.line = ids, box, line
            if not complete and not (grows and old_ids != ids) and (old.shrunk or self.config.hide_incomplete):
                # digits it lost are being read again beside it (the hand moved away): a short text would
                # now be a wrong reading of a number in full view, so show nothing until it is complete
                old.text, old.pending, old.pending_run = None, text, 0
                updated.append(old)
                continue
            if text == old.text:
                old.pending, old.pending_run, old.shown_ids = text, 0, ids
                updated.append(old)
                continue
            old.pending_run = old.pending_run + 1 if text == old.pending else 1
            old.pending = text
            if old.text is None:
                if complete:
                    old.shrunk = old.shrunk and ids <= old.shown_ids
                    old.text, old.pending_run, old.shown_ids = text, 0, ids
            elif (complete and grows and old_ids != ids) or old.pending_run >= k:
                old.shrunk = ids < old.shown_ids or (old.shrunk and ids <= old.shown_ids)
                old.text, old.pending_run, old.shown_ids = text, 0, ids
            updated.append(old)
        for ci, (ids, box, text, line, complete) in enumerate(current):
            if ci not in used_c:
                updated.append(_NumberTrack(ids, box, text if complete else None, text, 1, line,
                                            shown_ids=ids if complete else frozenset()))
        self._numbers = updated

    def stable_numbers(self) -> list[dict]:
        """``[{"text", "box": [x, y, w, h]}]`` of the numbers whose text is stable, in reading order
        (lines top to bottom, left to right)."""
        shown = [n for n in self._numbers if n.text is not None]
        shown.sort(key=lambda n: (n.line, n.box[0]))
        return [{"text": n.text, "box": list(n.box)} for n in shown]

    def to_json(self) -> list[dict]:
        """``[{"id", "box", "label", "confidence", "state"}]`` of every live track."""
        return [t.to_json() for t in self.tracks]
