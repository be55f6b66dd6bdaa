"""Every notebook runs top to bottom in quick mode, calls the phase's own functions, and is stored
without outputs (so diffs stay readable)."""

from __future__ import annotations

import json

import nbformat
import pytest

from tests.journey.conftest import NAMES, NOTEBOOKS


@pytest.mark.parametrize("n", sorted(NAMES))
def test_notebook_runs_and_writes_its_phase(notebook_run, n: int) -> None:
    r, nb = notebook_run(n)
    assert r["phase"] == n and r["quick"] is True
    assert r["command"] == f"notebooks/{NAMES[n]}.ipynb"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    # the last cell displays the report's section for this phase, numbers included
    shown = nb.cells[-1 if n != 5 else -3].outputs
    md = "".join(o.get("data", {}).get("text/markdown", "") for o in shown)
    images = [o for o in shown if "image/png" in o.get("data", {})]
    assert f"## Phase {n}" in md and len(images) == len(r["figures"])


def test_phase1_and_phase2_science_through_the_notebooks(notebook_run) -> None:
    r1, _ = notebook_run(1)
    assert r1["max_abs_diff"] < 1e-9 and r1["speedup_largest"] > 1
    r2, _ = notebook_run(2)
    assert r2["xor_accuracy"] == 1.0
    assert r2["diverged_lrs"] == [r2["surface_learning_rates"]["diverging"]]


@pytest.mark.parametrize("n", sorted(NAMES))
def test_notebooks_are_stored_clean(n: int) -> None:
    path = NOTEBOOKS / f"{NAMES[n]}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{path.name}: clear the outputs before committing"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert f"phase{n}.run(OUT, quick=QUICK" in code
    assert json.loads(path.read_text())["nbformat"] == 4
