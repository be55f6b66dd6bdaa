"""Digits that a shadow's edge joined into one dropped blob are found again by the blob's own threshold;
a straight 1 that fills its box is a stroke, not a blob."""

import cv2
import numpy as np

from digitlab.vision import pipeline as P


def _shadowed_row() -> tuple[np.ndarray, np.ndarray]:
    """An ink map with two numbers: one in clear paper, one of three 0s inside a band of faint "ink"
    (the residue of a shadow's edge) that joins them into one blob with the page's threshold."""
    ink = np.zeros((300, 400), np.uint8)
    for k in range(3):
        cv2.ellipse(ink, (60 + k * 44, 60), (13, 18), 0, 0, 360, 200, 4)  # the clear number
    ink[120:190, 40:260] = 70  # the faint band
    for k in range(3):
        cv2.ellipse(ink, (80 + k * 44, 155), (13, 18), 0, 0, 360, 210, 4)
    return ink, (ink > 50).astype(np.uint8) * 255


def test_digits_in_a_shadow_band_are_found_by_the_blob_own_threshold():
    ink, mask = _shadowed_row()
    _, cands = P.components(mask)
    cfg = P.PipelineConfig(recover_strokes=False)
    without = P.filter_candidates(cands, mask.shape, cfg)  # the band is one blob, too full of ink: dropped
    assert sorted(c.y < 100 for c in without) == [True] * 3
    kept = P.filter_candidates(cands, mask.shape, cfg, ink)
    band = sorted((c for c in kept if c.y > 100), key=lambda c: c.x)
    assert [int(c.cx // 44) for c in band] == [1, 2, 3]  # one box per 0, none for the band
    assert all(abs(c.cy - 155) <= 1.5 and 36 <= c.h <= 44 and 26 <= c.w <= 34 for c in band)
    off = P.filter_candidates(cands, mask.shape, P.PipelineConfig(recover_strokes=False, rethreshold=False), ink)
    assert len(off) == 3


def test_with_every_recovery_on_each_digit_of_the_band_is_one_box():
    ink, mask = _shadowed_row()
    _, cands = P.components(mask)
    kept = P.filter_candidates(cands, mask.shape, P.PipelineConfig(), ink)  # stroke recovery on as well
    band = [c for c in kept if c.y > 100]
    assert len(band) == 3 and len(kept) == 6


def test_a_blob_without_two_levels_of_ink_gives_nothing():
    ink = np.zeros((100, 100), np.uint8)
    ink[20:80, 20:80] = 120
    c = P.Candidate(20, 20, 60, 60, np.ones((60, 60), bool))
    assert P.rethreshold(c, ink) == []
    assert P.rethreshold(P.Candidate(20, 20, 60, 60, None), ink) == []


def test_a_textured_blob_gives_no_candidate():
    rng = np.random.default_rng(0)
    ink = np.zeros((300, 300), np.uint8)
    ink[100:200, 100:200] = np.clip(rng.normal(120, 30, (100, 100)), 60, 200).astype(np.uint8)  # a smudge
    _, cands = P.components((ink > 50).astype(np.uint8) * 255)
    assert P.filter_candidates(cands, ink.shape, P.PipelineConfig(), ink) == []
    assert P.rethreshold(P.Candidate(20, 20, 60, 60, None), ink) == []


def test_a_thin_full_one_is_kept_a_full_square_is_not():
    def full(x, w, h):
        return P.Candidate(x, 50, w, h, np.ones((h, w), bool))
    one, square = full(100, 4, 30), full(200, 28, 30)
    kept = P.filter_candidates([one, square], (300, 300), P.PipelineConfig())
    assert kept == [one]
