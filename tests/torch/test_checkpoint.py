"""Checkpoints are safetensors or .npz; a .pt is read only with weights_only=True, so a pickle that
would run code is refused, and nothing in it runs."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch twin needs torch: pip install 'digitlab[torch]'")
pytest.importorskip("safetensors", reason="safetensors checkpoints need safetensors: pip install 'digitlab[torch]'")

from digitlab.errors import ModelFileError  # noqa: E402
from digitlab.models import build, mlp_spec  # noqa: E402
from digitlab.nn.model import read_npz  # noqa: E402
from digitlab.torch.checkpoint import (  # noqa: E402
    export_state_dict,
    import_state_dict,
    load_safetensors,
    load_state_dict,
    save_safetensors,
)

from .conftest import run_cli  # noqa: E402

SPEC = mlp_spec((16,), dropout=0.0)


class _Payload:
    """Unpickling this calls os.system: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_pt(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    state = export_state_dict(build(SPEC))
    torch.save({**state, "extra": _Payload(marker)}, path)  # a state dict with a hostile object inside
    return path, marker


def test_a_pickled_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    path, marker = _evil_pt(tmp_path)
    with pytest.raises(ModelFileError, match="refused"):
        load_state_dict(path)
    assert not marker.exists()
    code, _, stderr = run_cli("export", path, "--spec", _model_file(tmp_path), "--npz", tmp_path / "out.npz")
    assert code == 2 and "refused" in stderr and "weights_only" in stderr and "Traceback" not in stderr
    assert not marker.exists() and not (tmp_path / "out.npz").exists()
    torch.load(path, weights_only=False)  # what digitlab never does: the payload is live
    assert marker.exists()


def test_a_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError, match="refused"):
        read_npz(path)


def _model_file(tmp_path):
    path = tmp_path / "spec.npz"
    if not path.exists():
        build(SPEC, seed=5).save(path)
    return path


def test_plain_state_dicts_load_from_pt_and_safetensors(tmp_path):
    source = build(SPEC, seed=4)
    state = export_state_dict(source)
    torch.save(state, tmp_path / "plain.pt")
    save_safetensors(tmp_path / "plain.safetensors", state, {"note": {"x": 1}})
    tensors, meta = load_safetensors(tmp_path / "plain.safetensors")
    assert meta == {"note": {"x": 1}}
    for path in (tmp_path / "plain.pt", tmp_path / "plain.safetensors"):
        model = import_state_dict(build(SPEC, seed=9), load_state_dict(path))
        a, b = source.state_dict(), model.state_dict()
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_state_dict_of_another_architecture_is_a_clear_error(tmp_path):
    torch.save(export_state_dict(build(mlp_spec((8,)))), tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="does not fit"):
        import_state_dict(build(SPEC), load_state_dict(tmp_path / "other.pt"))
