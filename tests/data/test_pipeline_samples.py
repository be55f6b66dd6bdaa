"""Pipeline samples (training data of the "not a digit" class): seeded, made from MNIST train (or val)
digits only, labelled against the truth the way the docstring says, and shaped like model inputs."""

import numpy as np
import pytest

from digitlab.data import load_mnist
from digitlab.data.pipeline_samples import (
    KINDS,
    label_candidate,
    make_pipeline_samples,
    page_samples,
    page_seed,
)
from digitlab.data.scenes import DIFFICULTIES, render_scene
from digitlab.vision.pipeline import PipelineConfig, find_candidates


@pytest.fixture(scope="module")
def samples():
    return make_pipeline_samples(8, seed=3, source="train")


def test_seeded_and_shaped_like_model_inputs(samples):
    x, y, k = samples
    x2, y2, k2 = make_pipeline_samples(8, seed=3, source="train")
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and np.array_equal(k, k2)
    assert x.shape == (len(y), 1, 28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert len(y) > 8 * 5  # several digits per page
    assert set(y.tolist()) <= set(range(11))
    assert np.all((y == 10) == (k != KINDS.index("digit")))
    x3, _, _ = make_pipeline_samples(8, seed=4, source="train")
    assert x3.shape != x.shape or not np.array_equal(x3, x)


def test_pages_use_train_digits_never_test_digits():
    train, test = load_mnist("train"), load_mnist("test")
    for i in range(4):
        seed = page_seed(0, i)
        scene = render_scene(seed, DIFFICULTIES[i % 4], source="train")
        for d in scene.digits:  # truth indices are into the train split, and its labels match
            assert d.label == int(train.labels[d.index])
        default = render_scene(seed, DIFFICULTIES[i % 4])
        assert [d.label for d in default.digits] == [int(test.labels[d.index]) for d in default.digits]
        assert not np.array_equal(default.image, scene.image)
    # the benchmark's pages (test digits, the default) are unchanged by the new parameter
    a, b = render_scene(5, "noise"), render_scene(5, "noise", source="test")
    assert np.array_equal(a.image, b.image)
    with pytest.raises(ValueError):
        render_scene(5, source="mnist")


def test_make_pipeline_samples_renders_its_source(monkeypatch):
    import digitlab.data.scenes as scenes

    seen = []
    real = scenes.render_scene

    def spy(seed, difficulty="clean", size=None, *, source="test"):
        seen.append(source)
        return real(seed, difficulty, size, source=source)

    monkeypatch.setattr(scenes, "render_scene", spy)
    make_pipeline_samples(2, seed=0)
    make_pipeline_samples(1, seed=0, source="val")
    assert seen == ["train", "train", "val"]


def test_positives_are_the_digits_the_truth_says():
    # on clean pages the shipped model reads nearly every positive as its label
    from digitlab.vision import Recognizer

    rec = Recognizer()
    xs, ys = [], []
    for i in range(6):
        scene = render_scene(page_seed(1, i), "clean", source="train")
        x, y, _ = page_samples(scene.image, [(d.box, d.label) for d in scene.digits])
        xs.append(x[y < 10])
        ys.append(y[y < 10])
        assert (y < 10).sum() >= 0.8 * len(scene.digits)
    x, y = np.concatenate(xs), np.concatenate(ys)
    read = rec.probabilities(x)[:, :10].argmax(axis=1)
    assert np.mean(read == y) > 0.9


def test_label_candidate_kinds():
    truth = [((100, 100, 30, 50), 7), ((140, 100, 30, 50), 3)]
    assert label_candidate((101, 99, 29, 52), truth) == (0, 7)  # one digit: positive
    assert label_candidate((400, 400, 20, 20), truth) == (1, -1)  # touches nothing: clutter
    assert label_candidate((98, 98, 75, 54), truth) == (2, -1)  # two digits in one box
    assert label_candidate((105, 102, 15, 15), truth) == (3, -1)  # a small piece inside one digit
    assert label_candidate((110, 102, 6, 40), truth) == (-1, -1)  # a tall thin piece: a fair 1, left out
    assert label_candidate((120, 100, 30, 50), truth) == (-1, -1)  # half on each: no label fits


def test_candidates_of_an_empty_page():
    blank = np.full((200, 300, 3), 230, np.uint8)
    found = find_candidates(blank, PipelineConfig())
    assert found.options == [] and found.scale == 1.0 and found.ink.shape == (200, 300)
    x, y, k = page_samples(blank, [])
    assert x.shape == (0, 1, 28, 28) and len(y) == len(k) == 0
