"""Phase 5: the shipped CNN's filters, maps and mistakes are what the figures say, and the NumPy vs
PyTorch table holds exactly the numbers of the files it cites."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from digitlab.data.mnist import repo_root
from digitlab.journey import phase5
from digitlab.nn import load
from tests.journey.conftest import assert_png


@pytest.fixture(scope="module")
def result(notebook_run) -> dict:
    r, _ = notebook_run(5)
    return r


def test_shipped_model_evaluated(result: dict) -> None:
    assert result["model"] == phase5.SHIPPED
    assert result["params"] == 197802
    assert result["test_images"] == 1000
    assert result["test_accuracy"] >= 0.99
    conf = np.array(result["confusion"])
    assert conf.sum() == 1000 and conf.sum() - np.trace(conf) == result["errors"]
    assert result["errors"] == round((1 - result["test_accuracy"]) * 1000)


def test_mistakes_are_wrong_and_sorted(result: dict) -> None:
    m = result["mistakes"]
    assert 0 < len(m) <= phase5.MISTAKES and len(m) == min(result["errors"], phase5.MISTAKES)
    assert all(x["true"] != x["predicted"] and x["probability"] >= x["probability_true"] for x in m)
    p = [x["probability"] for x in m]
    assert p == sorted(p, reverse=True)


def test_filters_and_feature_maps(result: dict) -> None:
    assert result["filter_shape"] == [32, 1, 3, 3]
    stages = result["feature_stages"]
    assert [s["shape"] for s in stages] == [[32, 26, 26], [32, 12, 12], [64, 10, 10], [64, 4, 4]]
    assert [s["receptive_field"] for s in stages] == [3, 6, 10, 16]
    assert result["feature_prediction"] == result["feature_digit_label"] == 7


def test_activations_match_the_forward_pass() -> None:
    model = load(repo_root() / phase5.SHIPPED)
    x = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    acts = phase5.activations(model, x)
    # the last map, run through the rest of the layers, gives the model's logits
    rest = model.layers[[i for i, layer in enumerate(model.layers) if layer.__class__.__name__ == "Flatten"][0]:]
    out = acts[-1][1]
    for layer in rest:
        out = layer.forward(out, training=False)
    np.testing.assert_allclose(out, model.forward(x), rtol=1e-6)


def test_torch_table_is_read_from_the_cited_files(result: dict) -> None:
    tc = result["torch_comparison"]
    assert tc["sources_missing"] == []
    root = repo_root()
    card = json.loads((root / "models/digitlab-cnn10.json").read_text())
    tcard = json.loads((root / "models/digitlab-cnn-torch.json").read_text())
    bench = json.loads((root / "docs/bench/bench_cnn-train.json").read_text())
    infer = json.loads((root / "docs/bench/bench_infer.json").read_text())
    assert tc["numpy_card_test_accuracy"] == card["test_accuracy"]
    assert tc["torch_card_test_accuracy"] == tcard["test_accuracy"]
    assert tc["numpy_train_seconds"] == card["train_seconds"] and tc["torch_train_seconds"] == tcard["train_seconds"]
    assert tc["bench_epoch_numpy_s"] == bench["numpy_epoch_s"] and tc["bench_epoch_torch_s"] == bench["torch_epoch_s"]
    assert tc["bench_infer_ratio_batch256"] == infer["ratio_numpy_over_torch_batch256"]
    # measured here, with NumPy, on the same 1,000 images: both models read them nearly all
    assert tc["numpy_measured_test_accuracy"] == result["test_accuracy"]
    assert tc["torch_measured_test_accuracy"] >= 0.99


def test_notebook_never_imported_torch(notebook_run) -> None:
    _, nb = notebook_run(5)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "PyTorch imported: False" in text


def test_files(result: dict, journey_dir: Path) -> None:
    for name in result["figures"]:
        assert_png(journey_dir / name)
