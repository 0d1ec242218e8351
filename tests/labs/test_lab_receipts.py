"""`servicetime check`: receipts on a lab workspace made by the notebooks' own library calls, on tiny data.

One workspace is built once (data, validation, features, a model, its evaluation, a weak model the
gate rejects, a model server that followed the champion) and the labs whose outputs it holds are
checked on it; a lab not done must fail with its reason. Notebooks 01, 03 and 06 are checked on
their own executed runs in tests/notebooks (they need the pipeline, Ray and the loop).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from components.labs import receipts
from tests.conftest import TINY, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab_workspace(tmp_path_factory) -> Path:
    """What notebooks 02, 04 and 05 leave in their workspace, through the same calls."""
    from components.devstack.process import free_port
    from components.learn import tracking
    from components.steps.evaluate import evaluate_step
    from components.steps.featurize import featurize
    from components.steps.ingest import generate_raw, ingest
    from components.steps.register import promote_step
    from components.steps.train import train_step
    from components.steps.validate import validate_dataset

    ws = tmp_path_factory.mktemp("lab") / "workspace"
    cfg = tiny_config(ws, **{"train.num_workers": 0})
    root = str(ws / "data")
    generate_raw(cfg.data, root)
    version = ingest(root, ws / "ingest").data_version
    clean = validate_dataset(cfg, root, version, ws / "validate", fail_on_rejected=False).clean_version
    featurize(cfg, ws / "validate" / "clean.parquet", ws / "features")
    trained = train_step(cfg, ws / "features", ws / "model", clean)
    evaluate_step(cfg, ws / "features", ws / "model", ws / "evaluation", run_id=trained.run_id)
    promote_step(cfg, trained.model_version)
    weak_cfg = tiny_config(ws, **{"train.num_workers": 0, "train.epochs": 1, "train.lr": 3e-4})
    weak = train_step(weak_cfg, ws / "features", ws / "model-weak", clean)
    evaluate_step(weak_cfg, ws / "features", ws / "model-weak", ws / "evaluation-weak", run_id=weak.run_id)

    # Notebook 05's server: follows the champion, answers, stops on SIGTERM.
    port = free_port()
    log = ws / "model-server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "components.cli.main", "--config", str(TINY), "--workspace", str(ws), "serve",
         "--host", "127.0.0.1", "--port", str(port), "--reload-interval", "1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(cfg)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("model server not ready:\n" + log.read_text()[-2000:])
    finally:
        server.terminate()
        server.wait(timeout=30)
    return ws


def _check(lab: str, ws: Path, **kw) -> dict:
    return receipts.check_lab(lab, ws, TINY, student="student-a", **kw)


def _failures(receipt: dict) -> list[str]:
    return [f"{i['name']}: {i['found']} ({i['reason']})" for i in receipt["items"] if i["result"] == receipts.FAIL]


@pytest.mark.parametrize("lab", ["02", "04", "05"])
def test_a_done_lab_passes_with_its_evidence(lab, lab_workspace):
    receipt = _check(lab, lab_workspace)
    assert receipt["passed"], _failures(receipt)
    assert receipt["counts"][receipts.PASS] >= 3
    # The evidence is the lab's own files: their hashes are in the receipt and match the bytes on disk.
    assert receipt["files_sha256"]
    import hashlib

    for path, digest in receipt["files_sha256"].items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert receipt["run_ids"]
    if lab == "05":  # no stack left up: Prometheus is skipped, and says why
        skipped = {i["name"]: i["reason"] for i in receipt["items"] if i["result"] == receipts.SKIP}
        assert "no local stack up" in skipped["Prometheus targets"]


def test_a_lab_not_done_fails_with_a_readable_reason(lab_workspace, tmp_path):
    # Notebook 6's loop never ran in this workspace: its receipt fails and says which cell to run.
    receipt = _check("06", lab_workspace)
    assert not receipt["passed"]
    assert _failures(receipt) == ["loop history: missing (the loop has not run: run the 'The loop' cell)"]
    # A workspace where only the data was made: lab 4 is not done, and no MLflow store is created by checking.
    from components.steps.ingest import generate_raw

    half = tmp_path / "half"
    generate_raw(tiny_config(half).data, str(half / "data"))
    receipt = _check("04", half)
    assert not receipt["passed"] and "the evaluate step has not run" in _failures(receipt)[0]
    receipt = _check("03", half)
    assert not receipt["passed"] and not (half / "mlflow.db").exists()
    assert any("nothing was trained here" in f for f in _failures(receipt))
    markdown = receipts.render_markdown(receipt)
    assert "FAIL" in markdown and "| fail |" in markdown


def test_cli_check_and_collect(lab_workspace, tmp_path, capsys):
    from components.cli.main import main

    out = tmp_path / "receipts"
    base = ["--config", str(TINY), "--workspace", str(lab_workspace), "check"]
    assert main([*base, "02", "--student", "ana", "--out", str(out)]) == 0
    assert main([*base, "evaluation", "--student", "ana", "--out", str(out)]) == 0
    assert main([*base, "06", "--student", "ana", "--out", str(out)]) == 1
    assert main(["--config", str(TINY), "--workspace", str(tmp_path / "nothing"), "check", "02",
                 "--student", "ben", "--out", str(out)]) == 1
    written = json.loads((out / "ana" / "lab-02.json").read_text())
    assert written["student"] == "ana" and written["passed"]
    assert "| validation report |" in (out / "ana" / "lab-02.md").read_text()
    capsys.readouterr()

    table = tmp_path / "section.md"
    assert main(["check", "collect", str(out), "--out", str(table)]) == 0
    text = table.read_text()
    labs = len(receipts.LABS)
    assert f"## ana: 2 of {labs} labs pass" in text and f"## ben: 0 of {labs} labs pass" in text
    assert "| 06 06_data_that_changes.ipynb | FAIL |" in text and "| 01 01_quickstart.ipynb | no receipt |" in text
    grid = json.loads(table.with_suffix(".json").read_text())
    assert grid == {"ana": {"02": True, "04": True, "06": False}, "ben": {"02": False}}
