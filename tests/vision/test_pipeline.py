"""Every stage of the recogniser alone, the whole pipeline on edge cases, and the MNIST round trip."""

import cv2
import numpy as np
import pytest

from digitlab.data import load_mnist, to_float
from digitlab.errors import DigitlabError
from digitlab.vision import PipelineConfig, Recognizer
from digitlab.vision import pipeline as P
from digitlab.vision.normalize import MNIST_STROKE, stroke_width, to_mnist


@pytest.fixture(scope="module")
def rec():
    return Recognizer()


@pytest.fixture(scope="module")
def mnist_test():
    return load_mnist("test")


def page_with(digits, heights, size=(400, 700), paper=225, seed=0, top=None):
    """Dark MNIST digits pasted left to right on a light page (at random heights, or all at ``top``);
    returns the page and the truth boxes."""
    rng = np.random.default_rng(seed)
    page = np.full(size, paper, np.float32)
    boxes, x = [], 30
    for d, h in zip(digits, heights, strict=True):
        ys, xs = np.nonzero(d > 40)
        crop = d[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32) / 255
        w = max(2, int(round(crop.shape[1] * h / crop.shape[0])))
        crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
        y = int(rng.integers(20, size[0] - h - 20)) if top is None else top
        page[y:y + h, x:x + w] *= 1 - 0.85 * crop
        boxes.append((x, y, w, h))
        x += w + int(0.6 * h)
    return np.clip(page, 0, 255).astype(np.uint8), boxes


def test_grayscale_accepts_gray_bgr_bgra():
    g = np.full((5, 6), 100, np.uint8)
    assert P.grayscale(g) is g
    assert P.grayscale(np.dstack([g] * 3)).shape == (5, 6)
    assert P.grayscale(np.dstack([g] * 4)).shape == (5, 6)
    with pytest.raises(ValueError, match="shape"):
        P.grayscale(np.zeros((2, 2, 5), np.uint8))


def test_flattening_removes_a_lighting_gradient():
    h, w = 300, 400
    gradient = np.linspace(250, 90, w)[None, :] * np.ones((h, 1))  # paper from bright to dark
    img = gradient.copy()
    img[100:200, 50:60] *= 0.3  # a dark stroke in the bright part
    img[100:200, 330:340] *= 0.3  # and one in the dark part
    ink = P.flatten_illumination(img.astype(np.uint8), PipelineConfig())
    paper = ink[20:80].astype(float)
    assert paper.mean() < 10 and paper.std() < 6  # the gradient is gone
    assert ink[110:190, 52:58].mean() > 150 and ink[110:190, 332:338].mean() > 150  # both strokes equally strong


@pytest.mark.parametrize("method", ["otsu", "adaptive", "auto"])
def test_binarize_recovers_the_ink(method):
    ink = np.zeros((200, 200), np.uint8)
    cv2.circle(ink, (100, 100), 50, 200, 8)
    noisy = cv2.add(ink, np.random.default_rng(0).integers(0, 20, ink.shape, dtype=np.uint8))
    mask, used = P.binarize(noisy, PipelineConfig(threshold=method))
    truth = ink > 0
    iou = np.logical_and(mask > 0, truth).sum() / np.logical_or(mask > 0, truth).sum()
    assert iou > 0.85 and (used == method or method == "auto")


def test_auto_threshold_picks_by_bimodality():
    clean = np.zeros((100, 100), np.uint8)
    clean[40:60] = 220
    assert P.bimodality(clean) > 0.9
    assert P.binarize(clean, PipelineConfig())[1] == "otsu"
    noise = np.random.default_rng(0).integers(0, 255, (100, 100), dtype=np.uint8)
    assert P.bimodality(noise) < 0.8


def test_hysteresis_keeps_a_shiny_marker_core():
    ink = np.zeros((100, 100), np.uint8)
    ink[20:80, 40:60] = 230
    ink[20:80, 47:53] = 90  # the bright reflection in the middle of a marker stroke
    mask, _ = P.binarize(ink, PipelineConfig(threshold="otsu"))
    assert mask[20:80, 40:60].all()


def test_remove_lines_erases_ruled_lines_and_keeps_strokes():
    mask = np.zeros((300, 400), np.uint8)
    for y in range(30, 300, 40):
        mask[y:y + 2, :] = 255  # ruled paper
    mask[50:150, 100:112] = 255  # a thick vertical stroke, crossing two lines
    mask[200:212, 150:330] = 255  # a thick horizontal stroke (a 7's bar), longer than line_frac * width
    out = P.remove_lines(mask, PipelineConfig())
    assert out[30:32, 200:400].sum() == 0 and out[270:272].sum() == 0
    assert out[50:150, 100:112].mean() > 245 and out[200:212, 150:330].mean() > 245  # strokes kept (>= 96 %)



def test_remove_lines_follows_tilted_lines_and_keeps_small_digits_on_them():
    mask = np.zeros((600, 800), np.uint8)
    for y0 in range(40, 600, 45):  # ruled paper on a tilted photo: 24 px drop over the width
        cv2.line(mask, (0, y0), (799, y0 + 24), 255, 2)
    mask[100:118, 300:303] = 255  # a small 1 standing on the line below it (y ~ 116 there)
    mask[130:150, 500:518] = 255  # a small blob crossing the line through y ~ 140
    out = P.remove_lines(mask, PipelineConfig())
    assert out[:, 600:].sum() < 0.02 * mask[:, 600:].sum()  # the lines are gone
    assert out[100:118, 300:303].mean() > 240 and out[130:150, 500:518].mean() > 240  # the digits stay


def test_faint_line_fragments_are_dropped_but_a_pen_one_is_kept():
    ink = np.zeros((300, 300), np.uint8)
    ink[:, 100:102] = 40  # a faint grid line, the whole height
    ink[:, 200:202] = 40  # another one, with a dark pen 1 written over it
    ink[120:160, 199:204] = 220
    cands = [P.Candidate(100, 120, 2, 30, np.ones((30, 2), bool)),  # a piece of the faint line
             P.Candidate(199, 120, 5, 40, np.ones((40, 5), bool)),  # the pen 1
             P.Candidate(50, 120, 3, 40, np.ones((40, 3), bool))]   # a 1 on blank paper
    kept = P.drop_line_fragments(cands, ink, PipelineConfig())
    assert [c.x for c in kept] == [199, 50]

def test_filter_drops_specks_dashes_and_border_junk():
    mask = np.zeros((300, 300), np.uint8)
    cv2.ellipse(mask, (115, 130), (14, 28), 0, 0, 360, 255, 6)  # a digit-sized 0
    mask[10:12, 10:12] = 255  # a speck
    mask[200:204, 50:200] = 255  # a dash, too wide for its height
    mask[0:50, 280:300] = 255  # touches the border
    _, cands = P.components(mask)
    kept = P.filter_candidates(cands, mask.shape, PipelineConfig())
    assert [(c.x, c.y) for c in kept] == [(98, 99)]


def test_merge_joins_pieces_of_one_digit_but_not_neighbours():
    def cand(x, y, w, h):
        return P.Candidate(x, y, w, h, np.ones((h, w), bool))
    five = [cand(10, 10, 30, 8), cand(10, 20, 28, 40)]  # a 5's flag above its body
    merged = P.merge_pieces(five, PipelineConfig())
    assert len(merged) == 1 and (merged[0].y, merged[0].h) == (10, 50)
    neighbours = [cand(10, 10, 30, 50), cand(45, 10, 30, 50)]
    assert len(P.merge_pieces(neighbours, PipelineConfig())) == 2


def test_touching_digits_are_split(rec, mnist_test):
    a, b = mnist_test.images[0], mnist_test.images[1]  # a 7 and a 2
    pair = np.zeros((28, 50), np.uint8)
    pair[:, :28] = a
    pair[:, 22:50] = np.maximum(pair[:, 22:50], b)
    page, _ = page_with([pair], [90], size=(200, 300))
    res = rec(page)
    assert "".join(n.text for n in res.numbers) == "72"


def test_stroke_width_is_measured_and_normalised():
    thin = np.zeros((100, 100), np.uint8)
    cv2.line(thin, (20, 50), (80, 50), 1, 2)
    thick = np.zeros((100, 100), np.uint8)
    cv2.line(thick, (20, 50), (80, 50), 1, 12)
    assert 1 <= stroke_width(thin) <= 4.5 and 10 <= stroke_width(thick) <= 14
    for m in (thin, thick):
        tall = np.zeros((200, 100), np.float32)
        cv2.line(tall, (50, 10), (50, 190), 1.0, 2 if m is thin else 24)
        cv2.line(tall, (50, 10), (20, 60), 1.0, 2 if m is thin else 24)
        x = to_mnist(tall, tall > 0.5)
        assert abs(stroke_width(x > 0.5) - MNIST_STROKE) < 1.3


def test_to_mnist_matches_the_mnist_recipe(mnist_test):
    d = mnist_test.images[3]
    x = to_mnist(d, d > 0, stroke=False)
    ys, xs = np.nonzero(x > 0.05)
    assert max(np.ptp(ys), np.ptp(xs)) + 1 in (19, 20, 21)  # longest side 20 px
    cy = (x.sum(axis=1) @ np.arange(28)) / x.sum()
    cx = (x.sum(axis=0) @ np.arange(28)) / x.sum()
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1  # centre of mass in the middle
    assert to_mnist(np.zeros((10, 10))).sum() == 0


def test_mnist_round_trip_keeps_accuracy(rec, mnist_test):
    """MNIST test digits pasted at random scale and place into a page come back as 28x28 inputs that
    the model reads within 0.5 point of the originals."""
    rng = np.random.default_rng(0)
    n = 300
    idx = rng.choice(len(mnist_test), n, replace=False)
    originals = rec.probabilities(to_float(mnist_test.images[idx])).argmax(axis=1) == mnist_test.labels[idx]
    read = []
    for i in idx:
        h = int(rng.integers(20, 150))
        page, (box,) = page_with([mnist_test.images[i]], [h], size=(h + 80, h + 120), seed=int(i))
        res = rec(page)
        read.append(len(res.digits) == 1 and res.digits[0].label == mnist_test.labels[i])
    assert np.mean(read) >= np.mean(originals) - 0.005


def test_boxes_are_in_input_pixels_for_huge_images(rec, mnist_test):
    page, boxes = page_with([mnist_test.images[0], mnist_test.images[1]], [300, 300], size=(1200, 3200))
    res = rec(page)
    assert res.width == 3200 and res.height == 1200 and len(res.digits) == 2
    for d, (x, y, _, h) in zip(sorted(res.digits, key=lambda d: d.box[0]), boxes, strict=True):
        assert abs(d.box[0] - x) < 12 and abs(d.box[1] - y) < 12 and abs(d.box[3] - h) < 20


@pytest.mark.parametrize("value", [0, 255, 128])
def test_blank_black_and_white_pages_find_nothing(rec, value):
    res = rec(np.full((480, 640, 3), value, np.uint8))
    assert res.digits == [] and res.numbers == []


def test_paper_texture_alone_finds_nothing(rec):
    rng = np.random.default_rng(1)
    paper = (220 + rng.normal(0, 4, (480, 640))).clip(0, 255).astype(np.uint8)
    assert rec(paper).digits == []


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (20, 20, 3)])
def test_tiny_images_do_not_crash(rec, shape):
    res = rec(np.full(shape, 200, np.uint8))
    assert res.width == shape[1] and res.digits == []


def test_digit_at_the_border_is_clamped(rec, mnist_test):
    page, _ = page_with([mnist_test.images[0]], [100], size=(160, 200))
    page = page[:, 20:]  # move it so that its box nearly touches the left edge
    res = rec(page)
    for d in res.digits + [type("B", (), {"box": b})() for b in res.rejected_boxes]:
        x, y, w, h = d.box
        assert 0 <= x and 0 <= y and x + w <= page.shape[1] and y + h <= page.shape[0]


def test_not_an_image_is_a_clear_error(rec):
    with pytest.raises(DigitlabError, match="empty"):
        rec(np.zeros((0, 0), np.uint8))


def test_numbers_are_grouped_into_lines_and_read_left_to_right():
    def digit(x, y, label, h=40):
        return P.Digit((x, y, 25, h), label, 0.99, [(label, 0.99)], np.zeros((28, 28)))
    digits = [digit(300, 105, 9), digit(100, 100, 1), digit(130, 102, 2), digit(10, 300, 7), digit(40, 298, 3),
              digit(70, 301, 5)]
    numbers = P.group_numbers(digits, PipelineConfig())
    assert [n.text for n in numbers] == ["12", "9", "735"]
    assert P.line_texts(numbers) == ["129", "735"]
    assert numbers[0].box == (100, 100, 55, 42)


def test_two_unequal_pieces_side_by_side_are_offered_as_one_digit():
    def cand(x, y, w, h):
        return P.Candidate(x, y, w, h, np.ones((h, w), bool))
    cfg = PipelineConfig()
    four = [cand(10, 10, 40, 45), cand(52, 0, 8, 100)]  # the open top of a 4, then its long stroke
    opts = P.merge_options(four, [[[c]] for c in four], cfg)
    assert len(opts[0]) == 2 and opts[1] == [] and opts[0][1][0].w == 50
    pair = [cand(10, 10, 40, 90), cand(55, 12, 40, 88)]  # two digits of a number: not offered
    assert P.merge_options(pair, [[[c]] for c in pair], cfg) == [[[pair[0]]], [[pair[1]]]]


def test_two_small_pieces_of_one_digit_are_offered_as_one():
    def cand(x, y, w, h):
        return P.Candidate(x, y, w, h, np.ones((h, w), bool))
    cfg = PipelineConfig()
    # a 2, then a 5 whose bar came off above its hook (they neither overlap nor stand side by side), a 2
    two, hook, bar, two_b = cand(0, 20, 44, 45), cand(53, 41, 15, 24), cand(62, 21, 39, 13), cand(112, 24, 36, 42)
    others = [cand(x, 200, 40, 44) for x in (0, 50, 100)]  # a number on the next line
    cands = [two, hook, bar, two_b, *others]
    split = P.split_options(cands, cfg)
    def boxes(options):
        return [[[(c.x, c.y, c.w, c.h) for c in opt] for opt in o] for o in options]
    opts = boxes(P.merge_options(cands, split, cfg))
    assert opts[1] == [[(53, 41, 15, 24), (62, 21, 39, 13)], [(53, 21, 48, 44)]] and opts[2] == []
    assert opts[0] == [[(0, 20, 44, 45)]] and opts[3] == [[(112, 24, 36, 42)]]
    far = [two, hook, cand(62, 0, 39, 13), two_b, *others]  # the bar too far above: two pieces of nothing
    assert boxes(P.merge_options(far, P.split_options(far, cfg), cfg))[1] == [[(53, 41, 15, 24)]]


def test_numbers_of_different_sizes_on_one_line_are_not_joined():
    def digit(x, h, label):
        return P.Digit((x, 100 - h // 2, int(0.6 * h), h), label, 0.99, [(label, 0.99)], np.zeros((28, 28)))
    big = [digit(0, 120, 4), digit(80, 120, 2)]  # gaps of 8 px: one number
    small = [digit(170, 20, 7), digit(184, 20, 3)]  # 18 px after the big 2, itself a fifth as tall
    numbers = P.group_numbers(big + small, PipelineConfig())
    assert [n.text for n in numbers] == ["42", "73"]


def test_fast_downscale_keeps_the_size_and_the_picture():
    rng = np.random.default_rng(0)
    gray = cv2.GaussianBlur((rng.random((721, 1283)) * 255).astype(np.uint8), (0, 0), 3)
    for side in (640, 352, 416, 1000):
        exact, s = P.downscale(gray, side)
        fast, s_fast = P.downscale(gray, side, fast=True)
        assert s == s_fast and fast.shape == exact.shape and max(fast.shape) == side
        assert np.abs(fast.astype(int) - exact.astype(int)).mean() < 1.5
    assert P.downscale(gray, 2000, fast=True)[0] is gray
