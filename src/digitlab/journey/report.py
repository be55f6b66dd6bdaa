"""What the phases share: the non-interactive matplotlib backend, JSON output with its provenance, and
the report (``report.md`` and ``report.html``) built from the JSON files that the phases wrote.

Kept apart so that a phase never imports ``pyplot`` before the Agg backend is chosen (tests and CI
have no display) and so that every phase writes its numbers the same way.

The report is made only from the JSON files in the output folder — each phase's ``section(result)``
turns its numbers into sentences — so every number in it is a measured one, and a rerun of one phase
(``digitlab journey --phase 3``) updates its part of the report without touching the others.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display in tests or CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# --- JSON ------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """NumPy scalars/arrays -> Python numbers/lists, so ``json.dump`` and test comparisons just work."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no inf/nan; keep it readable instead of failing
    return value


def plain(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-safe form of a phase's result (what is written and what is returned)."""
    return _plain(result)


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


def default_command(phase: int, quick: bool, seed: int, out_dir: Path) -> str:
    """The command line that reproduces one phase's files (recorded when a phase is run from Python)."""
    return f"digitlab journey --phase {phase}{' --quick' if quick else ''} --seed {seed} --out {out_dir}"


def provenance(phase: int, quick: bool, seed: int, out_dir: Path, command: str | None, t0: float) -> dict[str, Any]:
    """How a phase's numbers were made: the command, seed, mode, when, how long, on what.

    ``t0`` is the `time.perf_counter` value taken when the phase started.
    """
    return {
        "phase": phase, "quick": quick, "seed": seed,
        "command": command or default_command(phase, quick, seed, out_dir),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"), "seconds": round(time.perf_counter() - t0, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.system()}",
        "python": platform.python_version(), "numpy": np.__version__,
    }


# --- number formatting (one place, so the report and the tests format alike) ----------------------------


def pct(x: float, digits: int = 1) -> str:
    """``0.98765 -> '98.8 %'``."""
    return f"{100 * float(x):.{digits}f} %"


def pts(x: float, digits: int = 1) -> str:
    """A difference of two accuracies in percentage points, signed: ``-0.0123 -> '-1.2 points'``."""
    return f"{100 * float(x):+.{digits}f} points"


def num(x: float, digits: int = 3) -> str:
    """Significant digits, ``g`` style: ``0.000123456 -> '0.000123'``; ``'nan'`` stays readable."""
    try:
        return f"{float(x):.{digits}g}"
    except (TypeError, ValueError):
        return str(x)


# --- the report --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A PNG in the output folder and the sentences that say what it shows."""

    file: str
    caption: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


Block = str | Figure | Table  # a str is a paragraph of Markdown (inline `code`, **bold**, *italic*, - lists)


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def _table_md(t: Table) -> str:
    lines = ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(row) + " |" for row in t.rows]
    return "\n".join(lines)


def section_markdown(s: Section, image_dir: str = "") -> str:
    """One section as Markdown; ``image_dir`` is put before each figure's file name (a notebook shows
    the section with images from the output folder)."""
    parts = [f"## {s.title}"]
    for b in s.blocks:
        if isinstance(b, Figure):
            parts.append(f"![{b.file}]({image_dir}{b.file})\n\n*{b.caption}*")
        elif isinstance(b, Table):
            parts.append(_table_md(b))
        else:
            parts.append(b)
    return "\n\n".join(parts)


def display_section(s: Section, out_dir: Path) -> None:
    """Show a section in a notebook: its text as Markdown, its figures as embedded images (a notebook
    cannot link to files outside its folder)."""
    from IPython.display import Image, Markdown, display

    display(Markdown(f"## {s.title}"))
    for b in s.blocks:
        if isinstance(b, Figure):
            display(Image(filename=str(Path(out_dir) / b.file)))
            display(Markdown(f"*{b.caption}*"))
        else:
            display(Markdown(_table_md(b) if isinstance(b, Table) else b))


def render_markdown(title: str, intro: list[str], sections: list[Section]) -> str:
    return "\n\n".join([f"# {title}", *intro, *(section_markdown(s) for s in sections)]) + "\n"


_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
]


def inline_html(text: str) -> str:
    """The little Markdown the sections use, as HTML (escaped first, so a ``<`` in a sentence is text).

    Code spans are cut out before the other rules run, so ``*`` inside `code` stays a star.
    """
    codes: list[str] = []

    def keep(m: re.Match) -> str:
        codes.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    out = re.sub(r"`([^`]+)`", keep, html.escape(text, quote=False))
    for pattern, repl in _INLINE[1:]:
        out = pattern.sub(repl, out)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], out)


def _block_html(text: str) -> str:
    lines = text.strip().splitlines()
    if lines and all(line.startswith("- ") or line.startswith("  ") for line in lines):
        items, cur = [], []
        for line in lines:
            if line.startswith("- ") and cur:
                items.append(" ".join(cur))
                cur = []
            cur.append(line[2:].strip())
        items.append(" ".join(cur))
        return "<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in items) + "</ul>"
    return f"<p>{inline_html(' '.join(line.strip() for line in lines))}</p>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}
img{max-width:100%;border:1px solid #ddd}figure{margin:1.5rem 0}figcaption{font-style:italic;color:#444}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}td,th{border:1px solid #ccc;padding:.2rem .5rem}
th{background:#f3f3f3}code{background:#f3f3f3;padding:0 .2rem}h2{border-bottom:1px solid #ddd;margin-top:2.5rem}"""


def render_html(title: str, intro: list[str], sections: list[Section], out_dir: Path) -> str:
    """One self-contained page: every figure is embedded as a base64 data URI."""
    body = [f"<h1>{html.escape(title)}</h1>", *(_block_html(p) for p in intro)]
    for s in sections:
        body.append(f"<h2>{inline_html(s.title)}</h2>")
        for b in s.blocks:
            if isinstance(b, Figure):
                data = base64.b64encode((out_dir / b.file).read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(b.file)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{inline_html(b.caption)}</figcaption></figure>")
            elif isinstance(b, Table):
                head = "".join(f"<th>{inline_html(h)}</th>" for h in b.header)
                rows = "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in r) + "</tr>" for r in b.rows)
                body.append(f"<table><tr>{head}</tr>{rows}</table>")
            else:
                body.append(_block_html(b))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def load_results(out_dir: Path) -> dict[int, dict[str, Any]]:
    """``{phase: result}`` for every ``phaseN.json`` in ``out_dir``."""
    found = {}
    for path in sorted(Path(out_dir).glob("phase[0-9].json")):
        found[int(path.stem[len("phase"):])] = json.loads(path.read_text())
    return found


TITLE = "digitlab: the learning path"


def _intro(results: dict[int, dict[str, Any]]) -> list[str]:
    modes = {"quick" if r.get("quick") else "full" for r in results.values()}
    mode = modes.pop() if len(modes) == 1 else "mixed quick and full"
    lines = [f"- Phase {n}: `{r.get('command', '?')}` — seed {r.get('seed')}, {num(r.get('seconds', float('nan')))} s"
             f" on {r.get('machine', '?')}, finished {r.get('finished', '?')}" for n, r in sorted(results.items())]
    return [
        "Five experiments, from one neuron to a convolutional network, each reproducible with one command. "
        "Every number below is read from the JSON file that the experiment wrote next to its figures "
        "(`phaseN.json`), so rerunning a phase rewrites its paragraph too.",
        f"This report was generated from a **{mode}** run (`--quick` uses small subsets, for tests and CI; "
        "the sizes are stated in each section). How each phase was made:",
        "\n".join(lines),
    ]


def build_sections(results: dict[int, dict[str, Any]]) -> list[Section]:
    from digitlab.journey import PHASES

    return [PHASES[n].section(r) for n, r in sorted(results.items()) if n in PHASES]


def write_report(out_dir: Path) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` for the phase JSON files present in ``out_dir``."""
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    if not results:
        raise FileNotFoundError(f"{out_dir}: no phaseN.json files; run `digitlab journey --out {out_dir}` first")
    sections = build_sections(results)
    intro = _intro(results)
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(render_markdown(TITLE, intro, sections))
    page.write_text(render_html(TITLE, intro, sections, out_dir))
    return md, page


__all__ = ["Figure", "Section", "Table", "load_results", "num", "pct", "plain", "plt", "provenance", "pts",
           "display_section", "render_html", "render_markdown", "section_markdown", "write_json", "write_report"]
