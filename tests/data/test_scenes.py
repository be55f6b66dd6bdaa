"""The synthetic camera: seeded, its truth matches its pixels and MNIST, the layout rules hold, and each
difficulty adds its own trouble (and only that) to the same clean page."""

import cv2
import numpy as np
import pytest

from digitlab.data import load_mnist
from digitlab.data.scenes import (
    DIFFICULTIES,
    MAX_HEIGHT,
    MIN_HEIGHT,
    Scene,
    add_finger,
    add_smudges,
    contact_sheet,
    digit_alpha,
    draw_truth,
    homography,
    ink_box,
    keepout_mask,
    main,
    paste_digits,
    random_homography,
    render_scene,
    render_scenes,
    warp_perspective,
    warped_box,
)

SEEDS = range(6)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist("test")


@pytest.fixture(scope="module")
def scenes() -> dict[str, list[Scene]]:
    """Six pages at their random sizes, each at every difficulty."""
    return {d: [render_scene(seed, d) for seed in SEEDS] for d in DIFFICULTIES}


@pytest.fixture(scope="module")
def many_clean() -> list[Scene]:
    """Enough clean pages to meet the layout's corner cases (long numbers, tiny and huge digits, full pages)."""
    return [render_scene(seed) for seed in range(100, 150)]


def all_scenes(scenes):
    return [s for d in DIFFICULTIES for s in scenes[d]]


def overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_same_seed_same_scene_other_seed_other_scene():
    for d in DIFFICULTIES:
        a, b = render_scene(3, d, size=(300, 400)), render_scene(3, d, size=(300, 400))
        assert np.array_equal(a.image, b.image) and a.numbers == b.numbers
        assert not np.array_equal(a.image, render_scene(4, d, size=(300, 400)).image)


def test_render_scenes_cycles_difficulties_and_each_scene_reproduces_alone():
    got = list(render_scenes(6, seed=1, size=(240, 320)))
    assert [s.difficulty for s in got] == [*DIFFICULTIES, *DIFFICULTIES[:2]]
    assert len({s.seed for s in got}) == 6
    for s in got[:4]:
        again = render_scene(s.seed, s.difficulty, size=(240, 320))
        assert np.array_equal(again.image, s.image) and again.numbers == s.numbers
    assert [s.difficulty for s in render_scenes(3, difficulties=["noise"], size=(240, 320))] == ["noise"] * 3
    assert got[0].seed != next(render_scenes(1, seed=2, size=(240, 320))).seed


def test_every_difficulty_renders_a_camera_sized_page(scenes):
    for d in DIFFICULTIES:
        for seed, s in zip(SEEDS, scenes[d], strict=True):
            h, w = s.image.shape[:2]
            assert s.image.dtype == np.uint8 and s.image.shape == (h, w, 3)
            assert 480 <= h <= 1200 and 640 <= w <= 1600
            assert s.difficulty == d and s.seed == seed
            assert 1 <= len(s.numbers) <= 6 and all(1 <= len(n.digits) <= 12 for n in s.numbers)
            assert s.digits == tuple(dg for n in s.numbers for dg in n.digits)


def test_every_level_shows_the_same_page_with_its_own_trouble(scenes):
    for k in range(len(SEEDS)):
        clean = scenes["clean"][k]
        for d in DIFFICULTIES[1:]:
            s = scenes[d][k]
            assert s.image.shape == clean.image.shape and not np.array_equal(s.image, clean.image)
            assert [(g.label, g.index) for g in s.digits] == [(g.label, g.index) for g in clean.digits]
            if d != "clutter":  # photometric trouble only: the truth is the clean page's
                assert s.numbers == clean.numbers
            else:  # the warp moves every point by at most ~6 % of the page
                h, w = clean.image.shape[:2]
                for a, b in zip(s.digits, clean.digits, strict=True):
                    ca = np.array([a.box[0] + a.box[2] / 2, a.box[1] + a.box[3] / 2])
                    cb = np.array([b.box[0] + b.box[2] / 2, b.box[1] + b.box[3] / 2])
                    assert np.all(np.abs(ca - cb) <= 0.08 * np.array([w, h]) + 2)


def test_truth_labels_are_mnist_test_labels_and_texts_spell_them(scenes, mnist):
    for s in all_scenes(scenes):
        for n in s.numbers:
            assert n.text == "".join(str(d.label) for d in n.digits)
            for d in n.digits:
                assert 0 <= d.index < len(mnist.labels) and d.label == mnist.labels[d.index]
            x0, y0 = min(d.box[0] for d in n.digits), min(d.box[1] for d in n.digits)
            x1 = max(d.box[0] + d.box[2] for d in n.digits)
            y1 = max(d.box[1] + d.box[3] for d in n.digits)
            assert n.box == (x0, y0, x1 - x0, y1 - y0)


def test_boxes_lie_inside_the_image_and_hold_ink_darker_than_the_paper_around(scenes):
    for s in all_scenes(scenes):
        grey = s.image.astype(np.float32).mean(axis=2)
        h, w = grey.shape
        digits_mask = np.zeros((h, w), bool)
        for d in s.digits:
            x, y, bw, bh = d.box
            digits_mask[max(y - 1, 0):y + bh + 1, max(x - 1, 0):x + bw + 1] = True
        for d in s.digits:
            x, y, bw, bh = d.box
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h and bw >= 1
            m = max(3, bh // 4)
            ring = np.zeros((h, w), bool)
            ring[max(y - m, 0):y + bh + m, max(x - m, 0):x + bw + m] = True
            ring &= ~digits_mask
            assert ring.sum() > 20
            inside, paper = grey[y:y + bh, x:x + bw].mean(), np.median(grey[ring])
            assert inside < 0.92 * paper, (s.seed, s.difficulty, d)


def test_digit_heights_lie_in_range(scenes, many_clean):
    heights = [d.box[3] for s in all_scenes(scenes) + many_clean for d in s.digits]
    assert MIN_HEIGHT <= min(heights) and max(heights) <= MAX_HEIGHT
    assert min(heights) < 25 and max(heights) > 120  # and the range is used


def test_clean_digits_do_not_overlap_and_numbers_are_spaced_like_numbers(scenes, many_clean):
    for s in scenes["clean"] + many_clean:
        boxes = [d.box for d in s.digits]
        for i, a in enumerate(boxes):
            assert not any(overlap(a, b) for b in boxes[i + 1:]), s.seed
        for n in s.numbers:  # digits of one number: close, not touching
            for a, b in zip(n.digits, n.digits[1:], strict=False):
                gap = b.box[0] - (a.box[0] + a.box[2])
                assert 1 <= gap <= 0.4 * 1.1 * max(a.box[3], b.box[3]) + 3, (s.seed, n.text)
        for a, b in zip(s.numbers, s.numbers[1:], strict=False):  # numbers on one line: a clear gap
            if overlap((0, a.box[1], 1, a.box[3]), (0, b.box[1], 1, b.box[3])):
                widest = max(d.box[2] for d in a.digits + b.digits)
                assert b.box[0] - (a.box[0] + a.box[2]) >= widest, s.seed


def test_numbers_come_in_reading_order(scenes, many_clean):
    """Lines top to bottom, left to right within a line, and the lines are unambiguous: a number that
    does not share rows with the one before it starts a new line lying wholly below the previous one."""
    lines_seen = []
    for s in all_scenes(scenes) + many_clean:
        line = [s.numbers[0].box]
        lines = 1
        for n in s.numbers[1:]:
            a, b = line[-1], n.box
            if overlap((0, a[1], 1, a[3]), (0, b[1], 1, b[3])):
                assert b[0] >= a[0] + a[2], (s.seed, s.difficulty)
                line.append(b)
            else:
                assert b[1] >= max(q[1] + q[3] for q in line), (s.seed, s.difficulty)
                line, lines = [b], lines + 1
        lines_seen.append(lines)
    shared = [len(s.numbers) - k for s, k in zip(many_clean, lines_seen[-len(many_clean):], strict=True)]
    assert max(lines_seen) >= 3 and max(shared) >= 2  # pages of several lines, lines of several numbers


def test_digit_alpha_has_the_requested_ink_height(mnist):
    """Exactly, nearly always; resampling may leave no patch height that gives it, then one row off."""
    exact = 0
    for idx in range(0, 10000, 500):
        for height in (15, 16, 23, 36, 60, 151, 200):
            alpha = digit_alpha(mnist.images[idx], height)
            assert alpha.dtype == np.float32 and 0 <= alpha.min() and alpha.max() <= 1
            got = ink_box(alpha)[3]
            assert abs(got - height) <= 1 and MIN_HEIGHT <= got <= MAX_HEIGHT
            exact += got == height
    assert exact >= 0.95 * 20 * 7


def test_paste_digits_darkens_as_ink_and_returns_the_ink_box(mnist):
    page = np.full((60, 80, 3), 200, np.float32)
    alpha = digit_alpha(mnist.images[0], 30)
    [box] = paste_digits(page, [alpha], [(10, 5)], (0.0, 0.0, 0.0), 0.9)
    assert box == ink_box(alpha, (10, 5))
    assert np.allclose(page[5:5 + alpha.shape[0], 10:10 + alpha.shape[1], 0], 200 * (1 - 0.9 * alpha))
    assert np.all(page[:, 10 + alpha.shape[1]:] == 200)
    [clipped] = paste_digits(page, [alpha], [(70, 40)], (0.5, 0.5, 0.5))  # sticks out: clipped
    assert clipped is None or (clipped[0] + clipped[2] <= 80 and clipped[1] + clipped[3] <= 60)


def test_perspective_box_is_the_box_of_the_warped_ink(mnist):
    """The truth box after a warp is the box of the ink the warped page shows (alpha > 0.2)."""
    rng = np.random.default_rng(0)
    height, width = 300, 400
    for _ in range(8):
        alpha = digit_alpha(mnist.images[int(rng.integers(len(mnist.labels)))], int(rng.integers(15, 120)))
        origin = (int(rng.integers(30, width - 30 - alpha.shape[1])),
                  int(rng.integers(30, height - 30 - alpha.shape[0])))
        page = np.full((height, width, 3), 200, np.float32)
        paste_digits(page, [alpha], [origin], (0.0, 0.0, 0.0))
        matrix = homography(height, width, random_homography(rng, height, width))
        ink = 1 - warp_perspective(page, matrix, (200, 200, 200))[:, :, 0] / 200
        box, seen = warped_box(alpha, origin, matrix), ink_box(ink)
        assert box is not None and np.abs(np.subtract(box, seen)).max() <= 1, (box, seen)
        assert ink_box(ink, threshold=0.3) is not None
        x, y, w, h = box
        outside = ink.copy()
        outside[y:y + h, x:x + w] = 0
        assert outside.max() < 0.3  # no visible ink of the digit outside its box


def test_clutter_keeps_its_smudges_and_finger_off_the_numbers():
    height, width = 400, 600
    boxes = [(100, 100, 200, 80), (350, 250, 120, 60)]
    keep = keepout_mask(boxes, height, width)
    placed, fingers = 0, 0
    for seed in range(6):
        page = np.full((height, width, 3), 220, np.float32)
        rng = np.random.default_rng(seed)
        placed += add_smudges(page, keep, rng, count=5)
        fingers += add_finger(page, keep, rng)
        for x, y, w, h in boxes:
            assert np.abs(page[y:y + h, x:x + w] - 220).max() < 0.5
    assert placed >= 20 and fingers >= 2


def test_trouble_is_there(scenes):
    """lighting makes the paper uneven, noise makes it grainy, clutter puts lines and blobs on it."""
    def paper_pixels(s):
        grey = s.image.astype(np.float32).mean(axis=2)
        mask = np.ones(grey.shape, bool)
        for x, y, w, h in (n.box for n in s.numbers):
            mask[max(y - h, 0):y + 2 * h, max(x - h, 0):x + w + h] = False
        return grey, mask

    for k in range(len(SEEDS)):
        spread, grain = {}, {}
        for d in DIFFICULTIES:
            grey, mask = paper_pixels(scenes[d][k])
            lo, hi = np.percentile(grey[mask], [2, 98])
            spread[d] = lo / hi
            grain[d] = np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 2))[mask].mean()
        assert spread["clean"] > 0.9 and spread["lighting"] < 0.8
        assert grain["noise"] > 2 * grain["clean"] + 0.5
        assert grain["clutter"] > grain["clean"] or spread["clutter"] < spread["clean"]


def test_small_and_odd_pages_still_fit():
    for size in ((32, 32), (64, 480), (600, 90), (200, 200)):
        for seed in range(4):
            s = render_scene(seed, "clutter", size=size)
            assert s.image.shape[:2] == size and len(s.numbers) >= 1
            for d in s.digits:
                x, y, w, h = d.box
                assert 0 <= x and 0 <= y and x + w <= size[1] and y + h <= size[0] and MIN_HEIGHT <= h


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="difficulty"):
        render_scene(0, "hard")
    with pytest.raises(ValueError, match="seed"):
        render_scene(-1)
    with pytest.raises(ValueError, match="size"):
        render_scene(0, size=(20, 400))
    with pytest.raises(ValueError, match="difficulty"):
        next(render_scenes(2, difficulties=("clean", "foggy")))


def test_debug_views(scenes, tmp_path):
    s = scenes["clutter"][0]
    debug = draw_truth(s)
    assert debug.shape == s.image.shape and not np.array_equal(debug, s.image)
    sheet = contact_sheet([scenes[d][0] for d in DIFFICULTIES], width=200)
    assert sheet.ndim == 3 and sheet.shape[1] == 4 * 204
    main([str(tmp_path / "sheet.png"), "--seed", "0", "--width", "160"])
    assert cv2.imread(str(tmp_path / "sheet.png")) is not None
