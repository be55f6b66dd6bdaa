"""`digitlab journey`: runs the chosen phases, records the command, writes the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digitlab.cli import main


def test_journey_one_phase(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "j"
    assert main(["journey", "--phase", "1", "--quick", "--out", str(out)]) == 0
    r = json.loads((out / "phase1.json").read_text())
    assert r["command"] == f"digitlab journey --phase 1 --quick --seed 0 --out {out}"
    assert r["quick"] is True and r["max_abs_diff"] < 1e-9
    md = (out / "report.md").read_text()
    assert "## Phase 1" in md and "## Phase 2" not in md
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2
    said = capsys.readouterr().out
    assert "phase 1: done" in said and "report.md" in said
    assert not (out / "phase2.json").exists()


def test_journey_rejects_unknown_phase(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["journey", "--phase", "9"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_journey_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "journey" in capsys.readouterr().out
