"""The lab notebooks: 1-6 run end to end on tiny data, 7 (Chameleon) is only compiled.

Each local notebook runs in a fresh kernel of this very Python, in a temporary working
directory, with its parameters overridden after its ``parameters`` cell (papermill style).
Every process the kernel started carries a marker in its environment, so a server or a
Ray process the notebook forgot to stop is found even after it has been orphaned.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CLUSTER = "07_chameleon.ipynb"
# Run by its own tests (tests/labs/test_chaos_table.py and test_chaos_scenarios.py): its scenarios start and break things on purpose.
OTHERS = ("08_how_ml_breaks.ipynb",)
MARKER = "SERVICETIME_NOTEBOOK_TEST"

# name -> (parameter overrides, seconds any one cell may take: a hang guard, generous for a loaded CI machine). The defaults are already the
# tiny config; the overrides keep every run in its own workspace and every number small.
LOCAL = {
    "01_quickstart.ipynb": ({"CONFIG": "tiny", "WORKERS": 0}, 300),
    "02_data.ipynb": ({"CONFIG": "tiny"}, 300),
    "03_training.ipynb": ({"CONFIG": "tiny", "RAY_WORKERS": 2}, 300),
    "04_evaluation.ipynb": ({"CONFIG": "tiny"}, 300),
    "05_serving.ipynb": ({"CONFIG": "tiny"}, 300),
    "06_data_that_changes.ipynb": ({"CONFIG": "tiny", "WEEKS": 4}, 300),
}


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _code(cell) -> bool:
    return cell.cell_type == "code"


# --- every notebook, fast ----------------------------------------------------------------


def test_every_notebook_is_listed():
    on_disk = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert on_disk == sorted([*LOCAL, CLUSTER, *OTHERS])


@pytest.mark.parametrize("name", [*LOCAL, CLUSTER, *OTHERS])
def test_ends_with_its_receipt(name):
    """Each lab produces its receipt (servicetime check) instead of a screenshot; 07 before the tear-down."""
    from components.labs.receipts import LABS, lab_key

    code = [c.source for c in _read(name).cells if _code(c)]
    key = lab_key(name)
    assert LABS[key].notebook == name
    receipt_cells = [i for i, source in enumerate(code) if f'notebook_receipt("{key}"' in source]
    assert len(receipt_cells) == 1, f"{name}: one cell calls notebook_receipt({key!r})"
    if name == CLUSTER:
        assert "terraform destroy" in "".join(code[receipt_cells[0]:]), "the receipt must come before the tear-down"
    else:
        assert receipt_cells[0] == len(code) - 1, f"{name}: the receipt cell is the last code cell"


@pytest.mark.parametrize("name", [*LOCAL, CLUSTER])
def test_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if _code(c) and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{name}: cells {dirty} carry outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("name", [*LOCAL, CLUSTER])
def test_opens_with_what_where_how_long(name):
    first = _read(name).cells[0]
    assert first.cell_type == "markdown"
    for words in ("What it teaches", "Where it runs", "How long"):
        assert words in first.source, f"{name}: the first cell should say {words!r}"


@pytest.mark.parametrize("name", LOCAL)
def test_local_notebook_has_parameters_cell(name):
    nb = _read(name)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: exactly one cell tagged 'parameters'"
    names = set(re.findall(r"^([A-Z_]+)\s*=", tagged[0].source, re.MULTILINE))
    assert set(LOCAL[name][0]) | {"WORKSPACE"} <= names, f"{name}: parameters cell lacks {set(LOCAL[name][0]) - names}"


def _python_only(source: str) -> str:
    """Drop IPython shell (!) and magic (%) lines: what is left must be plain Python."""
    return "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in source.splitlines())


def _undefined_names(cells: list[str]) -> list[tuple[int, str]]:
    """Names a cell reads that no earlier cell (nor itself) defines or imports, run top to bottom."""
    import ast
    import builtins

    defined = set(dir(builtins))
    missing = []
    for i, source in enumerate(cells):
        tree = ast.parse(source)
        bound = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                bound.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
            elif isinstance(node, ast.comprehension):
                bound.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in defined | bound:
                missing.append((i, node.id))
        defined |= bound
    return missing


def test_cluster_notebook_compiles():
    nb = _read(CLUSTER)
    cells = [c for c in nb.cells if _code(c)]
    assert cells
    for i, cell in enumerate(cells):
        compile(_python_only(cell.source), f"{CLUSTER} code cell {i}", "exec")
    # A cell left reading a name whose defining cell was removed fails only on Chameleon: catch it here.
    assert _undefined_names([_python_only(c.source) for c in cells]) == []
    shell = "\n".join(c.source for c in cells)
    for step in ("terraform init", "terraform apply", "terraform destroy", "tunnel_command"):
        assert step in shell, f"{CLUSTER} should show {step!r}"
    # An ad-hoc `kubectl run` pod is shut out of MinIO by its NetworkPolicy: the pipeline seeds data itself.
    assert "kubectl run" not in shell and " run seed" not in shell


# --- notebooks 1-6, executed -----------------------------------------------------------------


def _inject(nb: nbformat.NotebookNode, values: dict) -> None:
    """Papermill's convention: a cell after the ``parameters`` cell overrides its values."""
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "# Parameters injected by the test\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(source, id="injected-parameters")
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)
    check = nbformat.v4.new_code_cell("import sys\nprint(sys.executable)", id="injected-kernel-check")
    nb.cells.insert(0, check)


def _marked(token: str) -> list[psutil.Process]:
    """Live processes (not this one) whose environment carries this test's marker."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if proc.environ().get(MARKER) == token:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _strays(token: str, grace_s: float = 20.0) -> list[str]:
    """Processes the notebook left running after its kernel shut down; stopped (by pid) before returning."""
    deadline = time.monotonic() + grace_s
    left = _marked(token)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _marked(token)
    described = []
    for proc in left:
        try:
            described.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return described


def _has_plot(nb: nbformat.NotebookNode) -> bool:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "image/png" in out.get("data", {}):
                return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("name", LOCAL)
def test_notebook_runs(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    overrides, budget_s = LOCAL[name]
    nb = _read(name)
    _inject(nb, {**overrides, "WORKSPACE": str(tmp_path / "workspace")})
    token = uuid.uuid4().hex
    monkeypatch.setenv(MARKER, token)  # inherited by the kernel and everything it starts
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("SERVICETIME_RECEIPTS", str(tmp_path / "receipts"))
    monkeypatch.setenv("SERVICETIME_STUDENT", "notebook-test")
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    client = NotebookClient(nb, kernel_name="python3", timeout=budget_s, allow_errors=False,
                            resources={"metadata": {"path": str(run_dir)}})
    started = time.monotonic()
    try:
        client.execute()
    finally:
        strays = _strays(token)
        if os.environ.get("SERVICETIME_NOTEBOOK_OUT"):  # keep the executed notebook to read it
            Path(os.environ["SERVICETIME_NOTEBOOK_OUT"]).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(os.environ["SERVICETIME_NOTEBOOK_OUT"]) / name)
    elapsed = time.monotonic() - started
    print(f"{name}: {elapsed:.0f} s")

    kernel_python = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert Path(kernel_python).absolute() == Path(sys.executable).absolute(), \
        f"the kernel ran {kernel_python}, not this environment's {sys.executable}"
    errors = [o for c in nb.cells if _code(c) for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert _has_plot(nb), f"{name}: no plot was rendered (no image/png output)"
    assert not strays, f"{name} left processes running: {strays}"
    assert elapsed < budget_s, f"{name} took {elapsed:.0f} s (budget {budget_s} s)"
    # The receipt cell checked what the notebook produced: every expectation met.
    import json

    from components.labs.receipts import lab_key

    receipt = json.loads((tmp_path / "receipts" / "notebook-test" / f"lab-{lab_key(name)}.json").read_text())
    failed = [f"{i['name']}: {i['found']} ({i['reason']})" for i in receipt["items"] if i["result"] == "fail"]
    assert receipt["passed"] and not failed, f"{name}: its receipt fails: {failed}"
