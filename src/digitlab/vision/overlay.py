"""Drawing results on images: boxes, labels with confidence, number strings, rejected boxes."""

from __future__ import annotations

import cv2
import numpy as np

from digitlab.vision.pipeline import PipelineResult

GREEN, ORANGE, RED, BLUE = (40, 170, 40), (0, 140, 255), (60, 60, 220), (200, 90, 20)


def annotate(image: np.ndarray, result: PipelineResult, show_rejected: bool = True) -> np.ndarray:
    """A BGR copy of ``image`` with every digit's box, label and confidence, each number's string, and
    (thin red) the rejected candidates. Line widths and fonts scale with the image."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3].copy()
    side = max(out.shape[:2])
    thick = max(1, side // 500)
    font = max(0.4, side / 1400)
    if show_rejected:
        for x, y, w, h in result.rejected_boxes:
            cv2.rectangle(out, (x, y), (x + w, y + h), RED, max(1, thick // 2))
    for d in result.digits:
        x, y, w, h = d.box
        colour = GREEN if d.confidence >= 0.9 else ORANGE
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thick)
        cv2.putText(out, f"{d.label} {d.confidence:.2f}", (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6 * font, colour, thick, cv2.LINE_AA)
    for n in result.numbers:
        x, y, w, h = n.box
        cv2.rectangle(out, (x - 2 * thick, y - 2 * thick), (x + w + 2 * thick, y + h + 2 * thick), BLUE, thick)
        cv2.putText(out, n.text, (x, min(out.shape[0] - 4, y + h + int(28 * font))), cv2.FONT_HERSHEY_SIMPLEX,
                    font, BLUE, thick + 1, cv2.LINE_AA)
    return out


def input_strip(result: PipelineResult, scale: int = 2) -> np.ndarray:
    """The 28x28 model inputs of every digit side by side (the debug strip)."""
    if not result.digits:
        return np.zeros((28 * scale, 28 * scale), np.uint8)
    tiles = [cv2.resize((d.image * 255).astype(np.uint8), (28 * scale, 28 * scale),
                        interpolation=cv2.INTER_NEAREST) for d in result.digits]
    return np.hstack([np.pad(t, 1, constant_values=128) for t in tiles])
