"""Things that are not digits, as the recogniser's normaliser would present them: the 11th class.

A photo of paper holds much besides digits: specks and texture, ruled lines and grid marks, page
corners, letters, scribbles, pieces of strokes, two digits touching in one box, smudges. Each
generator below draws one kind as dark-on-light ink at a random size, and `to_mnist` (the very
function the pipeline uses) turns it into a 28x28 input, so the model learns to reject what the
pipeline will actually show it. Seeded; MNIST *training* digits only (the test set stays unseen).
"""

from __future__ import annotations

import cv2
import numpy as np

from digitlab.vision.normalize import to_mnist

KINDS = ("specks", "lines", "corner", "grid", "letter", "scribble", "fragment", "pair", "smudge")
# letters that do not look like a digit in someone's handwriting (no O, I, l, S, Z, B, G, q, g, b, ...)
LETTERS = "ACEFHKMNPRUVWXYacefhkmnprtuvwxy"
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
         cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX, cv2.FONT_HERSHEY_PLAIN)


def _canvas(rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    size = size or int(rng.integers(40, 120))
    return np.zeros((size, size), np.float32)


def _thick(rng: np.random.Generator, size: int) -> int:
    return max(1, int(size * rng.uniform(0.03, 0.12)))


def specks(rng, digits=None):
    c = _canvas(rng)
    for _ in range(int(rng.integers(1, 8))):
        y, x = rng.integers(0, c.shape[0], 2)
        cv2.circle(c, (int(x), int(y)), int(rng.integers(1, 4)), 1.0, -1)
    return c


def lines(rng, digits=None):
    c = _canvas(rng)
    s = c.shape[0]
    for _ in range(int(rng.integers(1, 3))):
        angle = rng.choice([0.0, 90.0, rng.uniform(0, 180)])
        r = s * rng.uniform(0.3, 0.7)
        cx, cy = rng.uniform(0.3, 0.7, 2) * s
        dx, dy = r * np.cos(np.deg2rad(angle)), r * np.sin(np.deg2rad(angle))
        if abs(dy) > 0.7 * abs(dx):  # a steep lone bar is how people write 1: always cross it
            cv2.line(c, (int(cx - r), int(cy)), (int(cx + r), int(cy)), 1.0, _thick(rng, s))
        cv2.line(c, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 1.0, _thick(rng, s))
    return c


def corner(rng, digits=None):
    c = _canvas(rng)
    s = c.shape[0]
    t = _thick(rng, s)
    a, b = int(s * 0.15), int(s * 0.85)
    kind = rng.integers(0, 3)
    if kind == 0:  # an L or a page corner
        cv2.line(c, (a, a), (a, b), 1.0, t)
        cv2.line(c, (a, b), (b, b), 1.0, t)
    elif kind == 1:  # a cross
        cv2.line(c, (s // 2, a), (s // 2, b), 1.0, t)
        cv2.line(c, (a, s // 2), (b, s // 2), 1.0, t)
    else:  # a box edge
        cv2.rectangle(c, (a, a), (b, b), 1.0, t)
    return np.rot90(c, int(rng.integers(0, 4))).copy()


def grid(rng, digits=None):
    c = _canvas(rng)
    s = c.shape[0]
    step = int(rng.integers(max(6, s // 6), max(7, s // 2)))
    t = max(1, _thick(rng, s) // 2)
    off = int(rng.integers(0, step))
    for v in range(off, s, step):
        cv2.line(c, (v, 0), (v, s - 1), 1.0, t)
        cv2.line(c, (0, v), (s - 1, v), 1.0, t)
    return c


def letter(rng, digits=None):
    c = np.zeros((96, 160), np.uint8)  # putText draws on 8-bit images only
    text = "".join(rng.choice(list(LETTERS), int(rng.integers(1, 3))))
    font = int(rng.choice(FONTS))
    cv2.putText(c, text, (8, 72), font, float(rng.uniform(1.6, 2.6)), 255, int(rng.integers(2, 7)), cv2.LINE_AA)
    return c.astype(np.float32) / 255


def scribble(rng, digits=None):
    c = _canvas(rng)
    s = c.shape[0]
    pts = np.cumsum(rng.normal(0, s * 0.18, (int(rng.integers(6, 14)), 2)), axis=0)
    pts = (pts - pts.min(0)) / max(np.ptp(pts, axis=0).max(), 1e-6) * s * 0.8 + s * 0.1
    cv2.polylines(c, [pts.astype(np.int32)], False, 1.0, _thick(rng, s), cv2.LINE_AA)
    return c


def fragment(rng, digits):
    d = digits[int(rng.integers(0, len(digits)))].astype(np.float32) / 255
    ys, xs = np.nonzero(d > 0.3)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    if rng.random() < 0.5:  # top or bottom part
        cut = y0 + int(h * rng.uniform(0.25, 0.45))
        piece = d[y0:cut, x0:x1] if rng.random() < 0.5 else d[y1 - (cut - y0):y1, x0:x1]
    else:  # left or right part
        cut = x0 + int(w * rng.uniform(0.25, 0.45))
        piece = d[y0:y1, x0:cut] if rng.random() < 0.5 else d[y0:y1, x1 - (cut - x0):x1]
    ys, xs = np.nonzero(piece > 0.3)
    if ys.size == 0 or np.ptp(ys) + 1 > 1.6 * (np.ptp(xs) + 1):  # a tall thin piece is a 1: draw a scribble
        return scribble(rng)
    return cv2.resize(piece, (piece.shape[1] * 3, piece.shape[0] * 3), interpolation=cv2.INTER_LINEAR)


def pair(rng, digits):
    a, b = (digits[int(i)].astype(np.float32) / 255 for i in rng.integers(0, len(digits), 2))
    overlap = int(rng.integers(0, 8))
    c = np.zeros((28, 56 - overlap), np.float32)
    c[:, :28] = a
    c[:, 28 - overlap:] = np.maximum(c[:, 28 - overlap:], b)
    return c


def smudge(rng, digits=None):
    c = _canvas(rng)
    s = c.shape[0]
    for _ in range(int(rng.integers(1, 3))):
        centre = tuple(int(v) for v in rng.uniform(0.3, 0.7, 2) * s)
        axes = tuple(int(v) for v in rng.uniform(0.1, 0.35, 2) * s)
        cv2.ellipse(c, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.5, 1)), -1)
    return cv2.GaussianBlur(c, (0, 0), s * 0.05)


GENERATORS = {"specks": specks, "lines": lines, "corner": corner, "grid": grid, "letter": letter,
              "scribble": scribble, "fragment": fragment, "pair": pair, "smudge": smudge}


def make_negatives(n: int, digits: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` non-digits as 28x28 float32 model inputs ``(n, 1, 28, 28)`` and their kind index into `KINDS`.

    ``digits``: MNIST training images (uint8, ink bright) for the fragments and pairs."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 1, 28, 28), np.float32)
    kinds = rng.integers(0, len(KINDS), n)
    for i, k in enumerate(kinds):
        ink = GENERATORS[KINDS[k]](rng, digits)
        out[i, 0] = to_mnist(ink, ink > 0.3)
    return out, kinds
