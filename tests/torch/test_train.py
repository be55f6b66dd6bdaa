"""`digitlab train --backend torch`: the NumPy backend's outputs, summary, model file and card; the
same training as NumPy where the arithmetic is the same; exact resume; one-line errors."""

import contextlib
import io
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch twin needs torch: pip install 'digitlab[torch]'")
pytest.importorskip("safetensors", reason="resume files need safetensors: pip install 'digitlab[torch]'")

import digitlab  # noqa: E402
from digitlab.cli import main  # noqa: E402

COMMON = ["train", "--arch", "mlp", "--hidden", "16", "--epochs", "2", "--val-size", "200", "--seed", "1",
          "--no-progress", "--json"]


def run_main(*args) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([str(a) for a in args])
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def both(tmp_path_factory, tiny_data):
    """The same run (no dropout: the same arithmetic) with each backend."""
    folder = tmp_path_factory.mktemp("backends")
    runs = {}
    for backend in ("numpy", "torch"):
        out = folder / f"{backend}.npz"
        code, stdout = run_main(*COMMON, "--dropout", "0", "--data", tiny_data, "--backend", backend, "--out", out)
        assert code == 0
        runs[backend] = (out, json.loads(stdout.strip().splitlines()[-1]))
    return runs


def test_same_summary_keys_and_the_same_training_as_numpy(both):
    (np_out, np_sum), (t_out, t_sum) = both["numpy"], both["torch"]
    assert np_sum.keys() == t_sum.keys() and t_sum["epochs"] == 2 and t_sum["params"] == np_sum["params"]
    np_card, t_card = (json.loads(p.with_suffix(".json").read_text()) for p in (np_out, t_out))
    assert np_card.keys() - {"command"} <= t_card.keys()
    assert t_card["backend"] == "torch" and t_card["device"] == "cpu" and t_card["processes"] == 1
    for a, b in zip(np_card["history"], t_card["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert b["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=1 / 200)
    assert t_sum["test_accuracy"] == pytest.approx(np_sum["test_accuracy"], abs=1 / 300)


def test_the_torch_trained_file_is_a_numpy_model(both, tiny_data):
    out, summary = both["torch"]
    model = digitlab.load(out)  # the NumPy loader and engine, no PyTorch involved
    assert model.meta["test_accuracy"] == summary["test_accuracy"] and model.meta["backend"] == "torch"
    code, stdout = run_main("eval", out, "--data", tiny_data, "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-9)


def test_an_interrupted_torch_run_resumes_exactly(tmp_path, tiny_data, monkeypatch):
    from digitlab.torch.train import Trainer

    common = [*COMMON, "--epochs", "3", "--backend", "torch", "--data", tiny_data, "--augment", "--ema", "0.9",
              "--dropout", "0.3"]
    assert run_main(*common, "--out", tmp_path / "a.npz")[0] == 0
    real_fit = Trainer.fit

    def fit_stopping_after_one_epoch(self, *args, on_epoch=None, **kwargs):
        def stop(log):
            on_epoch(log)
            if log.epoch == 1:
                raise KeyboardInterrupt
        return real_fit(self, *args, on_epoch=stop, **kwargs)

    monkeypatch.setattr(Trainer, "fit", fit_stopping_after_one_epoch)
    assert run_main(*common, "--out", tmp_path / "b.npz")[0] == 130
    monkeypatch.setattr(Trainer, "fit", real_fit)
    assert run_main(*common, "--out", tmp_path / "b.npz", "--resume")[0] == 0
    from safetensors.numpy import load_file

    a, b = load_file(tmp_path / "a.resume.safetensors"), load_file(tmp_path / "b.resume.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("opt/") for k in a) and any(k.startswith("ema/") for k in a)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    sa, sb = digitlab.load(tmp_path / "a.npz").state_dict(), digitlab.load(tmp_path / "b.npz").state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_the_recipe_options_run_on_a_cnn(tmp_path, tiny_data):
    out = tmp_path / "cnn.npz"
    code, stdout = run_main("train", "--backend", "torch", "--arch", "cnn", "--augment", "--ema", "0.99",
                            "--label-smoothing", "0.1", "--schedule", "onecycle", "--epochs", "1", "--limit", "256",
                            "--data", tiny_data, "--val-size", "200", "--out", out, "--json", "--no-progress")
    assert code == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["ema"] == 0.99 and card["label_smoothing"] == 0.1 and card["augment"] is True
    assert digitlab.load(out).predict(np.zeros((2, 1, 28, 28), np.float32)).shape == (2,)


@pytest.mark.parametrize("args, needle", [
    (["--backend", "torch", "--device", "cuda"], "--device cpu"),
    (["--backend", "torch", "--device", "mps"], "--device cpu"),
    (["--backend", "torch", "--device", "cpu", "--amp"], "--amp"),
    (["--ema", "0.99"], "needs --backend torch"),
    (["--amp"], "needs --backend torch"),
    (["--backend", "torch", "--device", "cpu", "--ema", "2"], "--ema"),
    (["--backend", "torch", "--device", "cpu", "--label-smoothing", "1.5"], "--label-smoothing"),
])
def test_bad_options_are_one_line_errors(args, needle, tiny_data, capsys):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if "mps" in args and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    code = main(["train", "--limit", "10", "--data", str(tiny_data), "--val-size", "200", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0] and err[0].startswith("digitlab: error:")


def test_the_numpy_backend_never_imports_torch(tmp_path, tiny_data):
    """PyTorch's thread pool fights NumPy's (see digitlab.bench.harness): NumPy runs must not load it."""
    import subprocess
    import sys

    from .conftest import ONE_THREAD

    code = ("import sys; from digitlab.cli import main; "
            f"a = ['--data', {str(tiny_data)!r}]; "
            f"assert main(['train', '--hidden', '8', '--epochs', '1', '--val-size', '200', '--no-progress', *a, "
            f"'--out', {str(tmp_path / 'n.npz')!r}]) == 0; "
            f"assert main(['eval', {str(tmp_path / 'n.npz')!r}, *a]) == 0; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
