"""Small helpers shared by the phases: the non-interactive matplotlib backend and JSON output.

Kept apart so that a phase never imports ``pyplot`` before the Agg backend is chosen (tests and CI
have no display) and so that every phase writes its numbers the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display in tests or CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _plain(value: Any) -> Any:
    """NumPy scalars/arrays -> Python numbers/lists, so ``json.dump`` and test comparisons just work."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no inf/nan; keep it readable instead of failing
    return value


def plain(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-safe form of a phase's result (what is written and what is returned)."""
    return _plain(result)


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


__all__ = ["plain", "plt", "write_json"]
