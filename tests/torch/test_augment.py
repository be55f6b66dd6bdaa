"""Augmentation on the device has the NumPy `Augment`'s geometry and sampling, and is seeded."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch twin needs torch: pip install 'digitlab[torch]'")

from digitlab.data import load_mnist, to_float  # noqa: E402
from digitlab.data.augment import Augment, bilinear  # noqa: E402
from digitlab.torch.augment import DeviceAugment, source_coords, warp  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return to_float(load_mnist("test").images[:16])


def _params(n, angle=0.0, shift=(0.0, 0.0)):
    return {"angle": torch.full((n,), angle), "shear": torch.zeros(n), "scale": torch.ones(n),
            "shift": torch.tensor([shift] * n, dtype=torch.float32)}


def test_sampling_matches_the_numpy_bilinear(digits):
    rng = np.random.default_rng(0)
    src_y = rng.uniform(-3, 31, (16, 28, 28)).astype(np.float32)  # partly outside the image
    src_x = rng.uniform(-3, 31, (16, 28, 28)).astype(np.float32)
    ours = warp(torch.from_numpy(digits), torch.from_numpy(src_y), torch.from_numpy(src_x)).numpy()
    np.testing.assert_allclose(ours, bilinear(digits, src_y, src_x), atol=2e-5)


def test_geometry_quarter_turn_and_whole_pixel_shift(digits):
    x = torch.from_numpy(digits)
    turned = warp(x, *source_coords(_params(16, angle=math.pi / 2), 28, 28))
    np.testing.assert_allclose(turned.numpy(), np.rot90(digits, k=1, axes=(2, 3)), atol=1e-5)
    shifted = warp(x, *source_coords(_params(16, shift=(2.0, -1.0)), 28, 28)).numpy()
    expected = np.zeros_like(digits)
    expected[:, :, :27, 2:] = digits[:, :, 1:, :26]  # right by 2, up by 1
    np.testing.assert_allclose(shifted, expected, atol=1e-5)


def test_device_augment_is_seeded_and_p0_is_the_identity(digits):
    x = torch.from_numpy(digits)
    aug = DeviceAugment()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, x)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1 + 1e-6
    same = DeviceAugment(Augment(p=0.0))(x, torch.Generator().manual_seed(1))
    np.testing.assert_allclose(same.numpy(), digits, atol=1e-5)
