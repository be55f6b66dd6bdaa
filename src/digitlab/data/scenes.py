"""Synthetic camera: photo-like pages of handwritten numbers with exact ground truth.

The recogniser (``digitlab.vision``) has to find and read numbers in camera photos, and its tests and
benchmark need many such photos whose every digit is known. Real photos cannot be labelled at that
scale, so this module fakes them: MNIST **test** digits (never seen in training, so a benchmark on
these pages measures generalisation) are written as dark ink on paper, and a camera's troubles are
added on top. Each digit's truth box is the tight box of its ink (alpha > `ALPHA_THRESHOLD`) after all
geometric transforms, so a recogniser can be scored by box overlap as well as by the text it reads.

Difficulty levels (`DIFFICULTIES`), each adding one kind of trouble to the *same* clean page (for one
seed, every level shows the same digits at the same places, so a benchmark can pin a drop in accuracy
on the trouble alone):

- ``clean``: off-white tinted paper with a faint low-frequency texture, ink digits; nothing else.
- ``lighting``: a strong linear or radial brightness gradient (down to ~35 % in one corner), a
  colour cast, and 1-2 soft-edged shadows that may fall across the digits.
- ``noise``: Gaussian blur (sigma 0.5-2, less for tiny digits), Gaussian sensor noise (sigma 3-12 grey
  levels, mostly luminance), JPEG at quality 30-75.
- ``clutter``: ruled lines or grid paper (they may pass behind the ink), smudges, sometimes a finger
  entering from an edge, and a mild perspective warp of the whole page (corners moved by up to 6 %),
  with the truth boxes recomputed from the warped ink. Smudges and the finger keep clear of the numbers.

Everything is seeded (``np.random.default_rng([seed, stream])``): the same seed gives the identical
image and truth. A 1000x1400 page takes a few tens of milliseconds (see ``python -m
digitlab.data.scenes --help`` for a preview sheet).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

DIFFICULTIES = ("clean", "lighting", "noise", "clutter")
MIN_HEIGHT, MAX_HEIGHT = 15, 200  # digit (truth box) heights in pixels
ALPHA_THRESHOLD = 0.2  # a pixel belongs to a digit's ink (and its box) where its alpha exceeds this
MAX_NUMBERS, MAX_DIGITS = 6, 12
MIN_SIZE = 32  # smallest page side render_scene accepts: one 15-px digit and its margins must fit
LOW = 4  # smooth fields (lighting, shadows, smudges, finger, paper texture) are drawn at 1/LOW resolution

Box = tuple[int, int, int, int]  # x, y, w, h

# ink reflectance per BGR channel (0 = absorbs all light): black, blue ballpoint, dark blue, pencil grey
INKS = np.array(
    [[0.10, 0.10, 0.12], [0.50, 0.22, 0.12], [0.40, 0.17, 0.10], [0.33, 0.32, 0.32]], np.float32
)
# paper tints (BGR multipliers): neutral, warm (yellowish), cool (bluish white), recycled (greyish cream)
PAPER_TINTS = np.array(
    [[1.0, 1.0, 1.0], [0.90, 0.97, 1.0], [1.0, 0.985, 0.955], [0.92, 0.95, 0.96]], np.float32
)
# skin tones (BGR, 0-255) for the finger
SKINS = np.array(
    [[165, 185, 228], [130, 160, 212], [100, 132, 184], [72, 100, 150], [50, 70, 108]], np.float32
)
# what a perspective warp shows beyond the page's edge: wooden desk, grey desk, dark cloth, white table
TABLES = ((60, 95, 140), (95, 96, 98), (40, 38, 42), (200, 204, 206))


@dataclass(frozen=True)
class DigitTruth:
    """One digit: its tight ink box in the scene's pixels, its label, and where it came from."""

    box: Box  # x, y, w, h in pixels of Scene.image: tight box of the digit's ink
    label: int  # 0-9
    index: int  # index into load_mnist("test") of the source digit


@dataclass(frozen=True)
class NumberTruth:
    """One number: its text (digits left to right), the union of its digit boxes, and its digits."""

    text: str
    box: Box
    digits: tuple[DigitTruth, ...]


@dataclass(frozen=True, eq=False)  # eq=False: comparing the image arrays with == would raise
class Scene:
    """A rendered page and its truth; ``numbers`` in reading order (lines top to bottom, then left to right)."""

    image: np.ndarray  # (H, W, 3) uint8, BGR like cv2.imread
    numbers: tuple[NumberTruth, ...]
    difficulty: str
    seed: int

    @property
    def digits(self) -> tuple[DigitTruth, ...]:
        """Every digit of the page, in reading order."""
        return tuple(d for n in self.numbers for d in n.digits)


# -- digits as ink ---------------------------------------------------------------------------------
SOURCES = ("test", "train", "val")  # MNIST split the digits come from: test for every benchmark and test


def _mnist_test() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST test images, labels and each image's ink box (x0, y0, x1, y1 where pixel > threshold)."""
    return _mnist("test")


@lru_cache(maxsize=3)
def _mnist(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST images of ``split``, labels and each image's ink box (x0, y0, x1, y1 where pixel > threshold).
    Only the recogniser's training data (`digitlab.data.pipeline_samples`) renders ``train``/``val`` digits."""
    from digitlab.data.mnist import load_mnist

    if split not in SOURCES:
        raise ValueError(f"unknown digit source {split!r}; choose one of {', '.join(SOURCES)}")
    data = load_mnist(split)
    ink = data.images > ALPHA_THRESHOLD * 255
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    n = ink.shape[1]
    y0, y1 = rows.argmax(1), n - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), ink.shape[2] - cols[:, ::-1].argmax(1)
    return data.images, data.labels, np.stack([x0, y0, x1, y1], 1)


def ink_box(alpha: np.ndarray, origin: tuple[int, int] = (0, 0), threshold: float = ALPHA_THRESHOLD) -> Box | None:
    """Tight box ``(x, y, w, h)`` of the pixels where ``alpha > threshold``, shifted by ``origin``
    (the alpha map's top-left corner on the page); None when there are none. This *defines* the truth
    box, so a recogniser is scored against exactly the ink a viewer sees."""
    ink = alpha > threshold
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        return None
    return (
        int(cols[0] + origin[0]), int(rows[0] + origin[1]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
    )


def digit_alpha(digit: np.ndarray, height: int) -> np.ndarray:
    """An MNIST digit (uint8, ink bright on black) as a float32 alpha map whose ink box is ``height`` px tall.

    The digit is cropped to its ink (keeping a 1-px fringe for anti-aliasing) and resized, INTER_AREA
    when shrinking and INTER_LINEAR when enlarging; enlarged strokes get a smoothstep on their edges so
    a 200-px digit looks written with a pen rather than a 10x-magnified blur. Because resampling shifts
    where the alpha crosses the threshold by a pixel or so, the patch height is walked until the measured
    box has the requested height (rarely, no patch height gives it: then the nearest, preferring one inside
    [MIN_HEIGHT, MAX_HEIGHT]). The map is trimmed to its visible fringe (alpha > 0.01).
    """
    d = np.asarray(digit, dtype=np.float32)
    if np.asarray(digit).dtype == np.uint8:
        d = d / 255
    ink = d > ALPHA_THRESHOLD
    ys, xs = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(ys):
        raise ValueError("digit_alpha: the digit has no ink")
    ink_h = ys[-1] - ys[0] + 1
    crop = d[max(ys[0] - 1, 0):ys[-1] + 2, max(xs[0] - 1, 0):xs[-1] + 2]
    aspect = crop.shape[1] / crop.shape[0]

    def render(rows: int) -> tuple[np.ndarray, int]:
        a = cv2.resize(crop, (max(1, round(rows * aspect)), rows),
                       interpolation=cv2.INTER_AREA if rows < crop.shape[0] else cv2.INTER_LINEAR)
        if rows > 1.5 * crop.shape[0]:
            t = np.clip((a - 0.08) * (1 / 0.72), 0, 1)
            a = t * t * (3 - 2 * t)
        box = ink_box(a)
        return a, box[3] if box else 0

    # walk the patch height towards the one whose ink box is `height` rows (box grows ~1 row per row)
    rows = max(1, round(height * crop.shape[0] / ink_h))
    best, best_key, step = None, None, 0
    for attempt in range(8):
        a, got = render(rows)
        key = (not MIN_HEIGHT <= got <= MAX_HEIGHT, abs(got - height))
        if best_key is None or key < best_key:
            best, best_key = a, key
        if got == height:
            break
        direction = 1 if got < height else -1
        if step and direction != step:  # stepped over it: no patch height gives exactly `height`
            break
        if attempt == 0 and got and abs(got - height) > 1:  # far off (sharpened edges): jump in proportion
            rows = max(1, round(rows * height / got))
            continue
        step = direction
        rows = max(1, rows + direction)
    vis = best > 0.01
    rows, cols = np.flatnonzero(vis.any(axis=1)), np.flatnonzero(vis.any(axis=0))
    return np.ascontiguousarray(best[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], dtype=np.float32)


def paste_digits(
    page: np.ndarray,
    alphas: Sequence[np.ndarray],
    origins: Sequence[tuple[int, int]],
    ink: np.ndarray | Sequence[float],
    strengths: Sequence[float] | float = 1.0,
) -> list[Box | None]:
    """Write digits onto a float32 BGR ``page`` (0-255), in place, as ink; return each digit's truth box.

    ``origins`` are the alpha maps' top-left corners (x, y) on the page; ``ink`` is a BGR reflectance in
    [0, 1] (one for all digits or one per digit), ``strengths`` how much light the ink takes (0.75-1 on
    the scenes). Ink darkens multiplicatively, ``page *= 1 - alpha * strength * (1 - ink)``: like real
    ink it keeps whatever lies beneath (texture, ruled lines, later the lighting) visible through it.
    Maps that stick out of the page are clipped; the box is of the part on the page.
    """
    n = len(alphas)
    inks = np.broadcast_to(np.asarray(ink, np.float32), (n, 3))
    strength = np.broadcast_to(np.asarray(strengths, np.float32), (n,))
    height, width = page.shape[:2]
    boxes: list[Box | None] = []
    for alpha, (x, y), colour, s in zip(alphas, origins, inks, strength, strict=True):
        x0, y0 = max(int(x), 0), max(int(y), 0)
        x1, y1 = min(int(x) + alpha.shape[1], width), min(int(y) + alpha.shape[0], height)
        if x1 <= x0 or y1 <= y0:
            boxes.append(None)
            continue
        a = alpha[y0 - int(y):y1 - int(y), x0 - int(x):x1 - int(x)]
        page[y0:y1, x0:x1] *= 1 - (a * s)[:, :, None] * (1 - colour)
        boxes.append(ink_box(a, (x0, y0)))
    return boxes


# -- layout ----------------------------------------------------------------------------------------
@dataclass
class _Number:
    """A number being laid out: its random draws are fixed, its nominal height ``h`` may shrink to fit."""

    index: np.ndarray  # MNIST test indices of its digits
    hj: np.ndarray  # per-digit height jitter (x h)
    bj: np.ndarray  # per-digit baseline jitter (x h)
    gf: np.ndarray  # gaps between digits (x h)
    strength: np.ndarray
    ink: np.ndarray
    h: float
    lead: float  # gap before it when it follows another number on its line (x the taller digit height)
    boff: float  # its baseline offset on the line (x the line's smallest digit height)
    # built from the above: alpha maps, their origins relative to (number start, baseline), ink boxes
    alphas: list[np.ndarray] = field(default_factory=list)
    origins: list[tuple[int, int]] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)

    def build(self, images: np.ndarray) -> None:
        heights = np.clip(np.round(self.h * self.hj), MIN_HEIGHT, MAX_HEIGHT).astype(int)
        gaps = np.maximum(2, np.round(self.gf * self.h)).astype(int)
        self.alphas, self.origins, self.boxes = [], [], []
        x = 0
        for j, idx in enumerate(self.index):
            a = digit_alpha(images[idx], int(heights[j]))
            bx, by, bw, bh = ink_box(a)
            bottom = round(self.bj[j] * self.h)  # the ink's bottom row + 1, relative to the baseline
            self.alphas.append(a)
            self.origins.append((x - bx, bottom - bh - by))
            self.boxes.append((x, bottom - bh, bw, bh))
            x += bw + (int(gaps[j]) if j < len(self.index) - 1 else 0)

    @property
    def width(self) -> int:
        return self.boxes[-1][0] + self.boxes[-1][2]

    @property
    def top(self) -> int:
        return min(b[1] for b in self.boxes)

    @property
    def bottom(self) -> int:
        return max(b[1] + b[3] for b in self.boxes)

    @property
    def tallest(self) -> int:
        return max(b[3] for b in self.boxes)

    @property
    def shortest(self) -> int:
        return min(b[3] for b in self.boxes)


def _line_geometry(line: list[_Number]) -> tuple[list[int], list[int], int, int, int]:
    """Per number: x offset (before free space is spread) and baseline offset; the line's width, top, bottom."""
    xs, offs, x = [], [], 0
    low = min(n.shortest for n in line)
    for k, n in enumerate(line):
        if k:
            x += round(n.lead * max(n.tallest, line[k - 1].tallest))
        xs.append(x)
        offs.append(round(n.boff * low))
        x += n.width
    top = min(n.top + o for n, o in zip(line, offs, strict=True))
    bottom = max(n.bottom + o for n, o in zip(line, offs, strict=True))
    return xs, offs, x, top, bottom


def _line_gap(a: list[_Number], b: list[_Number]) -> int:
    """Least vertical gap between two lines: enough that they never touch, even after a mild warp."""
    return max(6, round(0.35 * max(max(n.tallest for n in a), max(n.tallest for n in b))))


def _layout(rng: np.random.Generator, height: int, width: int, source: str = "test") -> list[list[_Number]]:
    """Draw 1-6 numbers of 1-12 digits, fit them on 1-3-number lines inside the page's margins and place
    them; returns the lines (top to bottom) of numbers (left to right), each number's boxes in page pixels.

    Heights are log-uniform in [15, 200] px (as many small numbers as big ones in ratio terms); a number
    that is too wide for the page shrinks (down to 15 px, then loses trailing digits), a line that would
    be too wide sends numbers to the next line, and a page that would be too tall shrinks every number
    (then drops trailing lines). Free space is spread randomly, so numbers are anywhere on the page.
    """
    images, _, _ = _mnist(source)
    my, mx = max(2, round(0.03 * height)), max(2, round(0.03 * width))
    avail_w, avail_h = width - 2 * mx, height - 2 * my
    pen = INKS[rng.integers(len(INKS))]
    numbers = []
    for _ in range(int(rng.integers(1, MAX_NUMBERS + 1))):
        k = int(rng.integers(1, MAX_DIGITS + 1))
        ink = pen if rng.random() < 0.75 else INKS[rng.integers(len(INKS))]
        numbers.append(_Number(
            index=rng.integers(0, len(images), k), hj=rng.uniform(0.92, 1.08, k), bj=rng.uniform(-0.03, 0.03, k),
            gf=rng.uniform(0.05, 0.40, k), strength=rng.uniform(0.75, 1.0, k), ink=ink,
            h=float(np.exp(rng.uniform(np.log(MIN_HEIGHT), np.log(MAX_HEIGHT)))),
            lead=float(rng.uniform(1.0, 3.0)), boff=float(rng.uniform(-0.04, 0.04)),
        ))
    group_sizes = rng.integers(1, 4, len(numbers))
    vfree = rng.dirichlet(np.ones(len(numbers) + 1))
    hfree = [rng.dirichlet([1.5] + [0.6] * 2 + [1.5]) for _ in numbers]

    for n in numbers:  # each number alone must fit the width
        n.build(images)
        while n.width > avail_w:
            if n.h > MIN_HEIGHT:
                n.h = max(float(MIN_HEIGHT), n.h * avail_w / n.width * 0.98)
            elif len(n.index) > 1:
                n.index, n.hj, n.bj, n.gf, n.strength = (v[:-1] for v in (n.index, n.hj, n.bj, n.gf, n.strength))
            else:  # one 15-px digit wider than the page: cannot happen above MIN_SIZE
                break
            n.build(images)

    def group(numbers: list[_Number]) -> list[list[_Number]]:
        lines, queue, g = [], list(numbers), 0
        while queue:
            line = queue[:int(group_sizes[g % len(group_sizes)])]
            g += 1
            while len(line) > 1 and _line_geometry(line)[2] > avail_w:
                line.pop()
            queue = queue[len(line):]
            lines.append(line)
        return lines

    def needed(lines: list[list[_Number]]) -> int:
        spans = [(g[4] - g[3]) for g in map(_line_geometry, lines)]
        return sum(spans) + sum(_line_gap(a, b) for a, b in zip(lines, lines[1:], strict=False))

    lines = group(numbers)
    for _ in range(12):  # too tall: shrink everything (heights scale the vertical need about linearly)
        need = needed(lines)
        if need <= avail_h or all(n.h <= MIN_HEIGHT for n in numbers):
            break
        for n in numbers:
            n.h = max(float(MIN_HEIGHT), n.h * avail_h / need * 0.97)
            n.build(images)
        lines = group(numbers)
    while len(lines) > 1 and needed(lines) > avail_h:
        lines.pop()

    # place: spread the free vertical space over the gaps above, between and below the lines
    spare = max(0, avail_h - needed(lines))
    shares = vfree[:len(lines) + 1] / vfree[:len(lines) + 1].sum() * spare
    y = my
    for k, line in enumerate(lines):
        xs, offs, line_w, top, bottom = _line_geometry(line)
        y += int(shares[k]) + (_line_gap(lines[k - 1], line) if k else 0)
        baseline = y - top
        hshare = hfree[k][[0, *range(1, len(line)), 3]]
        hshare = hshare / hshare.sum() * max(0, avail_w - line_w)
        x = mx + int(hshare[0])
        for j, (n, nx, off) in enumerate(zip(line, xs, offs, strict=True)):
            x0 = x + nx + sum(int(s) for s in hshare[1:j + 1])
            n.origins = [(ox + x0, oy + baseline + off) for ox, oy in n.origins]
            n.boxes = [(bx + x0, by + baseline + off, bw, bh) for bx, by, bw, bh in n.boxes]
        y += bottom - top
    return lines


# -- paper and page-level trouble ------------------------------------------------------------------
def _low(height: int, width: int) -> tuple[int, int]:
    return -(-height // LOW), -(-width // LOW)


def _up(field_lr: np.ndarray, height: int, width: int) -> np.ndarray:
    """A low-res field at full resolution, low-res pixel i covering full-res pixels LOW*i to LOW*i+LOW-1
    (exactly, whatever the page size, so that `keepout_mask` can reason about where a field spreads)."""
    lh, lw = field_lr.shape[:2]
    return cv2.resize(field_lr, (lw * LOW, lh * LOW), interpolation=cv2.INTER_LINEAR)[:height, :width]


def _up_where(field_lr: np.ndarray, support: np.ndarray, height: int, width: int):
    """Like `_up`, but only over the bounding box of ``support`` (a low-res mask, grown by one pixel for
    the interpolation): distractors cover a small part of the page, so only that part is upsampled and
    blended. Returns ``((rows, cols), block)`` in full-res pixels, or None when the support is empty."""
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    if not len(rows):
        return None
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, support.shape[0])
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, support.shape[1])
    y1, x1 = min(r1 * LOW, height), min(c1 * LOW, width)
    block = _up(np.ascontiguousarray(field_lr[r0:r1, c0:c1]), y1 - r0 * LOW, x1 - c0 * LOW)
    return (slice(r0 * LOW, y1), slice(c0 * LOW, x1)), block


NOISE_BANK, NOISE_TILE = 1536, 1024


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed sheet of N(0, 1) noise, drawn once; sensor noise is cut from it at random offsets,
    because drawing 1.4 M fresh normals per page would take a third of the time budget."""
    return np.random.default_rng(0x5CE7E5).standard_normal((NOISE_BANK, NOISE_BANK), dtype=np.float32)


def _add_gaussian(out: np.ndarray, rng: np.random.Generator, sigma: float) -> None:
    """``out += sigma * N(0, 1)`` per pixel, in place (the same draw on every channel of a 3-channel
    ``out``: luminance noise), tile by tile from the bank at random offsets."""
    bank = _noise_bank()
    height, width = out.shape[:2]
    for y in range(0, height, NOISE_TILE):
        for x in range(0, width, NOISE_TILE):
            h, w = min(NOISE_TILE, height - y), min(NOISE_TILE, width - x)
            oy, ox = int(rng.integers(0, NOISE_BANK - h + 1)), int(rng.integers(0, NOISE_BANK - w + 1))
            tile = bank[oy:oy + h, ox:ox + w] * np.float32(sigma)
            block = out[y:y + h, x:x + w]
            cv2.add(block, cv2.merge([tile] * out.shape[2]) if out.ndim == 3 else tile, dst=block)


def paper(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A blank page, float32 BGR 0-255: off-white (brightness 205-245) with a slight tint and a faint
    low-frequency texture (uneven fibres, a little cockling), because a flat synthetic white would let
    a recogniser learn that "paper" means "exactly constant"."""
    base = rng.uniform(205, 245) * PAPER_TINTS[rng.integers(len(PAPER_TINTS))] * rng.uniform(0.985, 1.015, 3)
    lh, lw = _low(height, width)
    coarse = rng.standard_normal((lh // 16 + 3, lw // 16 + 3)).astype(np.float32)
    texture = cv2.resize(coarse, (lw, lh), interpolation=cv2.INTER_CUBIC) * rng.uniform(0.004, 0.012)
    texture += rng.standard_normal((lh, lw)).astype(np.float32) * 0.004
    return np.ascontiguousarray(_up((1 + texture)[:, :, None] * base.astype(np.float32), height, width))


def add_lighting(page: np.ndarray, rng: np.random.Generator) -> None:
    """Uneven light, in place: a linear or radial brightness gradient falling to 35-60 % of the paper's
    brightness in one corner or side, a slight colour cast, and 1-2 soft-edged shadows (blurred polygons
    entering from an edge, multiplying by 0.45-0.8), the things a global threshold trips over."""
    height, width = page.shape[:2]
    lh, lw = _low(height, width)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    lo, hi, gamma = rng.uniform(0.35, 0.6), rng.uniform(0.95, 1.05), rng.uniform(0.7, 1.8)
    if rng.random() < 0.5:  # linear, in a random direction
        theta = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(theta) + yy * np.sin(theta)
    else:  # radial, about a light spot somewhere on (or just off) the page
        cx, cy = rng.uniform(-0.2, 1.2) * lw, rng.uniform(-0.2, 1.2) * lh
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    light = hi - (hi - lo) * t**gamma
    for _ in range(int(rng.integers(1, 3))):
        mask = np.zeros((lh, lw), np.float32)
        cv2.fillPoly(mask, [_edge_polygon(rng, lh, lw)], 1.0, cv2.LINE_AA)
        sigma = rng.uniform(0.015, 0.06) * min(lh, lw)
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
        light *= 1 - (1 - rng.uniform(0.45, 0.8)) * mask
    c = rng.uniform(-0.05, 0.06)  # warm (c > 0: more red, less blue) or cool light
    cast = np.array([1 - c, 1, 1 + c * 0.8], np.float32)
    page *= _up(light.astype(np.float32)[:, :, None] * cast, height, width)


def _edge_polygon(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A polygon that enters the frame from a random side (a shadow cast by a hand, a phone, a head)."""
    side = int(rng.integers(4))
    length, depth = (w, h) if side in (0, 2) else (h, w)
    a, b = np.sort(rng.uniform(-0.2, 1.2, 2)) * length
    k = int(rng.integers(1, 5))
    along = np.sort(rng.uniform(a, b, k)) if b > a else np.full(k, a)
    into = rng.uniform(0.15, 0.6, k) * depth
    pts = [(a, -0.1 * depth), *zip(along, into, strict=True), (b, -0.1 * depth)]
    out = []
    for u, v in pts:  # (along the side, into the page) -> (x, y)
        if side == 0:
            out.append((u, v))
        elif side == 2:
            out.append((u, h - 1 - v))
        elif side == 1:
            out.append((w - 1 - v, u))
        else:
            out.append((v, u))
    return np.round(np.array(out)).astype(np.int32)


def add_camera_noise(page: np.ndarray, rng: np.random.Generator, digit_height: int = MAX_HEIGHT) -> np.ndarray:
    """What a cheap camera does to the page: Gaussian blur (sigma 0.5-2, at most a tenth of the smallest
    ``digit_height`` so tiny digits stay legible), sensor noise (sigma 3-12 grey levels: luminance at full
    resolution plus softer chroma noise, as after demosaicing), then JPEG at quality 30-75. Returns uint8."""
    height, width = page.shape[:2]
    sigma = min(rng.uniform(0.5, 2.0), max(0.5, 0.1 * digit_height))
    page = cv2.GaussianBlur(page, (0, 0), sigma)
    s = rng.uniform(3, 12)
    _add_gaussian(page, rng, s * 0.92)
    planes = [np.zeros((-(-height // 2), -(-width // 2)), np.float32) for _ in range(3)]
    for plane in planes:
        _add_gaussian(plane, rng, s * 0.4)
    chroma = cv2.merge(planes)
    cv2.add(page, cv2.resize(chroma, (width, height), interpolation=cv2.INTER_LINEAR), dst=page)
    image = _to_uint8(page)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 76))])
    if not ok:  # pragma: no cover - OpenCV always has a JPEG codec
        raise RuntimeError("cv2.imencode could not write a JPEG")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def add_ruled_lines(page: np.ndarray, rng: np.random.Generator, kind: str = "ruled") -> None:
    """Stationery, in place: ``ruled`` (blue-grey lines every 25-60 px, sometimes a red margin line) or
    ``grid`` (squared paper, 18-45 px, sometimes heavier every 5th line). Lines darken multiplicatively,
    so they pass behind the ink, which is the point: long straight strokes through and between digits."""
    height, width = page.shape[:2]

    def profile(n: int, spacing: float, thick: float) -> np.ndarray:
        """Anti-aliased coverage of lines every ``spacing`` px across ``n`` px, and the line number."""
        pos = np.arange(n, dtype=np.float32) - rng.uniform(0, spacing)
        k = np.round(pos / spacing)
        return np.clip(thick / 2 + 0.5 - np.abs(pos - k * spacing), 0, 1), k

    colour = np.array([0.80, 0.62, 0.52], np.float32) * rng.uniform(0.9, 1.05, 3)  # blue-grey (BGR)
    dark = rng.uniform(0.55, 1.0)
    if kind == "ruled":
        cov, _ = profile(height, rng.uniform(25, 60), rng.uniform(1.0, 2.2))
        _darken(page, 0, cov, dark * (1 - colour))
        if rng.random() < 0.4:  # the red margin line of a school exercise book
            x = rng.uniform(0.05, 0.15) * width
            col = np.clip(1.3 - np.abs(np.arange(width, dtype=np.float32) - x), 0, 1)
            red = np.array([0.60, 0.58, 0.95], np.float32)
            _darken(page, 1, col, rng.uniform(0.6, 1.0) * (1 - red))
    elif kind == "grid":
        spacing, thin = rng.uniform(18, 45), rng.uniform(0.8, 1.5)
        heavy = rng.random() < 0.4
        for axis, n in ((0, height), (1, width)):
            cov, k = profile(n, spacing, thin)
            weight = np.where(heavy & (k % 5 == 0), 1.0, 0.55 if heavy else 0.8)
            _darken(page, axis, cov * weight, dark * (1 - colour))
    else:
        raise ValueError(f"unknown stationery {kind!r}; choose ruled or grid")


def _darken(page: np.ndarray, axis: int, coverage: np.ndarray, absorb: np.ndarray) -> None:
    """``page *= 1 - coverage * absorb`` along rows (axis 0) or columns (1), touching only covered ones."""
    idx = np.flatnonzero(coverage > 0)
    f = (1 - coverage[idx, None] * absorb).astype(np.float32)
    if axis == 0:
        page[idx] *= f[:, None, :]
    else:
        page[:, idx] *= f[None, :, :]


def keepout_mask(boxes: Iterable[Box], height: int, width: int, scale: float = 0.25) -> np.ndarray:
    """Where distractors may not go, as a (H/LOW, W/LOW) boolean mask: the boxes (numbers' boxes on the
    scenes, so nothing lands between a number's digits) grown by ``scale`` x their height + 3 px, and by
    one more low-res pixel because upsampling a low-res field spreads it that far."""
    lh, lw = _low(height, width)
    keep = np.zeros((lh, lw), bool)
    for x, y, w, h in boxes:
        m = 3 + scale * h
        x0, y0 = int((x - m) // LOW) - 1, int((y - m) // LOW) - 1
        x1, y1 = int(-(-(x + w + m) // LOW)) + 2, int(-(-(y + h + m) // LOW)) + 2
        keep[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return keep


def add_smudges(page: np.ndarray, keepout: np.ndarray, rng: np.random.Generator, count: int | None = None) -> int:
    """Soft grey blobs (graphite, dirt, an eraser's smear), in place: 1-3 blurred overlapping ellipses
    each, 25-180 px, taking 12-40 % of the light. None touches ``keepout`` (a low-res mask, see
    `keepout_mask`): trouble near the numbers, never over them. Returns how many were placed."""
    height, width = page.shape[:2]
    lh, lw = keepout.shape
    dirt = np.zeros((lh, lw), np.float32)
    placed = 0
    for _ in range(int(rng.integers(1, 5)) if count is None else count):
        for _attempt in range(12):
            size = np.exp(rng.uniform(np.log(25), np.log(180))) / LOW
            sigma = max(0.6, 0.2 * size)
            cx, cy = rng.uniform(0, lw), rng.uniform(0, lh)
            r = int(np.ceil(1.3 * size + 3 * sigma + 2))  # the blob lives in a window around its centre
            x0, y0, x1, y1 = max(int(cx) - r, 0), max(int(cy) - r, 0), min(int(cx) + r, lw), min(int(cy) + r, lh)
            blob = np.zeros((y1 - y0, x1 - x0), np.float32)
            for _e in range(int(rng.integers(1, 4))):
                ax = size * rng.uniform(0.25, 0.6)
                off = np.clip(rng.normal(0, 0.3 * size, 2), -0.6 * size, 0.6 * size)
                centre = (int(cx + off[0]) - x0, int(cy + off[1]) - y0)
                axes = (max(1, int(ax)), max(1, int(ax * rng.uniform(0.3, 1.0))))
                cv2.ellipse(blob, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
            blob = cv2.GaussianBlur(blob, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT) * rng.uniform(0.12, 0.4)
            blob[blob < 1e-3] = 0
            if not (blob > 0)[keepout[y0:y1, x0:x1]].any():
                np.maximum(dirt[y0:y1, x0:x1], blob, out=dirt[y0:y1, x0:x1])
                placed += 1
                break
    up = _up_where(dirt, dirt > 0, height, width)
    if up is not None:
        (rows, cols), block = up
        grey = np.array([0.55, 0.56, 0.6], np.float32)  # a touch warm, like graphite on paper
        page[rows, cols] *= 1 - block[:, :, None] * (1 - grey)
    return placed


def add_finger(page: np.ndarray, keepout: np.ndarray, rng: np.random.Generator) -> bool:
    """A fingertip holding the page, in place: a skin-coloured, shaded, rounded bar entering from an
    edge (bottom and sides most often), with a nail and a soft shadow, out of focus. It must keep clear
    of ``keepout`` (and so of every digit); returns whether one fitted."""
    height, width = page.shape[:2]
    lh, lw = keepout.shape
    for _attempt in range(12):
        side = int(rng.choice(4, p=[0.15, 0.3, 0.3, 0.25]))  # top, right, bottom, left
        fw = rng.uniform(0.07, 0.12) * min(lh, lw)
        span, depth = (lw, lh) if side in (0, 2) else (lh, lw)
        length = rng.uniform(0.12, 0.3) * depth
        angle = rng.uniform(-0.6, 0.6)
        u = rng.uniform(0.1, 0.9) * span
        inward = {0: (0.0, 1.0), 2: (0.0, -1.0), 1: (-1.0, 0.0), 3: (1.0, 0.0)}[side]
        dx = inward[0] * np.cos(angle) - inward[1] * np.sin(angle)
        dy = inward[0] * np.sin(angle) + inward[1] * np.cos(angle)
        entry = {0: (u, 0.0), 2: (u, lh - 1.0), 1: (lw - 1.0, u), 3: (0.0, u)}[side]
        start = (entry[0] - dx * 2 * fw, entry[1] - dy * 2 * fw)
        tip = (entry[0] + dx * length, entry[1] + dy * length)
        mask = np.zeros((lh, lw), np.float32)
        cv2.line(mask, _pt(start), _pt(tip), 1.0, max(2, int(fw)), cv2.LINE_AA)
        shift = np.float32([[1, 0, -dy * 0.25 * fw + 0.1 * fw], [0, 1, dx * 0.25 * fw + 0.15 * fw]])
        shadow = cv2.GaussianBlur(cv2.warpAffine(mask, shift, (lw, lh)), (0, 0), 0.35 * fw)
        alpha = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.06 * fw))
        alpha[alpha < 1e-3] = 0
        shadow[shadow < 1e-3] = 0
        support = (alpha > 0) | (shadow > 0)
        if support[keepout].any():
            continue
        shade = cv2.GaussianBlur(mask, (0, 0), 0.3 * fw)
        shade /= max(float(shade.max()), 1e-6)
        skin = SKINS[rng.integers(len(SKINS))] * rng.uniform(0.85, 1.05)
        colour = (0.55 + 0.5 * shade)[:, :, None] * skin
        nail = np.zeros((lh, lw), np.float32)
        ncentre = _pt((tip[0] - dx * 0.35 * fw, tip[1] - dy * 0.35 * fw))
        nangle = float(np.degrees(np.arctan2(dy, dx)))
        cv2.ellipse(nail, ncentre, (max(1, int(0.32 * fw)), max(1, int(0.26 * fw))), nangle, 0, 360, 1.0, -1,
                    cv2.LINE_AA)
        nail = cv2.GaussianBlur(nail * mask, (0, 0), 0.08 * fw)[:, :, None] * 0.55
        colour = colour * (1 - nail) + nail * np.minimum(skin * 1.12 + np.float32([25, 25, 20]), 250)
        (rows, cols), sh = _up_where(shadow, support, height, width)
        _, a = _up_where(alpha, support, height, width)
        _, skin_up = _up_where(colour.astype(np.float32), support, height, width)
        region = page[rows, cols]
        region *= 1 - sh[:, :, None] * rng.uniform(0.25, 0.5)
        region *= 1 - a[:, :, None]
        region += a[:, :, None] * skin_up
        return True
    return False


def _pt(p: tuple[float, float]) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


# -- perspective -----------------------------------------------------------------------------------
def warped_box(alpha: np.ndarray, origin: tuple[int, int], matrix: np.ndarray) -> Box | None:
    """The truth box of a digit after the page is warped by the 3x3 ``matrix`` (source -> image pixels):
    its alpha map is warped on its own, by the same transform restricted to its patch, and the box is
    measured on that, so it is exactly what `warp_perspective` does to the page's ink."""
    h, w = alpha.shape
    ox, oy = origin
    corners = np.float32([[ox, oy], [ox + w, oy], [ox + w, oy + h], [ox, oy + h]]).reshape(-1, 1, 2)
    dst = cv2.perspectiveTransform(corners, matrix).reshape(-1, 2)
    x0, y0 = np.floor(dst.min(0)).astype(int) - 2
    x1, y1 = np.ceil(dst.max(0)).astype(int) + 2
    to_patch = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    from_patch = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]], np.float64)
    local = to_patch @ matrix @ from_patch
    out = cv2.warpPerspective(alpha, local, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return ink_box(out, (int(x0), int(y0)))


def random_homography(rng: np.random.Generator, height: int, width: int, amount: float = 0.06) -> np.ndarray:
    """Corner displacements of a mild perspective: each page corner moves independently by up to
    ``amount`` x the page size in x and y (tilt, keystone, a little rotation and zoom). Returns (4, 2);
    `homography` turns a (scaled) displacement into the 3x3 matrix."""
    return rng.uniform(-1, 1, (4, 2)) * amount * np.array([width, height]) * rng.uniform(0.4, 1.0)


def homography(height: int, width: int, displacement: np.ndarray) -> np.ndarray:
    """The 3x3 matrix that moves the page's corners by ``displacement`` (4, 2)."""
    src = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])
    return cv2.getPerspectiveTransform(src, (src + displacement).astype(np.float32))


def warp_perspective(page: np.ndarray, matrix: np.ndarray, border: Sequence[float] = (0, 0, 0)) -> np.ndarray:
    """The page as a camera sees it when it is not square to the page; beyond the page's edge, ``border``."""
    height, width = page.shape[:2]
    return cv2.warpPerspective(page, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in border))


def _geometry_ok(lines_boxes: list[list[list[Box]]], height: int, width: int) -> bool:
    """A warp is accepted only if the truth stays clean: every digit inside the image with a height in
    [15, 200], and the reading order still unambiguous (numbers on a line overlap vertically and follow
    each other left to right; each line lies wholly below the previous one)."""
    prev_bottom = -1
    for line in lines_boxes:
        nboxes = []
        for digits in line:
            for x, y, w, h in digits:
                if x < 1 or y < 1 or x + w > width - 1 or y + h > height - 1 or not MIN_HEIGHT <= h <= MAX_HEIGHT:
                    return False
            nboxes.append(_union(digits))
        if min(b[1] for b in nboxes) <= prev_bottom:
            return False
        for a, b in zip(nboxes, nboxes[1:], strict=False):
            if b[0] <= a[0] + a[2] or b[1] >= a[1] + a[3] or a[1] >= b[1] + b[3]:
                return False
        prev_bottom = max(b[1] + b[3] for b in nboxes)
    return True


def _union(boxes: Sequence[Box]) -> Box:
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return x0, y0, x1 - x0, y1 - y0


# -- scenes ----------------------------------------------------------------------------------------
def _to_uint8(page: np.ndarray) -> np.ndarray:
    """Round and saturate to uint8 (convertScaleAbs saturates above; the maximum clears negatives first)."""
    return cv2.convertScaleAbs(np.maximum(page, 0))


def _random_size(rng: np.random.Generator) -> tuple[int, int]:
    """A camera-like landscape frame between about 480x640 and 1200x1600 (height x width)."""
    h = int(rng.integers(480, 1201))
    return h, int(np.clip(round(h * rng.uniform(1.25, 1.42)), 640, 1600))


def render_scene(seed: int, difficulty: str = "clean", size: tuple[int, int] | None = None, *,
                 source: str = "test") -> Scene:
    """Render one page: ``size = (height, width)``; None picks a random page size between about
    480x640 and 1200x1600. The page (size, paper, numbers, their places) depends only on ``seed``; the
    trouble of ``difficulty`` is drawn from its own stream, so every level of one seed shows the same
    digits (boxes identical except under clutter's perspective warp). ``source``: the MNIST split of the
    digits (``test``, never seen in training, for everything that measures; ``train``/``val`` only to make
    the recogniser's own training and calibration data); `DigitTruth.index` indexes into that split."""
    if source not in SOURCES:
        raise ValueError(f"unknown digit source {source!r}; choose one of {', '.join(SOURCES)}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; choose one of {', '.join(DIFFICULTIES)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([int(seed), 0])
    height, width = _random_size(rng) if size is None else (int(size[0]), int(size[1]))
    if min(height, width) < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE}x{MIN_SIZE} pixels (height, width), got {size}")
    page = paper(rng, height, width)
    lines = _layout(rng, height, width, source)
    numbers = [n for line in lines for n in line]
    boxes = paste_digits(
        page,
        [a for n in numbers for a in n.alphas],
        [o for n in numbers for o in n.origins],
        np.array([n.ink for n in numbers for _ in n.index]),
        np.concatenate([n.strength for n in numbers]),
    )
    trouble = np.random.default_rng([int(seed), 1 + DIFFICULTIES.index(difficulty)])
    if difficulty == "lighting":
        add_lighting(page, trouble)
    elif difficulty == "clutter":
        page, boxes = _clutter(page, trouble, numbers, lines, boxes)
    if difficulty == "noise":
        image = add_camera_noise(page, trouble, min(b[3] for b in boxes))
    else:
        image = _to_uint8(page)

    truth, k = [], 0
    _, labels, _ = _mnist(source)
    for n in numbers:
        digits = []
        for idx in n.index:
            digits.append(DigitTruth(box=boxes[k], label=int(labels[idx]), index=int(idx)))
            k += 1
        truth.append(NumberTruth(
            text="".join(str(d.label) for d in digits), box=_union([d.box for d in digits]), digits=tuple(digits)
        ))
    return Scene(image=image, numbers=tuple(truth), difficulty=difficulty, seed=int(seed))


def _clutter(page: np.ndarray, rng: np.random.Generator, numbers: list[_Number], lines: list[list[_Number]],
             boxes: list[Box]) -> tuple[np.ndarray, list[Box]]:
    """Stationery and smudges on the page, a mild perspective warp, then perhaps a finger: returns the
    new page and the digits' boxes on it. The warp is weakened step by step until the truth stays clean
    (see `_geometry_ok`); a page too crowded for any warp keeps its clutter unwarped."""
    height, width = page.shape[:2]
    kind = rng.choice(["ruled", "grid", "plain"], p=[0.5, 0.4, 0.1])
    if kind != "plain":
        add_ruled_lines(page, rng, str(kind))
    number_boxes = [_union(n.boxes) for n in numbers]
    add_smudges(page, keepout_mask(number_boxes, height, width), rng)

    displacement = random_homography(rng, height, width)
    table = np.array(TABLES[rng.integers(len(TABLES))], np.float32) * rng.uniform(0.8, 1.1)
    alphas = [a for n in numbers for a in n.alphas]
    origins = [o for n in numbers for o in n.origins]
    for strength in (1.0, 0.7, 0.5, 0.35, 0.25, 0.15):
        matrix = homography(height, width, displacement * strength)
        warped = [warped_box(a, o, matrix) for a, o in zip(alphas, origins, strict=True)]
        if any(b is None for b in warped):
            continue
        it = iter(warped)
        if _geometry_ok([[[next(it) for _ in n.index] for n in line] for line in lines], height, width):
            page = warp_perspective(page, matrix, table)
            boxes = warped
            break
    k, number_boxes = 0, []
    for n in numbers:
        number_boxes.append(_union(boxes[k:k + len(n.index)]))
        k += len(n.index)
    if rng.random() < 0.5:
        add_finger(page, keepout_mask(number_boxes, height, width, scale=0.35), rng)
    return page, boxes


def render_scenes(
    n: int, seed: int = 0, difficulties: Sequence[str] = DIFFICULTIES, *, size: tuple[int, int] | None = None
) -> Iterator[Scene]:
    """``n`` scenes, cycling through ``difficulties``; scene ``i`` is seeded from ``(seed, i)``, and its
    ``Scene.seed`` is that derived seed, so ``render_scene(s.seed, s.difficulty)`` reproduces it alone."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    difficulties = tuple(difficulties)
    if not difficulties:
        raise ValueError("difficulties must name at least one level")
    for d in difficulties:
        if d not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {d!r}; choose from {', '.join(DIFFICULTIES)}")
    for i in range(n):
        derived = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
        yield render_scene(derived, difficulties[i % len(difficulties)], size)


# -- looking at scenes -----------------------------------------------------------------------------
def draw_truth(scene: Scene) -> np.ndarray:
    """A debug copy of the scene with its truth drawn: digit boxes green, number boxes red, each number's
    reading-order position and text above it."""
    img = scene.image.copy()
    for k, number in enumerate(scene.numbers):
        for d in number.digits:
            x, y, w, h = d.box
            cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), (0, 180, 0), 1)
        x, y, w, h = number.box
        cv2.rectangle(img, (x - 2, y - 2), (x + w + 1, y + h + 1), (0, 0, 230), 1)
        cv2.putText(img, f"{k}:{number.text}", (x, max(12, y - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 230), 1,
                    cv2.LINE_AA)
    return img


def contact_sheet(scenes: Sequence[Scene], width: int = 640, truth: bool = True) -> np.ndarray:
    """The scenes side by side, each scaled to ``width`` px, with (below) a debug copy of each if ``truth``."""
    rows = [[s.image for s in scenes]] + ([[draw_truth(s) for s in scenes]] if truth else [])
    tiles = []
    for row in rows:
        scaled = [cv2.resize(im, (width, round(im.shape[0] * width / im.shape[1])), interpolation=cv2.INTER_AREA)
                  for im in row]
        tall = max(t.shape[0] for t in scaled)
        tiles.append(np.hstack([cv2.copyMakeBorder(t, 0, tall - t.shape[0] + 4, 0, 4, cv2.BORDER_CONSTANT, value=0)
                                for t in scaled]))
    return np.vstack(tiles)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m digitlab.data.scenes OUT.png``: a contact sheet of one scene per difficulty."""
    p = argparse.ArgumentParser(prog="python -m digitlab.data.scenes", description=main.__doc__)
    p.add_argument("out", help="where to write the sheet (PNG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=640, help="width of each tile")
    args = p.parse_args(argv)
    scenes = [render_scene(args.seed, d) for d in DIFFICULTIES]
    cv2.imwrite(args.out, contact_sheet(scenes, args.width))
    print(f"{args.out}: seed {args.seed}, {sum(len(s.digits) for s in scenes) // 4} digits per page, "
          f"page {scenes[0].image.shape[1]}x{scenes[0].image.shape[0]}")


if __name__ == "__main__":
    main()
