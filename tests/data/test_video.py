"""The synthetic camera video: seeded, moving, with truth that follows the ink."""

import numpy as np
import pytest

from digitlab.data.video import MovingPage


def test_frames_are_a_pure_function_of_seed_and_index():
    a, b = MovingPage(3, frames=40), MovingPage(3, frames=40)
    np.testing.assert_array_equal(a.frame(17).image, b.frame(17).image)
    assert a.frame(17).numbers == b.frame(17).numbers
    assert not np.array_equal(a.frame(0).image, MovingPage(4, frames=40).frame(0).image)


def test_truth_boxes_follow_the_ink_and_the_camera_moves():
    video = MovingPage(1, size=(480, 640), digits=8, frames=90)
    assert sum(len(t) for t in video.texts) == 8
    centres = []
    for i in (0, 30, 60):
        f = video.frame(i)
        assert f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8
        gray = f.image.mean(axis=2)
        paper = np.median(gray)
        for n in f.numbers:
            for x, y, w, h in n.digit_boxes:
                inside = gray[max(y, 0):y + h, max(x, 0):x + w]
                assert inside.min() < paper - 60, "a truth box without dark ink in it"
        centres.append(np.mean([n.box[0] + n.box[2] / 2 for n in f.numbers]))
    assert np.ptp(centres) > 3, "the camera did not move"


def test_the_hand_hides_numbers_for_a_while():
    video = MovingPage(2, frames=150)
    hidden = [not all(n.visible for n in video.frame(i).numbers) for i in range(0, 150, 3)]
    assert any(hidden) and not all(hidden)
    assert not any(not n.visible for n in MovingPage(2, frames=150, hand=False).frame(60).numbers
                   if 2 <= n.box[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        MovingPage(-1)
    with pytest.raises(ValueError, match="digits"):
        MovingPage(0, digits=1)
