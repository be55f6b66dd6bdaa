"""The model's input keeps the faint anti-aliased edge of a digit's strokes that the threshold cut off."""

import cv2
import numpy as np

from digitlab.vision.normalize import to_mnist


def test_the_mask_fringe_keeps_a_faint_edge_and_nothing_beyond_it():
    ink = np.zeros((60, 60), np.float32)
    cv2.line(ink, (30, 8), (30, 52), 1.0, 5)  # the stroke's core, over the threshold
    halo = cv2.dilate(ink, np.ones((3, 3), np.uint8)) - ink  # its one-pixel anti-aliased edge, under it
    ink += 0.3 * halo
    ink[5:55, 50:53] = 1.0  # another stroke in the crop, not of this digit
    mask = (ink > 0.5) & (np.arange(60) < 45)[None, :]
    cut = to_mnist(ink, mask, stroke=False)
    kept = to_mnist(ink, mask, stroke=False, fringe=1)
    full = to_mnist(ink * (np.arange(60) < 45)[None, :], stroke=False)  # the digit's whole ink, nothing else
    assert np.abs(kept - full).max() < 1e-6  # the fringe is exactly the edge, and the other stroke stays out
    assert np.abs(cut - full).max() > 0.1
