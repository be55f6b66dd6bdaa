"""Grid remnants: the sparse networks of faint grid lines that survive the threshold are dropped as
candidates (they chained digits into one box), thin-pen digits are not."""

import cv2
import numpy as np

from digitlab.vision import pipeline as P


def _cand(mask: np.ndarray, x: int = 20, y: int = 20) -> P.Candidate:
    return P.Candidate(x, y, mask.shape[1], mask.shape[0], mask.astype(bool))


def _grid() -> np.ndarray:
    m = np.zeros((92, 100), np.uint8)
    for x in (5, 50, 95):
        m[:, x] = 1
    for y in (10, 60):
        m[y, :] = 1
    return m


def _thin_digits() -> dict[str, np.ndarray]:
    four = np.zeros((60, 45), np.uint8)
    cv2.line(four, (30, 2), (4, 40), 1, 2)
    cv2.line(four, (4, 40), (43, 40), 1, 2)
    cv2.line(four, (32, 15), (32, 58), 1, 2)
    seven = np.zeros((60, 40), np.uint8)
    cv2.line(seven, (2, 3), (37, 3), 1, 2)
    cv2.line(seven, (37, 3), (14, 57), 1, 2)
    five = np.zeros((60, 45), np.uint8)
    cv2.line(five, (3, 3), (40, 3), 1, 2)
    cv2.line(five, (3, 3), (3, 30), 1, 2)
    cv2.ellipse(five, (20, 42), (17, 15), 0, -90, 200, 1, 2)
    return {"4": four, "7": seven, "5": five}


def test_straight_share_tells_grid_lines_from_digits():
    assert P.straight_share(_grid()) > 0.95
    tilted = np.zeros((80, 100), np.uint8)  # a grid crossing photographed a little askew
    cv2.line(tilted, (0, 30), (99, 33), 1, 1)
    cv2.line(tilted, (48, 0), (51, 79), 1, 1)
    assert P.straight_share(tilted) > 0.9
    for name, digit in _thin_digits().items():
        assert P.straight_share(digit) < 0.8, name


def test_filter_drops_grid_remnants_and_keeps_thin_pen_digits():
    cfg = P.PipelineConfig()
    shape = (400, 400)
    digits = [_cand(d, 40 + 60 * i, 200) for i, d in enumerate(_thin_digits().values())]
    kept = P.filter_candidates([_cand(_grid()), *digits], shape, cfg)
    assert [(c.x, c.y) for c in kept] == [(c.x, c.y) for c in digits]
    off = P.filter_candidates([_cand(_grid())], shape, P.PipelineConfig(grid_density=0.0))
    assert len(off) == 1  # the rule can be switched off


def test_grid_page_reads_more_digits():
    # a synthetic grid-paper page of the benchmark where grid remnants chained two numbers into one box
    from digitlab.bench.scenes import score_scene
    from digitlab.data.scenes import render_scene
    from digitlab.vision import PipelineConfig, Recognizer

    scene = render_scene(167562036, "clutter")
    rec = Recognizer()
    on = score_scene(scene, rec(scene.image))
    off = score_scene(scene, Recognizer(rec.model, PipelineConfig(grid_density=0.0))(scene.image))
    assert on["matched"] >= off["matched"] + 3 and on["false"] <= off["false"]
