"""`digitlab predict`: JSON lines in the documented shape, annotated copies, debug stages, and clear
errors for unreadable files while the others still run."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from digitlab.data import load_mnist

from .test_pipeline import page_with


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    t = load_mnist("test")
    page, boxes = page_with([t.images[i] for i in range(4)], [60, 60, 60, 60], size=(200, 500), top=70)
    cv2.imwrite(str(folder / "page.png"), page)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    return folder, boxes, "".join(str(t.labels[i]) for i in range(4))


def run(*args):
    return subprocess.run([sys.executable, "-m", "digitlab", "predict", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_json_lines_and_annotated_output(photos, tmp_path):
    folder, boxes, text = photos
    proc = run(folder / "page.png", "--json", "--out", tmp_path, "--debug")
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    r = json.loads(line)
    assert set(r) == {"image", "width", "height", "digits", "rejected", "numbers", "ms"}
    assert (r["width"], r["height"]) == (500, 200)
    assert [n["text"] for n in r["numbers"]] == [text]
    for d, (x, y, _, h) in zip(sorted(r["digits"], key=lambda d: d["box"][0]), boxes, strict=True):
        assert set(d) == {"box", "label", "confidence", "top3"} and len(d["top3"]) == 3
        bx, by, bw, bh = d["box"]
        assert abs(bx - x) <= 3 and abs(by - y) <= 3 and abs(bh - h) <= 5
        assert 0 <= d["confidence"] <= 1 and d["top3"][0][0] == d["label"]
    assert {"threshold", "classify", "normalize"} <= set(r["ms"])
    annotated = cv2.imread(str(tmp_path / "page.annotated.png"))
    assert annotated.shape == (200, 500, 3) and not np.array_equal(annotated, cv2.imread(str(folder / "page.png")))
    for stage in ("1_gray", "2_ink", "3_mask", "inputs"):
        assert (tmp_path / f"page.{stage}.png").is_file()


def test_unreadable_files_fail_alone(photos):
    folder, _, text = photos
    proc = run(folder, "--json")
    assert proc.returncode == 1  # some files failed, the others were read
    assert len(proc.stdout.strip().splitlines()) == 1 and json.loads(proc.stdout)["numbers"][0]["text"] == text
    errors = [line for line in proc.stderr.splitlines() if line.startswith("digitlab: error:")]
    assert len(errors) == 2 and any("empty" in e for e in errors) and any("not an image" in e for e in errors)
    assert "Traceback" not in proc.stderr


def test_missing_file_and_all_failed(tmp_path):
    proc = run(tmp_path / "nope.png")
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
