"""Digits and non-digits as the recogniser really sees them: training data for the "not a digit" class.

MNIST digits are clean, centred and sharp; the 28x28 inputs the recogniser classifies on a photo are
not: they went through the camera (blur, noise, JPEG, shadows, small size) and the pipeline
(flattening, threshold, crop, stroke normalisation). A reject class trained only on clean MNIST as
its positives learns "blurred or thick means not a digit" and throws away small, blurred and thick
real digits. So this module renders synthetic camera pages (`digitlab.data.scenes`) with MNIST
**train** (or **val**, for calibration) digits, never test digits, runs the recogniser's own stages on
them and labels every candidate the pipeline offers (its splits and merges too) against the truth:

- ``digit``: the candidate is one true digit (each centre inside the other box, IoU >= `POSITIVE_IOU`):
  a positive with that digit's label;
- ``clutter``: it touches no true digit (ruled lines, grid marks, smudges, a finger, page edges);
- ``pair``: it holds the centres of two or more true digits (touching digits read as one);
- ``piece``: it lies inside one true digit but covers less than `PIECE_AREA` of it, and is not a tall
  thin stroke (which would be a fair 1): a fragment.

Anything else (a digit with a piece of its neighbour, a box half on a digit) is left out: no label fits.
Seeded: page ``i`` is ``render_scene(SeedSequence([seed, i, 7]), DIFFICULTIES[i % 4], source=...)``.
"""

from __future__ import annotations

import time

import numpy as np

KINDS = ("digit", "clutter", "pair", "piece")
POSITIVE_IOU = 0.6
PIECE_AREA = 0.5


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 1, 28, 28), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)


def _iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1)


def _inside(p, box) -> bool:
    return box[0] <= p[0] <= box[0] + box[2] and box[1] <= p[1] <= box[1] + box[3]


def _centre(box):
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def label_candidate(box, truth: list[tuple[tuple[int, int, int, int], int]]) -> tuple[int, int]:
    """(kind index into `KINDS`, digit label or -1) of a candidate box against the page's true digits;
    kind -1: no label fits (left out)."""
    overlaps = []
    for tbox, label in truth:
        ix = max(0, min(box[0] + box[2], tbox[0] + tbox[2]) - max(box[0], tbox[0]))
        iy = max(0, min(box[1] + box[3], tbox[1] + tbox[3]) - max(box[1], tbox[1]))
        if ix * iy > 0:
            overlaps.append((tbox, label, ix * iy))
    if not overlaps:
        return 1, -1
    centres = [t for t in overlaps if _inside(_centre(t[0]), box)]
    if len(centres) >= 2:
        return 2, -1
    if len(overlaps) == 1:
        tbox, label, inter = overlaps[0]
        if _inside(_centre(box), tbox) and _inside(_centre(tbox), box) and _iou(box, tbox) >= POSITIVE_IOU:
            return 0, label
        inside = inter >= 0.9 * box[2] * box[3]
        if inside and box[2] * box[3] < PIECE_AREA * tbox[2] * tbox[3] and box[3] <= 1.6 * box[2]:
            return 3, -1
    return -1, -1


def page_samples(image: np.ndarray, truth, cfg=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every candidate of one page the pipeline offers, as 28x28 inputs ``(n, 1, 28, 28)``, with its
    class (0-9 digit, 10 not a digit) and kind (`KINDS`); candidates no label fits are left out.
    ``truth``: ``[(box, label), ...]`` in the image's pixels."""
    from digitlab.vision import pipeline as P
    from digitlab.vision.recognizer import Recognizer, candidate_input

    cfg = cfg or P.PipelineConfig()
    found = P.find_candidates(image, cfg)  # the recogniser's own stages
    ink, scale, options = found.ink, found.scale, found.options
    height, width = image.shape[:2]
    seen, xs, ys, ks = set(), [], [], []
    for opts in options:
        for opt in opts:
            for c in opt:
                box = Recognizer._to_input_box(c, scale, cfg.pad, width, height)
                if box in seen:
                    continue
                seen.add(box)
                kind, label = label_candidate(box, truth)
                if kind < 0:
                    continue
                xs.append(candidate_input(ink, c, cfg))
                ys.append(label if kind == 0 else 10)
                ks.append(kind)
    if not xs:
        return _empty()
    return np.stack(xs)[:, None].astype(np.float32), np.array(ys, np.int64), np.array(ks, np.int64)


def page_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(i), 7]).generate_state(1)[0])


def make_pipeline_samples(pages: int, seed: int = 0, source: str = "train", cfg=None,
                          log=lambda s: None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pipeline inputs from ``pages`` synthetic camera pages of MNIST ``source`` digits (``train`` or
    ``val``; ``test`` only to measure), the four difficulties in turn: ``(x, y, kinds)`` as `page_samples`."""
    from digitlab.data.scenes import DIFFICULTIES, render_scene

    xs, ys, ks = [], [], []
    t0 = time.perf_counter()
    for i in range(pages):
        scene = render_scene(page_seed(seed, i), DIFFICULTIES[i % len(DIFFICULTIES)], source=source)
        x, y, k = page_samples(scene.image, [(d.box, d.label) for d in scene.digits], cfg)
        xs.append(x)
        ys.append(y)
        ks.append(k)
        if (i + 1) % 100 == 0 or i + 1 == pages:
            n = sum(len(v) for v in ys)
            log(f"pipeline samples ({source}): {i + 1}/{pages} pages, {n} inputs, {time.perf_counter() - t0:.0f} s")
    if not xs:
        return _empty()
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ks)
