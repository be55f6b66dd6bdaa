"""Learning-rate schedules: ``schedule(step) -> multiplier`` of the base learning rate.

Steps count optimiser updates from 0. All are pure functions of the step, so a resumed run
continues on the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Constant:
    def __call__(self, step: int) -> float:
        return 1.0


@dataclass(frozen=True)
class StepDecay:
    """Multiply by ``gamma`` every ``step_size`` steps (``torch.optim.lr_scheduler.StepLR``)."""

    step_size: int
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        return self.gamma ** (step // self.step_size)


@dataclass(frozen=True)
class Cosine:
    """Linear warm-up over ``warmup`` steps, then half a cosine from 1 down to ``final`` at ``total``.

    Without warm-up this equals ``CosineAnnealingLR(T_max=total, eta_min=final*lr)``.
    """

    total: int
    warmup: int = 0
    final: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = min(step - self.warmup, self.total - self.warmup) / max(1, self.total - self.warmup)
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class OneCycle:
    """Smith's one-cycle: cosine rise from ``1/div`` to 1 over ``pct`` of the steps, then cosine fall to
    ``1/(div*final_div)`` (the shape of ``torch.optim.lr_scheduler.OneCycleLR``)."""

    total: int
    pct: float = 0.3
    div: float = 25.0
    final_div: float = 1e4

    def __call__(self, step: int) -> float:
        peak = self.pct * self.total - 1
        lo, end = 1 / self.div, 1 / (self.div * self.final_div)
        if step <= peak:
            t, a, b = step / peak, lo, 1.0
        else:
            t, a, b = min(1.0, (step - peak) / max(1, self.total - 1 - peak)), 1.0, end
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))


def make_schedule(name: str, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0):
    """Schedule by name: ``constant``, ``step`` (x0.1 after each third of the run), ``cosine`` (with
    linear warm-up) or ``onecycle``."""
    if name == "constant":
        return Constant()
    if name == "step":
        return StepDecay(step_size=max(1, total_steps // 3), gamma=0.1)
    if name == "cosine":
        return Cosine(total=total_steps, warmup=int(warmup_epochs * steps_per_epoch))
    if name == "onecycle":
        return OneCycle(total=total_steps)
    raise ValueError(f"unknown schedule {name!r}; choose constant, step, cosine or onecycle")


SCHEDULES = ("constant", "step", "cosine", "onecycle")
