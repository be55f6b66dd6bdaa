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


STATE_COLOURS = {"stable": GREEN, "tentative": ORANGE, "lost": (150, 150, 150)}


def annotate_live(image: np.ndarray, live, fps: float = 0.0, strip: bool = True, selected: int | None = None,
                  debug: bool = False) -> np.ndarray:
    """One live frame annotated: each track's box coloured by its state (green stable with its label and
    averaged confidence, orange tentative, grey lost), rejected candidates thin red, stable numbers in
    blue, "Scanning..." while nothing is stable; above the frame a status band with FPS and per-stage
    milliseconds; with ``strip``, a band
    below the frame with the 28x28 model input of every box seen this frame, framed in its track's colour.
    ``live`` is a `digitlab.vision.live.LiveResult`; ``selected`` a track id to highlight (capture)."""
    out = image[:, :, :3].copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    side = max(out.shape[:2])
    thick = max(1, side // 640)
    font = max(0.5, side / 1000)
    for x, y, w, h in live.result.rejected_boxes:
        cv2.rectangle(out, (x, y), (x + w, y + h), RED, 1)
    for t in live.tracks:
        x, y, w, h = t.box
        colour = STATE_COLOURS.get(t.state, ORANGE)
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thick + (2 if t.id == selected else 0))
        text = f"{t.label} {t.confidence:.2f}" if t.label is not None else "?"
        cv2.putText(out, text, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.75 * font, colour, thick, cv2.LINE_AA)
    for n in live.numbers:
        x, y, w, h = n["box"]
        cv2.rectangle(out, (x - 3 * thick, y - 3 * thick), (x + w + 3 * thick, y + h + 3 * thick), BLUE, thick)
        cv2.putText(out, n["text"], (x, min(out.shape[0] - 4, y + h + int(30 * font))), cv2.FONT_HERSHEY_SIMPLEX,
                    1.4 * font, BLUE, thick + 1, cv2.LINE_AA)
    if not live.numbers:
        cv2.putText(out, "Scanning...", (10, out.shape[0] - 12), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0),
                    thick + 3, cv2.LINE_AA)
        cv2.putText(out, "Scanning...", (10, out.shape[0] - 12), cv2.FONT_HERSHEY_SIMPLEX, font, ORANGE,
                    thick + 1, cv2.LINE_AA)
    stages = ("flatten", "threshold", "candidates", "classify", "track") if not debug else tuple(live.ms)
    # the status lines sit on a dark band of their own, so labels near the top never run into them; as
    # many lines as the stages need at this width (the band's height is fixed per width and stage list)
    keys = [k for k in stages if k in live.ms]
    words = [f"{fps:4.1f} FPS "] + [f"{k[:5]} {live.ms[k]:.1f}" for k in keys]
    widest = ["888.8 FPS "] + [f"{k[:5]} 888.8" for k in keys]  # line breaks from these: fixed per stage list
    lines, line, room = [], "", ""
    for word, wide in zip(words, widest, strict=True):
        if room and cv2.getTextSize(f"{room} {wide}", cv2.FONT_HERSHEY_SIMPLEX, 0.75 * font, thick)[0][0] \
                > out.shape[1] - 16:
            lines.append(line)
            line, room = "", ""
        line, room = f"{line} {word}".strip(), f"{room} {wide}".strip()
    lines.append(line)
    step = int(30 * font)
    bar = np.full((step * len(lines) + 6, out.shape[1], 3), 25, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(bar, text, (8, step * i + int(22 * font) + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.75 * font,
                    (235, 235, 235), thick, cv2.LINE_AA)
    parts = [bar, out]
    if strip:
        parts.append(_live_strip(live, out.shape[1]))
    if debug and live.result.debug:
        parts.append(stage_band(live.result.debug, out.shape[1]))
    return np.vstack(parts)


STAGE_VIEWS = (("1_gray", "gray"), ("2_ink", "flattened ink"), ("3_mask", "binary, lines removed"))


def stage_band(debug: dict, width: int) -> np.ndarray:
    """The recogniser's stage images (``PipelineResult.debug``, at its working resolution) side by side,
    each labelled: what the pipeline saw, for telling a threshold problem from a model problem."""
    tile_w = width // len(STAGE_VIEWS)
    shapes = [debug[k].shape for k, _ in STAGE_VIEWS if k in debug and debug[k].ndim == 2]
    tile_h = max(1, round(tile_w * shapes[0][0] / shapes[0][1])) if shapes else 1
    band = np.full((tile_h, width, 3), 40, np.uint8)
    for i, (key, name) in enumerate(STAGE_VIEWS):
        img = debug.get(key)
        if img is None or img.ndim != 2:
            continue
        tile = cv2.resize(img, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        band[:, i * tile_w:(i + 1) * tile_w] = tile[:, :, None]
        cv2.putText(band, name, (i * tile_w + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(band, name, (i * tile_w + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, ORANGE, 1, cv2.LINE_AA)
    return band


def _live_strip(live, width: int, tile: int = 56) -> np.ndarray:
    """A fixed-height band (so a video's frame size never changes) of the frame's 28x28 model inputs:
    each track's, framed in its state's colour, then the rejected boxes', framed red."""
    band = np.full((tile + 8, width, 3), 40, np.uint8)
    x = 4
    states = {t.id: t.state for t in live.tracks}
    tiles = [(img, STATE_COLOURS.get(states.get(tid, ""), ORANGE)) for tid, img in sorted(live.inputs.items())]
    tiles += [(img, RED) for img in live.result.rejected_inputs]
    for img, colour in tiles:
        if x + tile + 4 > width:
            break
        t = cv2.resize((img * 255).astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
        band[4:4 + tile, x:x + tile] = t[:, :, None]
        cv2.rectangle(band, (x - 1, 3), (x + tile, 4 + tile), colour, 1)
        x += tile + 6
    return band
