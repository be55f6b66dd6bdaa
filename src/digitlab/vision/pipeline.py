"""Find and read every handwritten digit in a photo: the recogniser's stages.

Each stage is a small function of an image and the `PipelineConfig`, testable alone:

``grayscale -> downscale -> flatten_illumination -> blur -> binarize -> remove_lines -> clean
-> candidates (connected components) -> filter -> merge pieces -> split wide boxes -> normalise
-> classify (+ reject) -> group into lines and numbers``.

Boxes are always reported in pixels of the input image, whatever the working scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median  # small lists: pure Python is ~20x faster than np.median, same values

import cv2
import numpy as np

# connected-component labelling: block-based decision trees (Grana et al. 2010), about twice as fast as
# OpenCV's default here on single-threaded camera frames; same components, same raster-order labels
CCL = cv2.CCL_BBDT


@dataclass
class PipelineConfig:
    """Every parameter of the recogniser in one place."""

    max_side: int = 1600            # larger images are downscaled first (boxes still in input pixels)
    fast_downscale: bool = False    # ... by whole-block averaging then bilinear (see `downscale`): the live loop's
    flatten: bool = True            # divide out the paper background (shadows, gradients)
    background_frac: float = 0.06   # closing kernel (fraction of the longer side): wider than the thickest stroke
    blur_sigma: float = 0.8
    threshold: str = "auto"         # "otsu", "adaptive" or "auto"
    adaptive_block_frac: float = 0.06
    min_contrast: float = 0.12      # ink must be at least this much darker than the paper (0..1)
    hysteresis: float = 0.5         # weak ink down to this fraction of the threshold joins touching strong ink
    remove_lines: bool = True       # ruled lines and grid paper
    line_frac: float = 0.4          # a straight run longer than this fraction of the side is a line ...
    line_thickness: float = 0.012   # ... if it is at most this fraction of the side thick (a pen stroke is thicker)
    line_segment: float = 0.17      # straight pieces of this fraction of line_frac make up a (tilted) line
    drop_border: bool = True        # candidates touching the image border are the page's edge, not digits
    open_px: int = 0                # morphological opening (specks); 0 = none
    close_px: int = 0               # morphological closing (broken strokes); 0 = none
    min_height_frac: float = 0.008  # candidates smaller than this fraction of the longer side are noise
    min_height_px: int = 8
    max_height_frac: float = 0.8
    min_rel_height: float = 0.35    # ... or smaller than this fraction of the median candidate height
    fragment_reach: float = 2.0     # a thin upright box whose line goes on this many heights both ways: dropped
    max_aspect: float = 6.0         # wider than tall by more than this: a dash or a line
    min_density: float = 0.04
    max_density: float = 0.92
    thin_aspect: float = 0.35       # boxes at most this wide (times their height) are strokes: any density
    grid_density: float = 0.12      # a sparse candidate (ink below this share of its box) ...
    grid_straight: float = 0.85     # ... whose ink lies this much on lines across the box: grid remnants
    merge_overlap: float = 0.5      # pieces overlapping horizontally by this fraction are one digit
    split_aspect: float = 1.3       # a box wider than this times its height may hold touching digits ...
    neck_aspect: float = 1.0        # ... and so may one this wide with two digits touching at a neck
    split_relative: float = 1.6     # ... and so may one this much wider than the median candidate
    split_margin: float = 0.1       # a split must raise the mean confidence by this much to be taken
    merge_gap: float = 0.12         # pieces this close (times the taller one's height) may be one digit ...
    merge_margin: float = 0.15      # ... when reading them as one raises the mean confidence by this much
    fragment_height: float = 0.7    # two close pieces shorter than this times the digits beside them: one digit?
    digit_aspect: float = 0.72      # typical width / height of one handwritten digit
    stroke_norm: bool = True
    mask_fringe: int = 1            # the digit's mask grown by this many pixels for the model's input (faint edges)
    stroke_thin_min: int = 45       # stroke normalisation thins only crops this tall (px) or more: small
                                    # blurred digits thinned become blobs the model rejects
    contrast_floor: float = 0.0     # ink below this fraction of the stroke level fades out (off: a small
                                    # gain on blurred synthetic digits, a loss on real photos)
    deskew: bool = False
    reject_threshold: float | None = None   # None: the model's calibrated threshold (or 0.5)
    not_digit_min: float = 0.7      # the "not a digit" probability that rejects a box outright
    line_overlap: float = 0.5       # boxes share a text line when their vertical overlap exceeds this
    number_gap: float = 0.9         # a gap wider than this times the digit height starts a new number
    number_height_ratio: float = 2.2  # ... and so does a neighbour this many times taller (or shorter)
    recover_strokes: bool = True    # pen strokes in a dropped blob (digits joined to a line remnant)
    rethreshold: bool = True        # ... and digits in a dropped blob by its own threshold (a shadow's band)
    pad: int = 0                    # pad the image with paper before processing (for frame-filling crops)


@dataclass
class Candidate:
    """One box that may hold a digit: in working pixels until `PipelineResult` maps it back."""

    x: int
    y: int
    w: int
    h: int
    mask: np.ndarray | None = None  # binary ink of this candidate within its box
    split_from: int | None = None

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass
class Digit:
    box: tuple[int, int, int, int]
    label: int
    confidence: float
    top3: list[tuple[int, float]]
    image: np.ndarray  # the 28x28 model input
    probs: np.ndarray | None = field(default=None, repr=False)  # calibrated probabilities of every class

    def to_json(self) -> dict:
        return {"box": list(self.box), "label": self.label, "confidence": round(self.confidence, 4),
                "top3": [[k, round(p, 4)] for k, p in self.top3]}


@dataclass
class Number:
    text: str
    box: tuple[int, int, int, int]
    digits: list[Digit]
    line: int = 0  # index of its text line, top to bottom

    def to_json(self) -> dict:
        return {"text": self.text, "box": list(self.box)}


@dataclass
class PipelineResult:
    width: int
    height: int
    digits: list[Digit]
    numbers: list[Number]
    rejected: int
    rejected_boxes: list[tuple[int, int, int, int]]
    ms: dict[str, float]
    debug: dict[str, np.ndarray] = field(default_factory=dict)
    rejected_inputs: list[np.ndarray] = field(default_factory=list, repr=False)  # their 28x28 model inputs

    def to_json(self, image: str = "") -> dict:
        return {"image": image, "width": self.width, "height": self.height,
                "digits": [d.to_json() for d in self.digits], "rejected": self.rejected,
                "numbers": [n.to_json() for n in self.numbers],
                "ms": {k: round(v, 2) for k, v in self.ms.items()}}


@dataclass
class Stages:
    """What the stages up to the candidates made of one image (`find_candidates`), at the working
    resolution: the intermediate images (for ``--debug``), the scale, and every candidate's readings."""

    gray: np.ndarray
    ink: np.ndarray     # flattened, blurred ink map, ink bright
    mask: np.ndarray    # binary ink, lines removed, cleaned
    method: str         # the threshold method `binarize` used
    scale: float        # working pixels per input pixel
    options: list[list[list[Candidate]]]  # per candidate: itself, its splits, a merge (see `split_options`)


def find_candidates(image: np.ndarray, cfg: PipelineConfig, max_side: int | None = None,
                    tick=lambda stage: None) -> Stages:
    """Every stage from the image to the candidates and their readings, in order; ``tick(stage)`` after
    each (the recogniser times them). ``max_side``: this call's working resolution instead of the config's."""
    gray = grayscale(image)
    if cfg.pad:  # plain paper around a crop whose digit fills the frame (a replicated edge would smear it)
        paper = int(np.percentile(gray, 90))
        gray = cv2.copyMakeBorder(gray, cfg.pad, cfg.pad, cfg.pad, cfg.pad, cv2.BORDER_CONSTANT, value=paper)
    gray, scale = downscale(gray, cfg.max_side if max_side is None else max_side, fast=cfg.fast_downscale)
    tick("grayscale")
    ink = flatten_illumination(gray, cfg) if cfg.flatten else (255 - gray)
    tick("flatten")
    ink = blur(ink, cfg)
    tick("blur")
    mask, method = binarize(ink, cfg)
    tick("threshold")
    if cfg.remove_lines:
        mask = remove_lines(mask, cfg)
    mask = clean(mask, cfg)
    tick("morphology")
    _, cands = components(mask)
    cands = filter_candidates(cands, mask.shape, cfg, ink)
    cands = drop_line_fragments(cands, ink, cfg)
    cands = merge_pieces(cands, cfg)
    options = merge_options(cands, split_options(cands, cfg), cfg)
    return Stages(gray, ink, mask, method, scale, options)


# -- stages --------------------------------------------------------------------------------------
def to_uint8(img: np.ndarray) -> np.ndarray:
    """uint8 from uint8, uint16 (high byte) or float (in [0, 1] when its maximum is at most 1, else [0, 255])."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating) or np.issubdtype(img.dtype, np.integer):
        f = img.astype(np.float32)
        if np.issubdtype(img.dtype, np.floating) and f.size and float(np.nanmax(f)) <= 1.0:
            f = f * 255
        return np.clip(np.nan_to_num(f), 0, 255).astype(np.uint8)
    raise ValueError(f"cannot read an image of dtype {img.dtype}")


def grayscale(img: np.ndarray) -> np.ndarray:
    """uint8 gray from gray, BGR or BGRA input of any common dtype (uint8, uint16, float)."""
    img = to_uint8(img)
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    raise ValueError(f"expected a gray or colour image, got an array of shape {img.shape}")


def downscale(gray: np.ndarray, max_side: int, fast: bool = False) -> tuple[np.ndarray, float]:
    """Shrink so the longer side is at most ``max_side``; returns the image and the scale applied.

    Pixel-area averaging (no aliasing of thin strokes). ``fast``: the integer part of the reduction by
    area averaging over whole k x k blocks (OpenCV's fast path; a non-integer area resize is 10-40x
    slower: 3 ms for one 1280x720 frame), the rest (less than 2x) by bilinear interpolation."""
    side = max(gray.shape)
    if side <= max_side:
        return gray, 1.0
    s = max_side / side
    size = (max(1, round(gray.shape[1] * s)), max(1, round(gray.shape[0] * s)))
    k = int(1 / s)
    if not fast or k * s == 1.0:
        return cv2.resize(gray, size, interpolation=cv2.INTER_AREA), s
    if k >= 2:  # whole blocks only (at most k - 1 pixels at the right and bottom edges go)
        h, w = gray.shape[0] // k, gray.shape[1] // k
        gray = cv2.resize(gray[:h * k, :w * k], (w, h), interpolation=cv2.INTER_AREA)
    return cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR), s


def estimate_background(gray: np.ndarray, frac: float) -> np.ndarray:
    """The paper without the ink: a grey closing (max then min filter) wider than any stroke removes
    dark ink, then a blur smooths it. Done at quarter resolution, which is 16x cheaper and the
    background is smooth anyway."""
    h, w = gray.shape
    f = 4 if min(h, w) >= 64 else 1
    small = cv2.resize(gray, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA) if f > 1 else gray
    k = max(3, int(frac * max(h, w) / f) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    bg = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel)
    bg = cv2.GaussianBlur(bg, (0, 0), k / 2)
    return cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR) if f > 1 else bg


def flatten_illumination(gray: np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    """Ink map in [0, 255], ink bright: ``255 * (1 - gray / background)``; shadows and gradients divide out."""
    bg = np.maximum(estimate_background(gray, cfg.background_frac), 1)
    # in OpenCV's saturating uint8 arithmetic (rounded, where a float32 version truncated): 4x faster
    ratio = cv2.divide(gray, bg, scale=255.0)
    return np.subtract(np.uint8(255), ratio, out=ratio)  # (cv2.subtract takes a tiny image for a scalar)


def blur(ink: np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    return cv2.GaussianBlur(ink, (0, 0), cfg.blur_sigma) if cfg.blur_sigma > 0 else ink


def bimodality(ink: np.ndarray) -> float:
    """Otsu's separability eta = between-class variance / total variance, in [0, 1]: near 1 for clean
    two-level images (ink and paper), low when noise or texture blur the two modes."""
    hist = cv2.calcHist([ink], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    p = hist / max(hist.sum(), 1)
    levels = np.arange(256)
    omega, mu = np.cumsum(p), np.cumsum(p * levels)
    mu_t = mu[-1]
    var_t = np.sum(p * (levels - mu_t) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_t * omega - mu) ** 2 / (omega * (1 - omega))
    between = np.nan_to_num(between)
    return float(between.max() / var_t) if var_t > 0 else 0.0


def binarize(ink: np.ndarray, cfg: PipelineConfig) -> tuple[np.ndarray, str]:
    """Binary ink mask (255 = ink) and the method used. ``auto`` takes Otsu on the flattened image when
    it is bimodal, else adaptive Gaussian thresholding; either way ink must reach ``min_contrast``."""
    method = cfg.threshold
    if method == "auto":
        method = "otsu" if bimodality(ink) > 0.55 else "adaptive"
    floor = int(255 * cfg.min_contrast)
    if method == "otsu":
        t, _ = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        t = max(t, floor)
        _, strong = cv2.threshold(ink, t, 255, cv2.THRESH_BINARY)
    elif method == "adaptive":
        block = max(3, int(cfg.adaptive_block_frac * max(ink.shape)) | 1)
        strong = cv2.adaptiveThreshold(ink, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, -floor // 2)
        strong[ink < floor] = 0
        t = floor
    else:
        raise ValueError(f"unknown threshold method {method!r}; choose otsu, adaptive or auto")
    # hysteresis: weaker ink (a marker's shiny core, the inside of a thick stroke that adaptive
    # thresholding hollows out, a fading line) counts where it is connected to strong ink
    _, weak = cv2.threshold(ink, max(floor, int(cfg.hysteresis * t)), 255, cv2.THRESH_BINARY)
    if not cv2.countNonZero(cv2.subtract(weak, strong)):  # nothing weak to add: the strong mask is the answer
        return strong, method
    n, labels = cv2.connectedComponentsWithAlgorithm(cv2.bitwise_or(weak, strong), 8, cv2.CV_32S, CCL)
    keep = np.zeros(max(n, 256), np.uint8)  # a look-up table: 255 for components that hold strong ink
    keep[labels[strong > 0]] = 255
    keep[0] = 0
    if n <= 256:  # labels fit a byte: OpenCV's table look-up, ~5x faster than numpy's fancy indexing
        return cv2.LUT(labels.astype(np.uint8), keep[:256]), method
    return keep[labels], method


def remove_lines(mask: np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    """Erase ruled lines, grids and page edges: long thin runs, horizontal or vertical (a tilted photo's
    lines too). Only the line's own pixels go: where a stroke crosses or touches the line, or lies along
    it thicker than the line, its ink stays, so digits written on the line keep their shape."""
    h, w = mask.shape
    side = max(h, w)
    max_thick = max(3, int(cfg.line_thickness * side))
    length = int(cfg.line_frac * side)  # of the longer side: in a one-line crop no stroke is a line
    # the opening looks for straight pieces this long: short enough that a tilted line (slope up to ~1/20)
    # still holds them inside the 3-px band below; pieces in a row must then span `length`
    seg = max(15, int(length * cfg.line_segment))
    out = mask
    for horizontal in (True, False):
        if length < 15 or length > (w if horizontal else h) or _longest_line_count(out, horizontal) < seg:
            continue
        m = out if horizontal else np.ascontiguousarray(out.T)  # work on rows: vertical lines transposed
        thick = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_RECT, (1, 3)))
        runs = cv2.morphologyEx(thick, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (seg, 1)))
        runs &= m
        # a line needs one joined piece >= `length` wide (`primary` below); its columns lie in one span of
        # the column projection closed the same way, so without such a span there is none: an exact test
        # on one row that skips the rest on most camera frames (about 6 ms per 640x480 frame)
        proj = cv2.morphologyEx(cv2.reduce(runs, 0, cv2.REDUCE_MAX), cv2.MORPH_CLOSE,
                                cv2.getStructuringElement(cv2.MORPH_RECT, (seg, 1)))
        if _longest_span(proj.ravel() > 0) < length:
            continue
        # pieces in a row with short gaps (a faint line breaks up under the threshold) make one line
        joined = cv2.morphologyEx(runs, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (seg, 1)))
        n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(joined, 8, cv2.CV_32S, CCL)
        widths = stats[:, cv2.CC_STAT_WIDTH]
        # run pixels where the ink is thin across the run; per piece, the columns they cover and their
        # mean thickness there (one piece may hold several lines joined by a page edge or a margin line)
        across = cv2.getStructuringElement(cv2.MORPH_RECT, (1, max_thick + 3))
        thin = runs & ~cv2.morphologyEx(m, cv2.MORPH_OPEN, across)
        ys, xs = np.nonzero(thin)
        lab = labels[ys, xs].astype(np.int64)
        area = np.bincount(lab, minlength=n).astype(np.float64)
        mw = m.shape[1]
        cover = np.bincount(np.unique(lab * mw + xs) // mw, minlength=n).astype(np.float64)
        primary = (widths >= length) & (cover >= 0.5 * widths)
        primary[0] = False
        if not primary.any():
            continue
        line_t = _median_run(thin & primary[labels].astype(np.uint8) * 255)  # the page's line thickness
        # once the page has lines, a piece half as long and as thin as they are is one too (the rest of it
        # too faint to pass the threshold)
        is_line = primary | ((widths >= length // 2) & (cover >= 0.5 * widths)
                             & (area / np.maximum(cover, 1) <= line_t + 1))
        is_line[0] = False
        # ink that runs on across the line for more than the line's thickness is a stroke: it stays
        k = int(round(line_t)) + 3
        stroke = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, k)))
        erase = is_line[labels] & (runs > 0) & (stroke == 0)
        m = m.copy()
        m[erase] = 0
        out = m if horizontal else np.ascontiguousarray(m.T)
    return out


def _longest_span(flags: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], flags.view(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max()) if starts.size else 0


def _median_run(b: np.ndarray) -> float:
    """Median length of the vertical runs of nonzero pixels in ``b``."""
    cols = np.pad(np.ascontiguousarray(b.T > 0), ((0, 0), (1, 1))).ravel().view(np.int8)
    d = np.diff(cols)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return float(np.median(ends - starts)) if starts.size else 1.0


def _longest_line_count(mask: np.ndarray, horizontal: bool) -> int:
    """The most ink pixels in any row (``horizontal``) or column of ``mask`` dilated by 3 across."""
    across = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (1, 3) if horizontal else (3, 1)))
    counts = cv2.reduce((across > 0).astype(np.uint8), 1 if horizontal else 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)
    return int(counts.max()) if counts.size else 0


def clean(mask: np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    if cfg.open_px > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((cfg.open_px, cfg.open_px), np.uint8))
    if cfg.close_px > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((cfg.close_px, cfg.close_px), np.uint8))
    return mask


def components(mask: np.ndarray) -> tuple[np.ndarray, list[Candidate]]:
    """Connected components (8-connected) as candidates with their own ink masks."""
    n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, CCL)
    cands = []
    for i in range(1, n):
        x, y, w, h, _area = (int(v) for v in stats[i])
        cands.append(Candidate(x, y, w, h, (labels[y:y + h, x:x + w] == i)))
    return labels, cands


def filter_candidates(cands: list[Candidate], shape: tuple[int, int], cfg: PipelineConfig,
                      ink: np.ndarray | None = None) -> list[Candidate]:
    """Drop specks, lines, huge blobs and boxes too empty or too full of ink to be strokes. ``ink``: the
    ink map the mask was thresholded from, for looking again inside the blobs that are dropped
    (`rethreshold`)."""
    side = max(shape)
    min_h = max(cfg.min_height_px, cfg.min_height_frac * side)
    def passes(c: Candidate) -> str:
        if cfg.drop_border and (c.x == 0 or c.y == 0 or c.x + c.w >= shape[1] or c.y + c.h >= shape[0]):
            return "border"
        if c.h < min_h and c.w < min_h:
            return "small"
        if c.h > cfg.max_height_frac * shape[0] or c.w > cfg.max_height_frac * shape[1]:
            return "huge"
        if c.w > cfg.max_aspect * c.h:
            return "wide"
        density = float(c.mask.mean()) if c.mask is not None else 0.5
        # a filled box is a blob (a smudge, a shadow's patch), unless it is thin: a straight 1 fills its box
        if density < cfg.min_density or (density > cfg.max_density and c.w > cfg.thin_aspect * c.h):
            return "density"
        if density < cfg.grid_density and c.w >= 0.35 * c.h and max(c.w, c.h) >= 24 \
                and straight_share(c.mask) >= cfg.grid_straight:
            return "grid"  # the crossings of a faint grid left by the threshold: they merge digits into one box
        return ""

    keep, blobs = [], []
    for c in cands:
        why = passes(c)
        if not why:
            keep.append(c)
        elif why != "small" and (cfg.recover_strokes or cfg.rethreshold) and c.mask is not None:
            blobs.append(c)
    # digits that a shadow's edge joined into one dropped blob: the blob's own threshold parts them, and
    # pieces with a sibling of their size beside them are candidates; a blob that gave some is done
    passed = list(keep)  # the page's own candidates: its stroke width, below
    if blobs and ink is not None and cfg.rethreshold:
        found = [[p for p in rethreshold(b, ink) if not passes(p)] for b in blobs]
        pieces = [p for ps in found for p in ps]
        taken = [[p for p in ps if _has_sibling(p, passed + pieces, p)] for ps in found]
        keep += [p for ps in taken for p in ps]
        blobs = [b for b, ps in zip(blobs, taken, strict=True) if not ps]
    # digits joined to a blob that is dropped (a remnant of a ruled line or a grid running to the page's
    # edge): the pen strokes in it, without what is much thinner than the page's strokes, may be
    # candidates of their own when a sibling of their size stands beside them
    if blobs and passed and cfg.recover_strokes:
        stroke = float(median([_stroke_width(c.mask) for c in passed]))
        found = [p for b in blobs for p in strokes_of(b, stroke) if not passes(p)]
        # digits stand in rows: a piece alone is more likely a stroke-wide edge of a shadow
        keep += [p for p in found if _has_sibling(p, keep + found, p)]
    # a small blob right beside a much bigger candidate is a dot or a stray piece of it, not a digit;
    # small digits elsewhere on the page (other numbers have other sizes) are kept, and so is a small
    # blob with a sibling of its size beside it on its line: a row of small digits that runs into a
    # big blob (a shadow, a grid line's remnant, a tall digit of another number) is not its dot
    small_near_big = set()
    for i, c in enumerate(keep):
        for other in keep:
            if other is c or max(c.h, c.w) >= cfg.min_rel_height * other.h:
                continue
            margin = 0.25 * other.h
            if (other.x - margin <= c.cx <= other.x + other.w + margin
                    and other.y - margin <= c.cy <= other.y + other.h + margin):
                if not _has_sibling(c, keep, other):
                    small_near_big.add(i)
                break
    keep = [c for i, c in enumerate(keep) if i not in small_near_big]
    return keep


def rethreshold(c: Candidate, ink: np.ndarray) -> list[Candidate]:
    """Digits inside a dropped blob that a shadow joined (its edge left a band of faint "ink" that the
    page's threshold took): Otsu's threshold on the blob's own ink separates the pen's strokes from the
    faint band; the pieces above it are the candidates. Nothing when the blob's ink has no clear second
    level (Otsu's separability under 0.6, as for a flat smudge) or is nearly all above the threshold. (A
    textured blob still falls into specks here, which `filter_candidates` drops as too small.)"""
    if c.mask is None:
        return []
    mask = c.mask.astype(bool)
    crop = to_uint8(ink[c.y:c.y + c.h, c.x:c.x + c.w])
    values = crop[mask]
    if values.size < 64 or bimodality(values.reshape(-1, 1)) < 0.6:
        return []
    t, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    strong = (crop > t) & mask
    if not strong.any() or strong.sum() > 0.9 * values.size:
        return []
    return _pieces(c, strong.view(np.uint8) * np.uint8(255))


def _pieces(c: Candidate, mask: np.ndarray) -> list[Candidate]:
    """The connected components of ``mask`` (an ink mask over ``c``'s box) as candidates of the page."""
    _, pieces = components(mask)
    return [Candidate(c.x + p.x, c.y + p.y, p.w, p.h, p.mask) for p in pieces]


def _stroke_width(mask: np.ndarray) -> float:
    """A candidate's stroke width: the shorter of its median vertical and horizontal ink runs."""
    m = mask.astype(np.uint8)
    return min(_median_run(m), _median_run(np.ascontiguousarray(m.T)))


def strokes_of(c: Candidate, stroke: float) -> list[Candidate]:
    """The pieces of pen stroke in candidate ``c`` (a dropped blob), given the page's stroke width: ink
    under 0.6 of a stroke thick (a ruled line's remnant, a grid's) goes, and the pieces left are
    connected components. (Taking away what is much thicker than a stroke, a shadow's dark strip, cost
    more than it gained: the strokes inside the strip go with it, and its edges are stroke-wide.)"""
    m = c.mask.astype(np.uint8)
    k = max(2, int(round(0.6 * stroke)))
    rest = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    if not rest.any() or rest.sum() > 0.98 * m.sum():
        return []  # nothing to take away: the blob is not digits joined to something else
    return _pieces(c, rest)


def _has_sibling(c: Candidate, cands: list[Candidate], big: Candidate) -> bool:
    """Whether another candidate of about ``c``'s height (not ``big``) stands beside it on its line:
    overlapping it vertically by half the shorter one, at most one height away horizontally."""
    for s in cands:
        if s is c or s is big or not 0.6 * c.h <= s.h <= 1.6 * c.h:
            continue
        v = min(c.y + c.h, s.y + s.h) - max(c.y, s.y)
        gap = max(s.x - (c.x + c.w), c.x - (s.x + s.w))
        if v >= 0.5 * min(c.h, s.h) and gap <= max(c.h, s.h):
            return True
    return False


def straight_share(mask: np.ndarray) -> float:
    """The share of a candidate's ink that lies on straight lines running (nearly) across its whole box:
    in rows inked over >= 70 % of the box's width or columns over >= 70 % of its height, allowing the
    line a tilt of a few percent (ink within a band of rows counts for the row). Near 1 for the pieces
    and crossings of ruled and grid lines; well below for digits (even a 4 or a 7 has strokes that do
    not run along a row or a column)."""
    m = mask.astype(np.uint8)
    h, w = m.shape
    band = max(1, round(0.04 * max(h, w)))
    rows = cv2.dilate(m, np.ones((2 * band + 1, 1), np.uint8)).sum(axis=1) >= 0.7 * w
    cols = cv2.dilate(m, np.ones((1, 2 * band + 1), np.uint8)).sum(axis=0) >= 0.7 * h
    near_r = cv2.dilate(rows.astype(np.uint8)[:, None], np.ones((2 * band + 1, 1), np.uint8))[:, 0] > 0
    near_c = cv2.dilate(cols.astype(np.uint8)[None, :], np.ones((1, 2 * band + 1), np.uint8))[0] > 0
    on = (near_r[:, None] | near_c[None, :]) & (m > 0)
    return float(on.sum() / max(int(m.sum()), 1))


def drop_line_fragments(cands: list[Candidate], ink: np.ndarray, cfg: PipelineConfig) -> list[Candidate]:
    """Drop thin upright candidates that are pieces of a faint ruled or grid line: the ink map shows the
    same line going on beyond both ends of the box, about as dark as the piece (a pen's 1 written over a
    faint line is darker than the line, and the paper above and below a 1 is blank)."""
    if cfg.fragment_reach <= 0:
        return cands
    h, w = ink.shape
    keep = []
    for c in cands:
        if c.w > 0.35 * c.h or c.h < 8 or c.mask is None:
            keep.append(c)
            continue
        ys, xs = np.nonzero(c.mask)
        a, b = np.polyfit(ys, xs, 1) if np.ptp(ys) > 0 else (0.0, float(xs.mean()))
        if abs(a) > 0.15:  # a slanted stroke: lines on a photo are near-upright
            keep.append(c)
            continue
        reach = int(cfg.fragment_reach * c.h)
        side = max(4, c.w + 3)
        rows = np.concatenate([np.arange(c.y - reach, c.y), np.arange(c.y + c.h, c.y + c.h + reach)])
        x = np.round(c.x + b + a * (rows - c.y)).astype(int)
        ok = (rows >= 0) & (rows < h) & (x - side >= 1) & (x + side < w - 1)
        if ok.sum() < c.h:  # too near the edge to tell
            keep.append(c)
            continue
        rows, x = rows[ok], x[ok]
        on = _max3(ink, rows, x)
        off = np.maximum(_max3(ink, rows, x - side), _max3(ink, rows, x + side))
        line_on = on > off + 8
        if line_on.mean() >= 0.7:
            inside = np.arange(c.y, c.y + c.h)
            xi = np.clip(np.round(c.x + b + a * (inside - c.y)).astype(int), 1, w - 2)
            if float(np.median(_max3(ink, inside, xi))) <= 2.0 * float(np.median(on[line_on])):
                continue
        keep.append(c)
    return keep


def _max3(ink: np.ndarray, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The darkest ink of the 3 pixels ``x - 1 .. x + 1`` in each row (``1 <= x < width - 1``)."""
    return np.maximum(np.maximum(ink[rows, x - 1], ink[rows, x]), ink[rows, x + 1]).astype(np.float32)


def _union(a: Candidate, b: Candidate) -> Candidate:
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1, y1 = max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for c in (a, b):
        mask[c.y - y0:c.y - y0 + c.h, c.x - x0:c.x - x0 + c.w] |= c.mask
    return Candidate(x0, y0, x1 - x0, y1 - y0, mask)


def merge_pieces(cands: list[Candidate], cfg: PipelineConfig) -> list[Candidate]:
    """Join pieces of one digit (a 5's flag, a 4 in two strokes, a broken stroke): boxes that overlap
    horizontally by ``merge_overlap`` of the narrower one and are vertically close."""
    cands = sorted(cands, key=lambda c: c.x)
    changed = True
    while changed:
        changed = False
        for i in range(len(cands)):
            for j in range(i + 1, len(cands)):
                a, b = cands[i], cands[j]
                if b.x > a.x + a.w:
                    break
                overlap = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
                gap = max(a.y, b.y) - min(a.y + a.h, b.y + b.h)
                tall = max(a.h, b.h)
                small, big = (a, b) if a.h < b.h else (b, a)
                # a short piece sitting on top of (or under) a taller one, like a 5's flag, needs less overlap
                stacked = small.h <= 0.45 * big.h and (small.cy < big.y + 0.3 * big.h or small.cy > big.y + 0.7 * big.h)
                need = cfg.merge_overlap * (0.6 if stacked else 1.0)
                if overlap >= need * min(a.w, b.w) and gap < 0.25 * tall:
                    u = _union(a, b)
                    if u.h <= 2.2 * tall:
                        cands[i] = u
                        del cands[j]
                        changed = True
                        break
            if changed:
                break
    return cands


def split_candidate(c: Candidate, parts: int) -> list[Candidate]:
    """Cut one box into ``parts`` at the ink-projection minima nearest to equal spacing."""
    profile = np.convolve(c.mask.sum(axis=0).astype(np.float32), np.ones(3) / 3, mode="same")
    cuts, prev = [], 0
    for k in range(1, parts):
        centre = int(k * c.w / parts)
        lo, hi = max(prev + 2, centre - c.w // (3 * parts)), min(c.w - 2, centre + c.w // (3 * parts))
        if hi <= lo:
            continue
        cut = lo + int(np.argmin(profile[lo:hi]))
        cuts.append(cut)
        prev = cut
    out = []
    edges = [0, *cuts, c.w]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sub = c.mask[:, a:b]
        rows = np.nonzero(sub.any(axis=1))[0]
        cols = np.nonzero(sub.any(axis=0))[0]
        if rows.size == 0:
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        out.append(Candidate(c.x + a + x0, c.y + y0, x1 - x0, y1 - y0, sub[y0:y1, x0:x1]))
    return out


def merge_options(cands: list[Candidate], options: list[list[list[Candidate]]], cfg: PipelineConfig
                  ) -> list[list[list[Candidate]]]:
    """Offer "one digit" for two close pieces of unequal height side by side (a 4 written in two strokes
    that do not touch), or for two small close pieces of one digit's size together: the pair's options
    become ``[[a, b], [a | b]]`` and the model's confidence decides, as for splits. Each candidate joins
    at most one pair."""
    used: set[int] = set()
    order = sorted(range(len(cands)), key=lambda i: cands[i].x)
    for k, i in enumerate(order):
        if i in used or len(options[i]) > 1:
            continue
        for j in order[k + 1:k + 3]:
            if j in used or len(options[j]) > 1:
                continue
            a, b = cands[i], cands[j]
            tall, short = (a, b) if a.h >= b.h else (b, a)
            gap = b.x - (a.x + a.w)
            inside = short.y >= tall.y - 0.1 * tall.h and short.y + short.h <= tall.y + tall.h + 0.1 * tall.h
            if -0.1 * tall.h <= gap <= cfg.merge_gap * tall.h and short.h <= 0.6 * tall.h and inside:
                options[i] = [[a, b], [_union(a, b)]]
                options[j] = []
                used.update((i, j))
                break
    # pieces of one digit that neither overlap nor stand side by side (a 5 whose bar came off above its
    # hook, a 7 broken at its corner): two small close pieces whose union is about as big as the digits
    # beside it on its line (the reference: pages hold numbers of many sizes) are offered as one
    for k, i in enumerate(order):
        if i in used or not options[i]:
            continue
        for j in order[k + 1:k + 3]:
            if j in used or not options[j]:
                continue
            a, b = cands[i], cands[j]  # (a split of either is moot: it is smaller than one digit)
            gap_x = max(a.x, b.x) - min(a.x + a.w, b.x + b.w)
            gap_y = max(a.y, b.y) - min(a.y + a.h, b.y + b.h)
            if max(gap_x, gap_y) > 0.5 * max(a.h, b.h):  # pieces of one digit: closer than half the taller
                continue
            x0, y0 = min(a.x, b.x), min(a.y, b.y)
            box = Candidate(x0, y0, max(a.x + a.w, b.x + b.w) - x0, max(a.y + a.h, b.y + b.h) - y0)
            ref = _line_height(box, [c for n, c in enumerate(cands) if n not in (i, j)])
            if ref is None or max(a.h, b.h) > cfg.fragment_height * ref:
                continue
            if max(gap_x, gap_y) <= 0.35 * ref and max(box.h, box.w) <= 1.25 * ref:
                options[i] = [[a, b], [_union(a, b)]]
                options[j] = []
                used.update((i, j))
                break
    return options


def _line_height(box: Candidate, others: list[Candidate]) -> float | None:
    """The median height of the candidates beside ``box`` on its text line (vertical overlap with it, at
    most two of its heights away), or None when there are none."""
    near = [c.h for c in others
            if min(c.y + c.h, box.y + box.h) - max(c.y, box.y) >= 0.5 * min(c.h, box.h)
            and max(c.x - (box.x + box.w), box.x - (c.x + c.w)) <= 2 * box.h]
    return float(median(near)) if near else None


def split_options(cands: list[Candidate], cfg: PipelineConfig) -> list[list[list[Candidate]]]:
    """For each candidate, the readings to choose from: ``[[c]]``, or for a box much wider than a digit
    (``split_aspect`` times its height, or ``split_relative`` times the median width) also the cut into
    2..k pieces. The recogniser keeps the option the model is most confident about."""
    if not cands:
        return []
    med_w = float(median([c.w for c in cands]))
    options = []
    for c in cands:
        opts = [[c]]
        aspect = c.w / max(c.h, 1)
        wide = aspect >= cfg.split_aspect or (len(cands) >= 3 and c.w >= cfg.split_relative * med_w
                                             and aspect >= 0.8) \
            or (aspect >= cfg.neck_aspect and c.mask is not None and _has_neck(c.mask))
        if wide and c.mask is not None:
            guess = max(round(aspect / cfg.digit_aspect), round(c.w / med_w) if len(cands) >= 3 else 2)
            for parts in sorted({2, int(np.clip(guess, 2, 8))}):
                pieces = split_candidate(c, parts)
                if len(pieces) > 1:
                    opts.append(pieces)
        options.append(opts)
    return options


def _has_neck(mask: np.ndarray) -> bool:
    """Whether a box holds two digits that touch at a neck: a column in its middle half whose ink is one
    short run (under a quarter of the box's height, or under 0.45 of the most ink in a column on either
    side of it: small digits in a thick pen), with ink on either side of it spanning over 0.8 of
    the box's height. One digit has no such column: its middle columns cross two or more strokes
    (0, 2, 3, 5, 7, 8, 9) or run tall (1), and where one stroke runs out to a side (a 2's tail, a
    7's bar, an open 4's bar to its upright) the ink on one side of it is short."""
    h, w = mask.shape
    m = np.pad(mask, ((1, 1), (0, 0))).astype(np.int8)
    runs = (np.diff(m, axis=0) == 1).sum(axis=0)
    ink = mask.sum(axis=0)
    for j in range(w // 4, w - w // 4):
        if runs[j] != 1 or ink[j] > 0.25 * h and ink[j] > 0.45 * min(ink[:j].max(), ink[j + 1:].max()):
            continue
        left, right = np.nonzero(mask[:, :j].any(axis=1))[0], np.nonzero(mask[:, j + 1:].any(axis=1))[0]
        if left.size and right.size and min(np.ptp(left), np.ptp(right)) + 1 >= 0.8 * h:
            return True
    return False


def group_numbers(digits: list[Digit], cfg: PipelineConfig) -> list[Number]:
    """Lines top to bottom (boxes overlapping vertically by ``line_overlap`` of the shorter), digits left
    to right, and a new number wherever the gap exceeds ``number_gap`` times the line's digit height."""
    lines: list[list[Digit]] = []
    for d in sorted(digits, key=lambda d: d.box[1] + d.box[3] / 2):
        x, y, w, h = d.box
        best = None
        for line in lines:
            ly0 = float(median([e.box[1] for e in line]))
            ly1 = float(median([e.box[1] + e.box[3] for e in line]))
            overlap = min(y + h, ly1) - max(y, ly0)
            if overlap >= cfg.line_overlap * min(h, ly1 - ly0):
                best = line
                break
        if best is None:
            lines.append([d])
        else:
            best.append(d)
    lines.sort(key=lambda line: float(median([e.box[1] + e.box[3] / 2 for e in line])))
    numbers = []
    for index, line in enumerate(lines):
        line.sort(key=lambda d: d.box[0])
        group = [line[0]]
        for prev, d in zip(line[:-1], line[1:], strict=True):
            # the gap is measured against the two neighbours' own height (a line may hold numbers of
            # very different sizes); digits of one number are about equally tall
            low, high = sorted((prev.box[3], d.box[3]))
            height = (low + high) / 2
            if d.box[0] - (prev.box[0] + prev.box[2]) > cfg.number_gap * height or high > cfg.number_height_ratio * low:
                numbers.append(_number(group, index))
                group = []
            group.append(d)
        numbers.append(_number(group, index))
    return numbers


def line_texts(numbers: list[Number]) -> list[str]:
    """The digits of each text line, top to bottom, numbers joined without separators."""
    out: dict[int, str] = {}
    for n in numbers:
        out[n.line] = out.get(n.line, "") + n.text
    return [out[k] for k in sorted(out)]


def _number(digits: list[Digit], line: int = 0) -> Number:
    x0 = min(d.box[0] for d in digits)
    y0 = min(d.box[1] for d in digits)
    x1 = max(d.box[0] + d.box[2] for d in digits)
    y1 = max(d.box[1] + d.box[3] for d in digits)
    return Number("".join(str(d.label) for d in digits), (x0, y0, x1 - x0, y1 - y0), digits, line)
