"""The `digitlab` command end to end: train, eval, bench --list, and one-line errors with status 2."""

import json
import subprocess
import sys

import numpy as np
import pytest

import digitlab
from digitlab.cli import main


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "digitlab", *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "m.npz"
    code, stdout, stderr = run_cli("train", "--arch", "mlp", "--hidden", "32", "--epochs", "2", "--limit", "3000",
                                   "--lr", "0.1", "--seed", "1", "--out", str(out), "--json")
    assert code == 0, stderr
    return out, json.loads(stdout.strip().splitlines()[-1])


def test_train_json_summary(trained):
    out, summary = trained
    for key in ("test_accuracy", "val_accuracy", "epochs", "seconds", "params"):
        assert key in summary
    assert summary["epochs"] == 2 and summary["params"] == 784 * 32 + 32 + 32 * 10 + 10
    assert 0.80 < summary["test_accuracy"] <= 1.0  # 3,000 images, 2 epochs, a 32-unit net
    model = digitlab.load(out)
    assert model.meta["test_accuracy"] == summary["test_accuracy"] and "digitlab train" in model.meta["command"]


def test_eval_json_agrees_with_train(trained, capsys):
    out, summary = trained
    assert main(["eval", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 10000 and result["accuracy"] == pytest.approx(summary["test_accuracy"])
    conf = np.array(result["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == 10000 and np.trace(conf) / 1e4 == pytest.approx(result["accuracy"])
    assert np.allclose(result["per_class"], np.diag(conf) / conf.sum(axis=1))


def test_eval_human_output(trained, capsys):
    assert main(["eval", str(trained[0])]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "confusion" in text


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    import digitlab.nn as nn

    common = ["train", "--hidden", "16", "--limit", "1000", "--seed", "2", "--epochs", "3", "--no-progress",
              "--json"]
    assert main([*common, "--out", str(tmp_path / "a.npz")]) == 0
    real_fit = nn.fit

    def fit_stopping_after_one_epoch(*args, on_epoch=None, **kwargs):
        def stop(log):
            on_epoch(log)
            if log.epoch == 1:
                raise KeyboardInterrupt
        return real_fit(*args, on_epoch=stop, **kwargs)

    monkeypatch.setattr(nn, "fit", fit_stopping_after_one_epoch)
    assert main([*common, "--out", str(tmp_path / "b.npz")]) == 130
    monkeypatch.setattr(nn, "fit", real_fit)
    assert main([*common, "--out", str(tmp_path / "b.npz"), "--resume"]) == 0
    a, b = np.load(tmp_path / "a.resume.npz"), np.load(tmp_path / "b.resume.npz")
    weights = [k for k in a.files if not k.startswith("__")]
    assert weights and all(np.array_equal(a[k], b[k]) for k in weights)


@pytest.mark.parametrize("args, needle", [
    (["eval", "does-not-exist.npz"], "no such model file"),
    (["train", "--epochs", "0"], "must be > 0"),
    (["train", "--hidden", "12,x"], "comma-separated integers"),
    (["train", "--arch", "nope", "--limit", "10"], "unknown --arch"),
    (["train", "--data", "/nonexistent/folder", "--limit", "10"], "no such folder"),
    (["bench", "nope"], "unknown benchmark"),
])
def test_errors_are_one_line_with_status_2(args, needle):
    code, stdout, stderr = run_cli(*args)
    assert code == 2
    lines = [line for line in stderr.strip().splitlines() if line]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in stderr


def test_eval_of_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    code, _, stderr = run_cli("eval", str(bad))
    assert code == 2 and "not a digitlab model" in stderr


def test_bench_list_names_mlp_train(capsys):
    assert main(["bench", "--list"]) == 0
    assert "mlp-train" in capsys.readouterr().out
