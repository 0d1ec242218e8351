"""Receipts instead of screenshots: what a lab produced, read back and checked.

``check_lab(key, workspace)`` reads the files, the MLflow registry and (where one is up or
given) Prometheus and the cluster a notebook's lab leaves behind, and returns a receipt: one
item per expectation (expected, found, pass / fail / skip with its reason), the run ids it
saw and the sha256 of every file it read, so a receipt cannot be written without the lab's
own outputs. ``collect`` turns a folder of receipts into one table per student.

A receipt passes when no item failed and at least one passed: a skipped item (no stack up,
no kubeconfig given) says why and counts neither way.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.core.config import DEFAULT_CONFIG, Config, load_config
from components.labs.lab_checks import (
    check_chameleon,
    check_data,
    check_data_that_changes,
    check_evaluation,
    check_how_ml_breaks,
    check_quickstart,
    check_serving,
    check_training,
)
from components.labs.receipt_evidence import FAIL as FAIL
from components.labs.receipt_evidence import PASS as PASS
from components.labs.receipt_evidence import SKIP as SKIP
from components.labs.receipt_evidence import Context, Options

STUDENT_ENV = "SERVICETIME_STUDENT"
RECEIPTS_ENV = "SERVICETIME_RECEIPTS"


def default_out_dir() -> Path:
    """Where receipts go: $SERVICETIME_RECEIPTS, else a folder in the home directory (kept on Chameleon's Jupyter)."""
    return Path(os.environ.get(RECEIPTS_ENV) or Path.home() / "servicetime-receipts")


def student_id(given: str | None = None) -> str:
    return given or os.environ.get(STUDENT_ENV) or getpass.getuser()



@dataclass(frozen=True)
class Lab:
    key: str
    notebook: str
    check: Callable[[Context], None]
    local: bool = True  # reads a workspace (07 reads the cluster and the tunnel's services instead)


LABS: dict[str, Lab] = {lab.key: lab for lab in (
    Lab("01", "01_quickstart.ipynb", check_quickstart),
    Lab("02", "02_data.ipynb", check_data),
    Lab("03", "03_training.ipynb", check_training),
    Lab("04", "04_evaluation.ipynb", check_evaluation),
    Lab("05", "05_serving.ipynb", check_serving),
    Lab("06", "06_data_that_changes.ipynb", check_data_that_changes),
    Lab("07", "07_chameleon.ipynb", check_chameleon, local=False),
    Lab("08", "08_how_ml_breaks.ipynb", check_how_ml_breaks),
)}


def lab_key(name: str) -> str:
    """'01', '1', 'quickstart' or '01_quickstart.ipynb' -> '01'."""
    for lab in LABS.values():
        stem = lab.notebook.removesuffix(".ipynb")
        if name in (lab.key, lab.key.lstrip("0"), stem, stem[3:], lab.notebook):
            return lab.key
    raise KeyError(f"no lab {name!r}; one of {', '.join(LABS)}")


# --- the receipt -----------------------------------------------------------------------------------------


def check_lab(lab: str, workspace: str | Path, config: str | Path | None = None, student: str | None = None,
              options: Options | None = None, cfg: Config | None = None) -> dict:
    """Run one lab's check on its workspace and return the receipt (a JSON-ready dict)."""
    key = lab_key(str(lab))
    ws = Path(workspace).resolve()
    cfg = cfg or load_config(Path(config) if config else DEFAULT_CONFIG, {"workspace": str(ws)})
    ctx = Context(ws, cfg, options or Options())
    if LABS[key].local and not ws.is_dir():
        ctx.expect("workspace", f"{ws} exists", "missing", False, "the lab's workspace does not exist")
    else:
        LABS[key].check(ctx)
    results = [i.result for i in ctx.items]
    passed = FAIL not in results and PASS in results
    return {
        "lab": key, "notebook": LABS[key].notebook, "student": student_id(student), "passed": passed,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "workspace": str(ws),
        "counts": {r: results.count(r) for r in (PASS, FAIL, SKIP)},
        "items": [asdict(i) for i in ctx.items], "run_ids": ctx.run_ids, "files_sha256": ctx.files,
    }


def render_markdown(receipt: dict) -> str:
    lines = [
        f"### Lab {receipt['lab']} ({receipt['notebook']}): {'PASS' if receipt['passed'] else 'FAIL'}",
        f"student `{receipt['student']}`, {receipt['created_at']}, {len(receipt['files_sha256'])} files hashed",
        "",
        "| check | expected | found | result |",
        "|---|---|---|---|",
    ]
    for i in receipt["items"]:
        found = i["found"] if i["result"] == PASS else f"{i['found']} ({i['reason']})"
        lines.append(f"| {i['name']} | {_cell(i['expected'])} | {_cell(found)} | {i['result']} |")
    if receipt["run_ids"]:
        lines += ["", "runs: " + ", ".join(f"`{r}`" for r in receipt["run_ids"])]
    digest = hashlib.sha256(json.dumps(receipt["files_sha256"], sort_keys=True).encode()).hexdigest()
    lines.append(f"evidence sha256: `{digest[:16]}` (over the files' hashes in the JSON)")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:160]


def write_receipt(receipt: dict, out_dir: str | Path | None = None) -> Path:
    """Write <out>/<student>/lab-<key>.json and .md; returns the JSON path."""
    folder = Path(out_dir or default_out_dir()) / receipt["student"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"lab-{receipt['lab']}.json"
    path.write_text(json.dumps(receipt, indent=2) + "\n")
    path.with_suffix(".md").write_text(render_markdown(receipt))
    return path


# --- the instructor's table -------------------------------------------------------------------------------


def collect(folder: str | Path) -> dict[str, dict[str, dict]]:
    """Every receipt under ``folder`` (any depth): student -> lab -> the newest receipt for it."""
    table: dict[str, dict[str, dict]] = {}
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            receipt = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(receipt, dict) or not {"lab", "student", "passed", "items"} <= set(receipt):
            continue  # not a receipt
        labs = table.setdefault(receipt["student"], {})
        if receipt["lab"] not in labs or receipt["created_at"] > labs[receipt["lab"]]["created_at"]:
            labs[receipt["lab"]] = receipt
    return table


def render_collected(table: dict[str, dict[str, dict]]) -> str:
    """One table per student: each lab's result, its first failing reason, when."""
    out = []
    for student in sorted(table):
        labs = table[student]
        done = sum(1 for r in labs.values() if r["passed"])
        out += [
            f"## {student}: {done} of {len(LABS)} labs pass",
            "",
            "| lab | result | pass/fail/skip | first failure | when |",
            "|---|---|---|---|---|",
        ]
        for key, lab in LABS.items():
            r = labs.get(key)
            if r is None:
                out.append(f"| {key} {lab.notebook} | no receipt | - | - | - |")
                continue
            c = r["counts"]
            first = next((f"{i['name']}: {i['reason']}" for i in r["items"] if i["result"] == FAIL), "")
            out.append(f"| {key} {lab.notebook} | {'PASS' if r['passed'] else 'FAIL'} | "
                       f"{c[PASS]}/{c[FAIL]}/{c[SKIP]} | {_cell(first)} | {r['created_at']} |")
        out.append("")
    return "\n".join(out) or "no receipts found\n"


def notebook_receipt(lab: str, workspace: str | Path, cfg: Config | None = None, **options: Any) -> dict:
    """The receipt cell of each notebook: check, write, show the table (IPython) and return the receipt."""
    receipt = check_lab(lab, workspace, options=Options(**options), cfg=cfg)
    path = write_receipt(receipt)
    try:
        from IPython.display import Markdown, display

        display(Markdown(render_markdown(receipt)))
    except ImportError:
        print(render_markdown(receipt))
    print(f"receipt: {path}")
    return receipt
