"""The model's input keeps the faint anti-aliased edge of a digit's strokes that the threshold cut off."""

import cv2
import numpy as np

from digitlab.vision.normalize import to_mnist
from digitlab.vision.pipeline import Candidate, PipelineConfig
from digitlab.vision.recognizer import candidate_input


def _stroke_with_halo() -> np.ndarray:
    ink = np.zeros((60, 60), np.float32)
    cv2.line(ink, (30, 8), (30, 52), 1.0, 5)  # the stroke's core (columns 28-32), over the threshold
    halo = cv2.dilate(ink, np.ones((3, 3), np.uint8)) - ink  # its one-pixel anti-aliased edge, under it
    ink += 0.3 * halo
    ink[5:55, 36:39] = 1.0  # another stroke, three pixels from the edge: not of this digit
    return ink


def test_the_mask_fringe_keeps_a_faint_edge_and_nothing_beyond_it():
    ink = _stroke_with_halo()
    mine = (np.arange(60) < 35)[None, :]
    mask = (ink > 0.5) & mine
    cut = to_mnist(ink, mask, stroke=False)
    kept = to_mnist(ink, mask, stroke=False, fringe=1)
    full = to_mnist(ink * mine, stroke=False)  # the digit's whole ink, nothing else
    assert np.abs(kept - full).max() < 1e-6  # the fringe is exactly the edge, and the other stroke stays out
    assert np.abs(cut - full).max() > 0.1
    wide = to_mnist(ink, mask, stroke=False, fringe=4)  # a fringe that reaches the other stroke takes it in
    assert np.abs(wide - full).max() > 0.1


def test_candidate_input_applies_the_configured_fringe():
    ink = (255 * _stroke_with_halo()).astype(np.uint8)
    mask = ink[:, :35] > 128
    ys, xs = np.nonzero(mask)
    box = Candidate(int(xs.min()) - 1, int(ys.min()) - 1, int(np.ptp(xs)) + 3, int(np.ptp(ys)) + 3)
    box.mask = mask[box.y:box.y + box.h, box.x:box.x + box.w]
    on = candidate_input(ink, box, PipelineConfig(stroke_norm=False))
    off = candidate_input(ink, box, PipelineConfig(stroke_norm=False, mask_fringe=0))
    crop = ink[box.y:box.y + box.h, box.x:box.x + box.w]
    assert np.abs(on - to_mnist(crop, box.mask, stroke=False, fringe=1)).max() == 0
    assert np.abs(off - to_mnist(crop, box.mask, stroke=False)).max() == 0
    assert np.abs(on - off).max() > 0.1  # the halo inside the box joins


def test_an_empty_crop_gives_an_empty_input():
    assert to_mnist(np.zeros((0, 5), np.float32), np.zeros((0, 5), bool), fringe=1).sum() == 0
