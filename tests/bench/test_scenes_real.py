"""The recogniser benchmarks' scoring: matching rules, and a small run of each."""

from types import SimpleNamespace as NS

import pytest

from digitlab.bench.real import levenshtein, usps_pages
from digitlab.bench.scenes import mutual, run_scenes, score_scene


def test_levenshtein():
    assert levenshtein("2024", "2024") == 0 and levenshtein("2024", "224") == 1
    assert levenshtein("", "12") == 2 and levenshtein("1234", "1243") == 2


def test_mutual_centre_rule():
    assert mutual((0, 0, 10, 10), (2, 2, 10, 10))
    assert not mutual((0, 0, 10, 10), (8, 0, 30, 10))  # the big box's centre is outside the small one


def test_score_scene_counts_matches_false_detections_and_numbers():
    truth = NS(digits=[NS(box=(0, 0, 10, 20), label=1), NS(box=(12, 0, 10, 20), label=2)],
               numbers=[NS(text="12", box=(0, 0, 22, 20))])
    read = NS(digits=[NS(box=(0, 0, 10, 20), label=1), NS(box=(12, 0, 10, 20), label=7),
                      NS(box=(100, 100, 10, 20), label=3)],
              numbers=[NS(text="17", box=(0, 0, 22, 20)), NS(text="3", box=(100, 100, 10, 20))])
    s = score_scene(truth, read)
    assert (s["matched"], s["false"], s["numbers_exact"], s["detected"]) == (1, 1, 0, 3)


def test_small_scene_run_reports_every_difficulty():
    r = run_scenes(8, seed=5)
    for key in ("recall", "precision", "numbers_exact", "recall_clean", "precision_clutter", "numbers_exact_noise"):
        assert 0 <= r[key] <= 1
    assert r["recall_clean"] >= 0.85 and r["precision_clean"] >= 0.85
    assert {"threshold", "classify", "total"} <= set(r["ms_per_page"])


def test_usps_pages_put_every_digit_in_its_box():
    import numpy as np

    images = np.zeros((12, 16, 16), np.uint8)
    images[:, 2:14, 6:10] = 255
    pages = list(usps_pages(images, np.arange(12) % 10, per_page=10))
    assert len(pages) == 2 and len(pages[0][1]) == 10 and len(pages[1][1]) == 2
    page, truth = pages[0]
    (x, y, w, h), _ = truth[3]
    assert page[y:y + h, x:x + w].min() < 100 and page[:5].min() > 200  # ink in the box, paper above


@pytest.mark.skipif(not __import__("pathlib").Path(__file__).resolve().parents[3].joinpath("shared", "real-dev")
                    .is_dir(), reason="../shared/real-dev (development photos) is not beside this checkout")
def test_real_bench_runs_on_the_development_photos():
    from digitlab.bench.real import RealBench

    r = RealBench().run()
    assert r["singles"] == 20 and r["line_lines"] >= 7 and r["usps_digits"] == 1000
    assert r["line_char_accuracy"] > 0.8 and r["usps_accuracy"] > 0.95
