"""``real``: the recogniser on real handwriting (photos with ``labels.csv``; USPS scans pasted on pages).

Scores: single-digit accuracy (photos of one digit: right when exactly the right digit is read),
character accuracy of text lines (1 - Levenshtein distance / truth length, summed over lines) and the
share of lines read exactly. Line crops are scored as lines and pages as their rows; a page whose rows
also exist as line crops is reported separately, so that no row counts twice in the headline.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def default_dir() -> Path:
    from digitlab.data.mnist import repo_root

    return repo_root().parent / "shared" / "real-dev"


def _score_lines(pairs: list[tuple[str, str]]) -> dict:
    chars = sum(len(t) for t, _ in pairs)
    dist = sum(levenshtein(t, p) for t, p in pairs)
    return {"lines": len(pairs), "chars": chars, "char_accuracy": 1 - dist / chars if chars else None,
            "exact_lines": float(np.mean([t == p for t, p in pairs])) if pairs else None}


def score_photos(folder: Path, recognizer, log=lambda s: None) -> dict:
    import cv2

    from digitlab.vision.pipeline import line_texts

    with open(folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cropped_pages = {(r.get("notes") or "").split("cropped from ")[1].split()[0] for r in rows
                     if "cropped from" in (r.get("notes") or "")}
    singles, lines, pages, details = [], [], [], []
    for r in rows:
        img = cv2.imread(str(folder / r["file"]))
        if img is None:
            log(f"  cannot read {r['file']}: skipped")
            continue
        res = recognizer(img)
        read = line_texts(res.numbers)
        truth = r["digits"].split("|")
        details.append({"file": r["file"], "layout": r["layout"], "truth": r["digits"], "read": "|".join(read)})
        if r["layout"] == "single":
            singles.append("".join(read) == truth[0])
        elif r["layout"] == "line":
            lines.append((truth[0], "".join(read)))
        else:
            pad = read + [""] * (len(truth) - len(read))
            pairs = list(zip(truth, pad[:len(truth)], strict=True))
            if len(read) > len(truth):  # extra lines count as insertions on the last row
                pairs[-1] = (pairs[-1][0], pairs[-1][1] + "".join(read[len(truth):]))
            if r["file"] in cropped_pages:
                pages.append(pairs)
            else:
                lines.extend(pairs)
        log(f"  {r['file']:28s} truth {r['digits']:40s} read {'|'.join(read)}")
    page_pairs = [p for page in pages for p in page]
    return {"single_accuracy": float(np.mean(singles)) if singles else None, "singles": len(singles),
            **{f"line_{k}": v for k, v in _score_lines(lines).items()},
            **{f"page_{k}": v for k, v in _score_lines(page_pairs).items()}, "details": details}


def usps_pages(images: np.ndarray, labels: np.ndarray, per_page: int = 50, seed: int = 0):
    """USPS digits (ink bright on dark, filling their 16x16 frame) as dark ink on white pages, 10 a row,
    scaled to random heights of 40-80 px with a margin of paper around each. Yields (page, truth boxes)."""
    import cv2

    rng = np.random.default_rng(seed)
    for start in range(0, len(images), per_page):
        chunk = range(start, min(len(images), start + per_page))
        size = int(rng.integers(40, 81))
        cell = int(size * 1.8)
        cols = 10
        nrows = -(-len(chunk) // cols)
        page = np.full((nrows * cell + cell, cols * cell + cell), 235, np.uint8)
        truth = []
        for k, i in enumerate(chunk):
            r, c = divmod(k, cols)
            digit = cv2.resize(images[i], (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
            y, x = cell // 2 + r * cell, cell // 2 + c * cell
            page[y:y + size, x:x + size] = (235 * (1 - 0.85 * digit)).astype(np.uint8)
            truth.append(((x, y, size, size), int(labels[i])))
        yield cv2.cvtColor(page, cv2.COLOR_GRAY2BGR), truth


def score_usps(path: Path, recognizer) -> dict:
    with np.load(path, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    correct = found = total = 0
    for page, truth in usps_pages(images, labels):
        res = recognizer(page)
        for (x, y, w, h), label in truth:
            total += 1
            hits = [d for d in res.digits
                    if x <= d.box[0] + d.box[2] / 2 <= x + w and y <= d.box[1] + d.box[3] / 2 <= y + h]
            if hits:
                found += 1
                correct += any(d.label == label for d in hits) and len(hits) == 1
    return {"usps_digits": total, "usps_accuracy": correct / total if total else None,
            "usps_found": found / total if total else None}


class RealBench:
    name = "real"
    description = "the recogniser on real photos and scans (../shared/real-dev or --data DIR)"

    def run(self, pairs: int = 5, log=lambda s: None, images: int | None = None, data: str | None = None) -> dict:
        from digitlab.errors import DigitlabError
        from digitlab.vision import Recognizer

        folder = Path(data) if data else default_dir()
        if not folder.is_dir():
            raise DigitlabError(f"{folder}: no such folder of real handwriting; pass --data DIR (a folder with "
                                f"photos/labels.csv and/or usps_train_subset1000.npz)")
        rec = Recognizer()
        t0 = time.perf_counter()
        out: dict = {"benchmark": "real", "data": str(folder)}
        photos = folder / "photos" if (folder / "photos" / "labels.csv").is_file() else folder
        if (photos / "labels.csv").is_file():
            out.update(score_photos(photos, rec, log))
        usps = folder / "usps_train_subset1000.npz"
        if usps.is_file():
            out.update(score_usps(usps, rec))
        out["seconds"] = time.perf_counter() - t0
        return out

    def format(self, r: dict) -> str:
        def pct(v):
            return "n/a" if v is None else f"{100 * v:.1f} %"
        return "\n".join([
            f"real: {r['data']}",
            f"  single digits: {pct(r.get('single_accuracy'))} of {r.get('singles', 0)}",
            f"  lines: characters {pct(r.get('line_char_accuracy'))}, exact {pct(r.get('line_exact_lines'))} "
            f"of {r.get('line_lines', 0)} lines",
            f"  pages (rows also cropped as lines): characters {pct(r.get('page_char_accuracy'))}, exact rows "
            f"{pct(r.get('page_exact_lines'))} of {r.get('page_lines', 0)}",
            f"  USPS scans on pages: {pct(r.get('usps_accuracy'))} of {r.get('usps_digits', 0)} read right "
            f"(found {pct(r.get('usps_found'))})",
        ])
