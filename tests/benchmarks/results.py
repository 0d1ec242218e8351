"""Where benchmark figures go: one JSON file, one section per benchmark, and a printed table.

    record("training", {...})      merge figures into the file named by BENCH_OUT
                                   (default: bench-results.json in the repository root, git-ignored)
    print_table("training", rows)  rows as an aligned text table on stdout
    goal("...", met, detail)       a goal printed as met / NOT MET (benchmarks never assert speed)

Every section also gets when it was recorded and what the machine looked like
(CPUs, load average), because on a small shared machine that decides the figures.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FILE = REPO / "bench-results.json"


def out_path() -> Path:
    return Path(os.environ.get("BENCH_OUT") or DEFAULT_FILE)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform()}


def _plain(value: Any) -> Any:
    """numpy scalars/arrays, tuples and NaN as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def record(section: str, figures: Mapping[str, Any]) -> Path:
    """Merge ``figures`` into ``section`` of the results file (other sections are kept)."""
    path = out_path()
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}  # a half-written or foreign file: start again rather than fail a benchmark
    if not isinstance(data, dict):
        data = {}
    entry = data.get(section) if isinstance(data.get(section), dict) else {}
    entry.update(_plain(dict(figures)))
    entry["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    entry["machine"] = machine()
    data[section] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        json.dump(data, tmp, indent=2, sort_keys=True)
    os.replace(tmp.name, path)
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 10:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(section: str, rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> None:
    """Rows (dicts) as an aligned table; ``columns`` picks and orders them (default: all, first seen)."""
    rows = list(rows)
    if columns is None:
        columns = []
        for row in rows:
            columns += [c for c in row if c not in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print(f"\n== {section} ==")
    print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(columns, widths))))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))))


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def goal(text: str, met: bool, detail: str = "") -> dict[str, Any]:
    """Print a goal as met / NOT MET (never asserted) and return it for ``record``."""
    print(f"goal: {text}: {'met' if met else 'NOT MET'}{f' ({detail})' if detail else ''}")
    return {"goal": text, "met": bool(met), "detail": detail}
