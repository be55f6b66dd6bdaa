"""Reject training and calibration use the pipeline's own inputs: training pages of MNIST train digits,
validation pages of val digits, measurement pages of test digits; fragments of digits are left out."""

import numpy as np

from digitlab.data import load_mnist
from digitlab.data.pipeline_samples import KINDS
from digitlab.vision import reject


def test_pipeline_set_leaves_out_pieces_and_is_seeded(monkeypatch):
    import digitlab.data.pipeline_samples as ps

    sources = []
    real = ps.make_pipeline_samples

    def spy(pages, seed=0, source="train", cfg=None, log=lambda s: None):
        sources.append((pages, seed, source))
        return real(pages, seed=seed, source=source, cfg=cfg, log=log)

    monkeypatch.setattr(ps, "make_pipeline_samples", spy)
    x, y, k = reject._pipeline_set(6, 0, "train")
    x2, y2, _ = reject._pipeline_set(6, 0, "train")
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert KINDS.index("piece") not in set(k.tolist()) and len(y) > 20
    assert np.all((y == 10) == (k != KINDS.index("digit")))
    _, full_y, full_k = real(6, seed=0, source="train")
    assert len(full_y) >= len(y)  # only pieces were dropped
    assert np.sum(full_k != KINDS.index("piece")) == len(y)
    assert reject._pipeline_set(0, 0, "train")[0].shape == (0, 1, 28, 28)
    assert sources == [(6, 0, "train"), (6, 0, "train")]


def test_validation_holds_val_digits_negatives_and_pipeline_val_pages(monkeypatch):
    calls = []
    real = reject._pipeline_set

    def spy(pages, seed, source, log=lambda s: None):
        calls.append((pages, seed, source))
        return real(pages, seed, source, log)

    monkeypatch.setattr(reject, "_pipeline_set", spy)
    x, y, _ = reject._validation(0, pipeline_pages=2)
    n_val = len(load_mnist("val").labels)
    _, py, _ = real(2, 1, "val")
    assert calls == [(2, 1, "val")]  # never train or test digits for calibration
    assert len(y) == n_val + 2000 + len(py) and x.shape == (len(y), 1, 28, 28)
    assert np.array_equal(y[n_val + 2000:], py)


def test_calibrate_reports_pipeline_test_pages():
    from digitlab.nn.model import load
    from digitlab.vision.recognizer import default_model_path

    model = load(default_model_path())
    report = reject.calibrate(model, pipeline_val_pages=2, pipeline_test_pages=3)
    assert report["pipeline_test_pages"] == 3 and report["pipeline_test_digits"] > 10
    assert 0.8 <= report["pipeline_test_digits_accepted_and_right"] <= 1.0
    assert report["pipeline_test_digits_rejected"] <= 0.1
    assert model.meta["reject_threshold"] == report["reject_threshold"]


def test_reject_train_cli_takes_pipeline_pages():
    import argparse

    from digitlab.vision.cli import add_reject_train

    parser = argparse.ArgumentParser()
    add_reject_train(parser.add_subparsers())
    args = parser.parse_args(["reject-train", "--base", "a.npz", "--out", "b.npz", "--pipeline-pages", "7",
                              "--pipeline-val-pages", "3", "--progress"])
    assert args.pipeline_pages == 7 and args.pipeline_val_pages == 3 and args.progress
    args = parser.parse_args(["reject-train", "--base", "a.npz", "--out", "b.npz"])
    assert args.pipeline_pages is None and args.pipeline_val_pages is None  # the library's defaults
