"""The notebooks are the learner's entry point and call the same functions as `digitlab journey`, so the
tests run each of them once, in quick mode, into one folder per session; the tests of phases 3-5, of the
notebooks and of the report then check the JSON and figures those runs wrote. Each quick experiment
thus runs once (phases 1 and 2 are also run directly by their own tests: they take a second)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = {1: "01_neurons", 2: "02_backprop", 3: "03_training_dynamics", 4: "04_dense_bottleneck", 5: "05_cnn"}


def execute_notebook(path: Path, out_dir: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell of ``path`` in a fresh kernel, quick mode, writing into ``out_dir``; a failing
    cell raises `nbclient.exceptions.CellExecutionError` with the cell's traceback."""
    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "DIGITLAB_JOURNEY_QUICK": "1", "DIGITLAB_JOURNEY_OUT": str(out_dir)}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)
    return nb


@pytest.fixture(scope="session")
def journey_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("journey")


@pytest.fixture(scope="session")
def notebook_run(journey_dir: Path) -> Callable[[int], tuple[dict[str, Any], nbformat.NotebookNode]]:
    """``notebook_run(n)`` -> (``phaseN.json`` as written by notebook n, the executed notebook); each
    notebook runs at most once per session."""
    done: dict[int, nbformat.NotebookNode] = {}

    def run(n: int) -> tuple[dict[str, Any], nbformat.NotebookNode]:
        if n not in done:
            done[n] = execute_notebook(NOTEBOOKS / f"{NAMES[n]}.ipynb", journey_dir)
        return json.loads((journey_dir / f"phase{n}.json").read_text()), done[n]

    return run


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n", path
