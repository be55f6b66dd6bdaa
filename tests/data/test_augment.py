"""Augmentation: seeded, identity when switched off, and each distortion does what it says."""

import numpy as np
import pytest

from digitlab.data.augment import Augment, bilinear

NONE = dict(shift=0.0, rotate=0.0, scale=0.0, shear=0.0, elastic=0.0, p=1.0)


def blob(n=4, h=28, w=28):
    x = np.zeros((n, 1, h, w), np.float32)
    x[:, :, 10:18, 12:16] = 1.0
    return x


def centre_of_mass(x):
    ys, xs = np.mgrid[:x.shape[2], :x.shape[3]]
    m = x[:, 0].sum(axis=(1, 2))
    return (x[:, 0] * ys).sum(axis=(1, 2)) / m, (x[:, 0] * xs).sum(axis=(1, 2)) / m


def test_switched_off_is_identity():
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    assert np.allclose(Augment(**NONE)(x, np.random.default_rng(1)), x, atol=1e-6)


def test_seeded_and_varied():
    x = blob()
    a, b = Augment()(x, np.random.default_rng(7)), Augment()(x, np.random.default_rng(7))
    c = Augment()(x, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.allclose(a[0], a[1])  # each image gets its own transform
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1 + 1e-6


def test_shift_moves_the_centre_of_mass_by_at_most_the_shift():
    x = blob(64)
    y = Augment(**{**NONE, "shift": 3.0})(x, np.random.default_rng(0))
    (cy0, cx0), (cy1, cx1) = centre_of_mass(x), centre_of_mass(y)
    dist = np.maximum(np.abs(cy1 - cy0), np.abs(cx1 - cx0))
    assert dist.max() <= 3.0 + 1e-3 and dist.mean() > 0.5


def test_rotation_keeps_the_centre_and_the_mass():
    x = np.zeros((32, 1, 29, 29), np.float32)
    x[:, :, 8:21, 13:16] = 1.0  # a vertical bar through the centre
    y = Augment(**{**NONE, "rotate": 30.0})(x, np.random.default_rng(0))
    cy, cx = centre_of_mass(y)
    assert np.allclose(cy, 14, atol=0.05) and np.allclose(cx, 14, atol=0.05)
    assert np.allclose(y.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=0.05)
    assert np.abs(y - x).sum(axis=(1, 2, 3)).max() > 5  # it did rotate


def test_scale_changes_the_ink_area():
    x = blob(64)
    y = Augment(**{**NONE, "scale": 0.3})(x, np.random.default_rng(0))
    ratio = y.sum(axis=(1, 2, 3)) / x.sum(axis=(1, 2, 3))
    assert ratio.min() < 0.85 and ratio.max() > 1.15 and ratio.min() > 0.4


def test_elastic_is_smooth_and_local():
    x = blob(16)
    y = Augment(**{**NONE, "elastic": 1.0})(x, np.random.default_rng(0))
    assert np.abs(y - x).max() > 0.1 and np.abs(y.sum() - x.sum()) / x.sum() < 0.15


def test_bilinear_interpolates_between_pixels():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    y = bilinear(x, np.array([[[0.5]]]), np.array([[[1.5]]]))
    assert y[0, 0, 0, 0] == pytest.approx((1 + 2 + 5 + 6) / 4)
    outside = bilinear(x, np.array([[[-5.0]]]), np.array([[[1.0]]]))
    assert outside[0, 0, 0, 0] == 0
