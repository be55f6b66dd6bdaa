"""The report is made from the phases' JSON: every figure is in it (embedded in the HTML), the numbers
it quotes are the JSON's, and changing the JSON changes the report (nothing is hard-coded)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from digitlab.journey import report
from digitlab.journey.report import num, pct
from tests.journey.conftest import NAMES


@pytest.fixture(scope="module")
def all_phases(notebook_run, journey_dir: Path) -> tuple[Path, dict[int, dict]]:
    results = {n: notebook_run(n)[0] for n in NAMES}
    report.write_report(journey_dir)
    return journey_dir, results


def test_every_figure_in_both_reports(all_phases) -> None:
    out, results = all_phases
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    figures = [f for r in results.values() for f in r["figures"]]
    assert len(figures) == 14
    for f in figures:
        assert f"![{f}]({f})" in md
        assert base64.b64encode((out / f).read_bytes()).decode() in page
    assert page.count("data:image/png;base64,") == len(figures)
    assert "src=\"phase" not in page  # no image left as a link
    for n in NAMES:
        assert f"## Phase {n}" in md and f"<h2>Phase {n}" in page


def test_numbers_in_the_report_are_the_json_numbers(all_phases) -> None:
    out, r = all_phases
    md = (out / "report.md").read_text()
    expect = [
        f"{r[1]['max_abs_diff']:.1e}", f"{r[1]['speedup_largest']:,.0f} times faster",
        f"It reaches 100 % at epoch {r[2]['xor_epochs_to_100']}", num(r[2]["surface_stable_lr_limit"]),
        pct(r[3]["losses"]["cross-entropy"]["test_accuracy"], 2), pct(r[3]["losses"]["MSE"]["test_accuracy"], 2),
        f"{len(r[3]['diverged_cells'])} of 20 runs diverged", num(r[3]["best_cell"]["val_loss"]),
        pct(r[4]["accuracy"]["dense_original"], 2), pct(r[4]["accuracy"]["dense_permuted"], 2),
        pct(r[4]["accuracy"]["cnn_original"], 2), pct(r[4]["accuracy"]["cnn_permuted"], 2),
        pct(r[4]["translation_accuracy"]["dense"]["4"]), pct(r[4]["translation_accuracy"]["cnn"]["4"]),
        f"{r[4]['equivariant_max_logit_diff']:.1e}",
        pct(r[5]["test_accuracy"], 2), f"({r[5]['errors']} errors)",
        pct(r[5]["torch_comparison"]["torch_card_test_accuracy"], 2),
        f"{r[5]['torch_comparison']['bench_epoch_ratio']:.2f}x",
    ]
    missing = [e for e in expect if e not in md]
    assert not missing, missing
    for n in NAMES:  # how each phase was made
        assert f"- Phase {n}: `{r[n]['command']}` — seed 0" in md
    assert "**quick** run" in md


def test_report_follows_the_json(all_phases, tmp_path: Path) -> None:
    src, _ = all_phases
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "phase4.json"
    r = json.loads(path.read_text())
    r["accuracy"]["dense_permuted"] = 0.123456
    r["drop"]["dense"] = r["accuracy"]["dense_original"] - 0.123456
    r["dense_within_1_point"] = False
    path.write_text(json.dumps(r))
    report.write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "12.35 %" in md and "**more than 1 point apart**" in md
    assert "12.35 %" in (tmp_path / "report.html").read_text()


def test_report_of_some_phases_only(all_phases, tmp_path: Path) -> None:
    src, _ = all_phases
    for f in ("phase2.json", "phase2_surface.png", "phase2_xor.png"):
        shutil.copy(src / f, tmp_path / f)
    md_path, _ = report.write_report(tmp_path)
    md = md_path.read_text()
    assert "## Phase 2" in md and "## Phase 1" not in md and "## Phase 3" not in md


def test_no_results_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no phaseN.json"):
        report.write_report(tmp_path)


def test_inline_html() -> None:
    assert report.inline_html("a < b & `x*y*z` **bold** *it*") == \
        "a &lt; b &amp; <code>x*y*z</code> <strong>bold</strong> <em>it</em>"
    assert report.inline_html("N x d_in x d_out, 2*3") == "N x d_in x d_out, 2*3"
    assert report.inline_html("[docs](docs/x.md)") == '<a href="docs/x.md">docs</a>'


def test_formatters() -> None:
    assert pct(0.98765) == "98.8 %" and pct(0.98765, 2) == "98.77 %"
    assert report.pts(-0.0123) == "-1.2 points"
    assert num(0.000123456) == "0.000123" and num("nan") == "nan"
