"""The command line on real files: generate, validate (exit codes and reports)."""

import json
import subprocess
import sys

import pandas as pd


def servicetime(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "components.cli.main", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_generate_then_validate_good_and_bad_batches(tmp_path):
    out = tmp_path / "data"
    r = servicetime(
        "--config", "components/configs/tiny.yaml", "data", "generate", "--weeks", "3", "--seed", "3", "--out", str(out)
    )
    assert r.returncode == 0, r.stderr
    batches = sorted((out / "raw").glob("*.parquet"))
    assert len(batches) == 3

    report = tmp_path / "good.json"
    r = servicetime("data", "validate", str(batches[1]), "--reference", str(batches[0]), "--report", str(report))
    assert r.returncode == 0, r.stdout + r.stderr
    good = json.loads(report.read_text())
    assert good["accepted"] and good["rows_in"] == good["rows_accepted"] + good["rows_quarantined"]
    assert (tmp_path / "good.md").exists()
    assert pd.read_parquet(good["quarantine_uri"])["quarantine_reason"].notna().all()

    frame = pd.read_parquet(batches[2]).drop(columns=["floor"])
    broken = tmp_path / "broken.parquet"
    frame.to_parquet(broken)
    r = servicetime("data", "validate", str(broken), "--report", str(tmp_path / "bad.json"))
    assert r.returncode == 1
    bad = json.loads((tmp_path / "bad.json").read_text())
    assert not bad["accepted"] and bad["errors"] == ["missing columns: floor"]
    assert bad["rows_quarantined"] == len(frame)


def test_unreadable_batch_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    r = servicetime("data", "validate", str(junk))
    assert r.returncode == 2 and "cannot read batch" in r.stdout
