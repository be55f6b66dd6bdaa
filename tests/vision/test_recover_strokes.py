"""Digits joined to a dropped blob (a ruled line's remnant running to the page's edge, a shadow) are
recovered as candidates; small digits in a row beside a big blob are not taken for its dots."""

import cv2
import numpy as np

from digitlab.vision import pipeline as P


def _ring_row(mask: np.ndarray, x0: int, y: int, n: int, h: int = 40, stroke: int = 4) -> None:
    for k in range(n):
        cv2.ellipse(mask, (x0 + k * (h + 4), y), (h // 3, h // 2 - 2), 0, 0, 360, 255, stroke)


def test_digits_on_a_line_remnant_that_runs_to_the_border_are_recovered():
    mask = np.zeros((300, 400), np.uint8)
    _ring_row(mask, 150, 150, 3)  # three 0s ...
    mask[168:170, 0:300] = 255  # ... joined by a thin line remnant that runs off the left edge
    _ring_row(mask, 150, 60, 2)  # another number on the page: the page's stroke width
    _, cands = P.components(mask)
    off = P.filter_candidates(cands, mask.shape, P.PipelineConfig(recover_strokes=False))
    assert len(off) == 2  # the row on the line is one border-touching blob: dropped
    kept = P.filter_candidates(cands, mask.shape, P.PipelineConfig())
    on_line = sorted(c.x for c in kept if c.y > 100)
    assert len(on_line) == 3
    assert all(c.h >= 36 and c.w < 40 for c in kept)


def test_a_lone_stroke_wide_piece_of_a_blob_is_not_recovered():
    mask = np.zeros((300, 400), np.uint8)
    _ring_row(mask, 150, 60, 2)
    cv2.line(mask, (240, 110), (256, 260), 255, 4)  # a stroke-wide edge (of a shadow, of the page) ...
    mask[200:202, 0:250] = 255  # ... joined to a line remnant that runs off the left edge
    _, cands = P.components(mask)
    kept = P.filter_candidates(cands, mask.shape, P.PipelineConfig())
    assert len(kept) == 2


def test_small_digits_in_a_row_beside_a_big_blob_are_kept_a_lone_dot_is_not():
    def box(x, y, w, h):
        return P.Candidate(x, y, w, h, np.pad(np.ones((h - 4, w - 4), bool), 2))
    big = box(100, 50, 40, 120)
    row = [box(145 + 16 * k, 150, 12, 20) for k in range(3)]  # small digits starting beside it
    kept = P.filter_candidates([big, *row], (400, 400), P.PipelineConfig(recover_strokes=False))
    assert len(kept) == 4
    dot = box(145, 150, 12, 20)
    kept = P.filter_candidates([big, dot], (400, 400), P.PipelineConfig(recover_strokes=False))
    assert len(kept) == 1


def _touching_pair() -> np.ndarray:
    """A 0 and a 1 that touch at a thin neck: a box only about as wide as it is tall."""
    m = np.zeros((44, 46), np.uint8)
    cv2.ellipse(m, (15, 22), (12, 19), 0, 0, 360, 1, 4)
    cv2.line(m, (38, 3), (38, 41), 1, 4)
    m[20:23, 26:37] = 1  # the neck
    return m.astype(bool)


def test_a_neck_between_touching_digits_is_found_one_digit_has_none():
    assert P._has_neck(_touching_pair())
    zero = np.zeros((44, 46), np.uint8)
    cv2.ellipse(zero, (23, 22), (20, 19), 0, 0, 360, 1, 4)
    two = np.zeros((44, 46), np.uint8)  # a 2 with a long tail running off to the right
    cv2.ellipse(two, (14, 26), (10, 10), 0, 0, 360, 1, 4)
    cv2.line(two, (14, 3), (20, 16), 1, 4)
    cv2.line(two, (20, 16), (44, 42), 1, 4)
    for digit in (zero, two):
        assert not P._has_neck(digit.astype(bool))


def test_a_touching_pair_about_as_wide_as_tall_is_offered_a_split():
    c = P.Candidate(10, 10, 46, 44, _touching_pair())
    opts = P.split_options([c], P.PipelineConfig())
    assert len(opts[0]) > 1 and len(opts[0][1]) == 2
    off = P.split_options([c], P.PipelineConfig(neck_aspect=9.0))
    assert len(off[0]) == 1


def test_an_open_four_has_no_neck():
    four = np.zeros((44, 40), np.uint8)  # the diagonal ends at the bar, well above the bottom
    cv2.line(four, (12, 2), (3, 28), 1, 4)
    cv2.line(four, (3, 28), (38, 28), 1, 4)
    cv2.line(four, (30, 2), (30, 42), 1, 4)
    assert not P._has_neck(four.astype(bool))


def test_a_thick_neck_between_small_thick_digits_is_found():
    m = np.zeros((22, 26), np.uint8)  # a small 0 and 1 in a thick pen, touching over a third of the height
    cv2.ellipse(m, (7, 11), (5, 9), 0, 0, 360, 1, 4)
    cv2.line(m, (21, 1), (21, 20), 1, 5)
    m[8:15, 12:20] = 1
    assert P._has_neck(m.astype(bool))
