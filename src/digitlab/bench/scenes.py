"""``scenes``: the recogniser on synthetic camera pages (`digitlab.data.scenes`), by difficulty.

A detected digit matches a true one when each box's centre lies inside the other box and the label
is right; recall = matched / true digits, precision = matched / detected digits. A number is exact
when a detected number has the same text and the two boxes contain each other's centres. False
detections are detected digits whose box matches no true digit at all.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np


def _inside(point: tuple[float, float], box) -> bool:
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


def _centre(box) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def mutual(a, b) -> bool:
    """Each box's centre lies inside the other."""
    return _inside(_centre(a), b) and _inside(_centre(b), a)


def score_scene(scene, result) -> dict:
    truth = list(scene.digits)
    used = set()
    matched = located = 0
    for t in truth:
        for j, d in enumerate(result.digits):
            if j not in used and mutual(t.box, d.box):
                located += 1
                if d.label == t.label:
                    matched += 1
                    used.add(j)
                    break
    false = sum(1 for d in result.digits if not any(mutual(t.box, d.box) for t in truth))
    exact = sum(1 for n in scene.numbers
                if any(p.text == n.text and mutual(n.box, p.box) for p in result.numbers))
    return {"true": len(truth), "detected": len(result.digits), "matched": matched, "false": false,
            "numbers": len(scene.numbers), "numbers_exact": exact}


def run_scenes(n: int = 300, seed: int = 0, log=lambda s: None, recognizer=None) -> dict:
    from digitlab.data.scenes import DIFFICULTIES, render_scenes
    from digitlab.vision import Recognizer

    rec = recognizer or Recognizer()
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    stage_ms: dict[str, list[float]] = defaultdict(list)
    t_start = time.perf_counter()
    for i, scene in enumerate(render_scenes(n, seed=seed)):
        res = rec(scene.image)
        s = score_scene(scene, res)
        for key in ("all", scene.difficulty):
            for k, v in s.items():
                totals[key][k] += v
            totals[key]["pages"] += 1
        for k, v in res.ms.items():
            stage_ms[k].append(v)
        stage_ms["total"].append(sum(res.ms.values()))
        if (i + 1) % 50 == 0:
            log(f"  {i + 1}/{n} pages")
    out = {"benchmark": "scenes", "pages": n, "seed": seed, "seconds": time.perf_counter() - t_start}
    for key, t in totals.items():
        suffix = "" if key == "all" else f"_{key}"
        out[f"recall{suffix}"] = t["matched"] / max(t["true"], 1)
        out[f"precision{suffix}"] = t["matched"] / max(t["detected"], 1)
        out[f"numbers_exact{suffix}"] = t["numbers_exact"] / max(t["numbers"], 1)
        out[f"false_per_page{suffix}"] = t["false"] / max(t["pages"], 1)
        out[f"pages{suffix}"] = int(t["pages"])
    out["ms_per_page"] = {k: float(np.mean(v)) for k, v in stage_ms.items()}
    out["difficulties"] = list(DIFFICULTIES)
    return out


class ScenesBench:
    name = "scenes"
    description = "the recogniser on 300 synthetic camera pages: recall, precision, exact numbers, ms per stage"

    def run(self, pairs: int = 5, log=lambda s: None, images: int | None = None, data: str | None = None) -> dict:
        return run_scenes(images or 300, log=log)

    def format(self, r: dict) -> str:
        lines = [f"scenes: {r['pages']} synthetic pages (seed {r['seed']}), {r['seconds']:.0f} s",
                 f"  {'difficulty':10s} {'recall':>7s} {'precision':>9s} {'numbers':>8s} {'false/page':>10s}"]
        for d in ["", *[f"_{x}" for x in r["difficulties"]]]:
            if f"recall{d}" in r:
                lines.append(f"  {(d[1:] or 'all'):10s} {100 * r['recall' + d]:6.1f}% {100 * r['precision' + d]:8.1f}% "
                             f"{100 * r['numbers_exact' + d]:7.1f}% {r['false_per_page' + d]:10.2f}")
        lines.append("  ms per page: " + ", ".join(f"{k} {v:.1f}" for k, v in r["ms_per_page"].items()))
        return "\n".join(lines)
