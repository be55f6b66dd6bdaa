"""`digitlab.data.augment.Augment` on the device: the same random affine + elastic distortion, one
``grid_sample`` per batch, so augmented training never copies images back to the host.

The random parameters (a few numbers per image and a coarse 4x4 displacement lattice) are drawn on the
CPU from a seeded `torch.Generator`, so a run is reproducible and identical on every device; only the
sampling grid and the resampling run on the device. The geometry is exactly that of the NumPy
`Augment` (`warp` with the same parameters gives the same image, within float rounding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from digitlab.data.augment import Augment


def draw(aug: Augment, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random distortion parameters for ``n`` images (CPU, float32)."""

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen) * 2 - 1

    on = (torch.rand(n, generator=gen) < aug.p).float()
    params = {
        "angle": uniform(n) * math.radians(aug.rotate) * on,
        "shear": uniform(n) * math.radians(aug.shear) * on,
        "scale": 1 + uniform(n) * aug.scale * on,
        "shift": uniform(n, 2) * aug.shift * on[:, None],
    }
    if aug.elastic > 0:
        params["coarse"] = torch.randn(n, 2, aug.grid, aug.grid, generator=gen) * aug.elastic * on[:, None, None, None]
    return params


def source_coords(params: dict[str, torch.Tensor], h: int, w: int, device: torch.device | str = "cpu"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each output pixel samples the input, in pixels: ``(src_y, src_x)``, each ``(N, H, W)``.

    The inverse map of `Augment`: rotate, scale and shear about the image centre, then shift, then add
    the elastic field (the coarse lattice bilinearly interpolated to ``H x W``)."""
    p = {k: v.to(device) for k, v in params.items()}
    cos, sin = torch.cos(p["angle"]) / p["scale"], torch.sin(p["angle"]) / p["scale"]
    tan = torch.tan(p["shear"])
    a11, a12 = cos, -sin + tan * cos
    a21, a22 = sin, cos + tan * sin
    yy = (torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2)[:, None].expand(h, w)
    xx = (torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2)[None, :].expand(h, w)

    def col(t: torch.Tensor) -> torch.Tensor:
        return t[:, None, None]

    src_x = col(a11) * xx + col(a12) * yy + (w - 1) / 2 - col(p["shift"][:, 0])
    src_y = col(a21) * xx + col(a22) * yy + (h - 1) / 2 - col(p["shift"][:, 1])
    if "coarse" in p:
        field = F.interpolate(p["coarse"], size=(h, w), mode="bilinear", align_corners=True)
        src_x = src_x + field[:, 0]
        src_y = src_y + field[:, 1]
    return src_y, src_x


def warp(x: torch.Tensor, src_y: torch.Tensor, src_x: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of ``x: (N, C, H, W)`` at pixel coordinates; outside the image is 0 (as the
    NumPy `bilinear`)."""
    h, w = x.shape[-2:]
    grid = torch.stack((src_x * (2 / (w - 1)) - 1, src_y * (2 / (h - 1)) - 1), dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


class DeviceAugment:
    """Callable ``(x on device, generator) -> distorted x``, with `Augment`'s parameters."""

    def __init__(self, aug: Augment | None = None) -> None:
        self.aug = aug or Augment()

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        src_y, src_x = source_coords(draw(self.aug, len(x), gen), x.shape[-2], x.shape[-1], x.device)
        return warp(x, src_y, src_x)
