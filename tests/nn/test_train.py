"""The training loop: it learns, it is reproducible, resume is exact, divergence stops it."""

from __future__ import annotations

import numpy as np
import pytest

import digitlab
from digitlab.errors import DigitlabError, TrainingDiverged
from digitlab.models import build, mlp_spec
from digitlab.nn import SGD, Adam, Cosine, SoftmaxCrossEntropy, evaluate, fit


def blobs(n: int = 200, seed: int = 0, spread: float = 1.0):
    """Two Gaussian blobs at (-2, -2) and (2, 2), as images of shape (1, 1, 2)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    centers = np.where(y[:, None] == 1, 2.0, -2.0)
    x = centers + spread * rng.standard_normal((n, 2))
    return x.reshape(n, 1, 1, 2).astype(np.float32), y


def spec(dropout: float = 0.0, hidden=(8,)):
    return mlp_spec(hidden=hidden, dropout=dropout, input_shape=(1, 1, 2), num_classes=2)


def weights(model) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_fit_learns_separable_blobs():
    x, y = blobs(200, seed=0)
    xv, yv = blobs(100, seed=1)
    model = build(spec(), seed=0)
    history = fit(model, SGD(model, lr=0.1, momentum=0.9), SoftmaxCrossEntropy(), x, y, x_val=xv, y_val=yv,
                  epochs=8, batch_size=20, seed=0, progress=False)
    _, acc, pred = evaluate(model, xv, yv)
    assert acc > 0.95
    assert pred.shape == yv.shape
    assert len(history.epochs) == 8
    assert [e.epoch for e in history.epochs] == list(range(1, 9))
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    assert history.epochs[-1].val_accuracy == pytest.approx(acc)
    assert history.best_val_accuracy == max(e.val_accuracy for e in history.epochs)


def test_same_seed_same_weights_and_other_seed_differs():
    x, y = blobs(120, seed=2)

    def run(seed):
        model = build(spec(dropout=0.2), seed=0)
        fit(model, Adam(model, lr=0.01), SoftmaxCrossEntropy(), x, y, epochs=2, batch_size=16, seed=seed,
            progress=False)
        return weights(model)

    a, b, c = run(0), run(0), run(1)
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert any(not np.array_equal(a[k], c[k]) for k in a)  # the seed drives shuffling and dropout


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_resume_is_exact(tmp_path, dropout, opt):
    x, y = blobs(90, seed=3)
    loss = SoftmaxCrossEntropy()
    steps_per_epoch = 6  # ceil(90 / 16)
    schedule = Cosine(total=4 * steps_per_epoch, warmup=2)

    def make(model):
        return SGD(model, lr=0.05, momentum=0.9) if opt == "sgd" else Adam(model, lr=0.01)

    straight = build(spec(dropout=dropout, hidden=(8, 6)), seed=0)
    h_straight = fit(straight, make(straight), loss, x, y, epochs=4, batch_size=16, seed=5, schedule=schedule,
                     progress=False)

    resume = tmp_path / "resume.npz"
    first = build(spec(dropout=dropout, hidden=(8, 6)), seed=0)
    fit(first, make(first), loss, x, y, epochs=2, batch_size=16, seed=5, schedule=schedule, resume_path=resume,
        progress=False)
    assert resume.is_file()
    assert any(not np.array_equal(v, straight.state_dict()[k]) for k, v in first.state_dict().items())

    second = build(spec(dropout=dropout, hidden=(8, 6)), seed=123)  # other init: the resume file must win
    h_resumed = fit(second, make(second), loss, x, y, epochs=4, batch_size=16, seed=5, schedule=schedule,
                    resume_path=resume, resume=True, progress=False)
    final = straight.state_dict()
    for k, v in second.state_dict().items():
        assert np.array_equal(v, final[k]), k
    assert [e.epoch for e in h_resumed.epochs] == [1, 2, 3, 4]
    assert [e.train_loss for e in h_resumed.epochs] == [e.train_loss for e in h_straight.epochs]


def test_resume_false_starts_afresh(tmp_path):
    x, y = blobs(60, seed=4)
    resume = tmp_path / "resume.npz"
    a = build(spec(), seed=0)
    fit(a, SGD(a, lr=0.1), SoftmaxCrossEntropy(), x, y, epochs=2, batch_size=16, resume_path=resume,
        progress=False)
    b = build(spec(), seed=0)
    history = fit(b, SGD(b, lr=0.1), SoftmaxCrossEntropy(), x, y, epochs=2, batch_size=16, resume_path=resume,
                  resume=False, progress=False)
    assert len(history.epochs) == 2
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k])


def test_resume_with_other_optimizer_is_refused(tmp_path):
    x, y = blobs(40, seed=4)
    resume = tmp_path / "resume.npz"
    a = build(spec(), seed=0)
    fit(a, SGD(a, lr=0.1), SoftmaxCrossEntropy(), x, y, epochs=1, resume_path=resume, progress=False)
    b = build(spec(), seed=0)
    with pytest.raises(DigitlabError, match="SGD.*Adam"):
        fit(b, Adam(b), SoftmaxCrossEntropy(), x, y, epochs=2, resume_path=resume, resume=True, progress=False)


def test_huge_learning_rate_raises_training_diverged(tmp_path):
    x, y = blobs(200, seed=5)
    model = build(spec(), seed=0)
    ckpt = tmp_path / "best.npz"
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged, match="learning rate") as info:
        fit(model, SGD(model, lr=1e4), SoftmaxCrossEntropy(), x, y, epochs=5, batch_size=10, seed=0,
            checkpoint=ckpt, progress=False)
    message = str(info.value)
    assert "1e+04" in message  # the rate in use ...
    assert "try 1e+03" in message  # ... and a smaller one to try
    assert isinstance(info.value, FloatingPointError)


def test_best_checkpoint_exists_and_loads(tmp_path):
    x, y = blobs(160, seed=6)
    xv, yv = blobs(80, seed=7, spread=1.5)
    model = build(spec(), seed=0)
    ckpt = tmp_path / "ckpt" / "best.npz"
    history = fit(model, SGD(model, lr=0.05), SoftmaxCrossEntropy(), x, y, x_val=xv, y_val=yv, epochs=4,
                  batch_size=16, seed=0, checkpoint=ckpt, progress=False)
    assert ckpt.is_file()
    best = digitlab.load(ckpt)
    assert best.meta["epoch"] == history.best_epoch
    _, acc, _ = evaluate(best, xv, yv)
    assert acc == history.best_val_accuracy
    assert acc == max(e.val_accuracy for e in history.epochs)
    assert not list(ckpt.parent.glob("*.tmp"))


def test_checkpoint_without_validation_is_the_last_model(tmp_path):
    x, y = blobs(60, seed=8)
    model = build(spec(), seed=0)
    ckpt = tmp_path / "last.npz"
    fit(model, SGD(model, lr=0.05), SoftmaxCrossEntropy(), x, y, epochs=3, batch_size=16, checkpoint=ckpt,
        progress=False)
    loaded = digitlab.load(ckpt)
    assert loaded.meta["epoch"] == 3
    assert np.array_equal(loaded.forward(x), model.forward(x))


def test_fit_rejects_bad_data():
    model = build(spec(), seed=0)
    x, y = blobs(10)
    with pytest.raises(DigitlabError, match="10 training inputs but 9 labels"):
        fit(model, SGD(model), SoftmaxCrossEntropy(), x, y[:9], progress=False)
    with pytest.raises(DigitlabError, match="no training data"):
        fit(model, SGD(model), SoftmaxCrossEntropy(), x[:0], y[:0], progress=False)
