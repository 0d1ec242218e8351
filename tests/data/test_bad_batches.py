"""Bad files are batches, not crashes: an extra column is a warning and is dropped; a truncated
week is rejected by name while the others go on; a failed write leaves no temporary file."""

from __future__ import annotations

import errno
import json
import os

import pandas as pd
import pytest

from components.core.config import ValidationConfig
from components.core.storage import Storage, StorageError, to_parquet_bytes, write_atomic
from components.data.datasets import DatasetStore
from components.data.validation import validate_batch
from components.steps.ingest import ingest
from components.steps.validate import ValidationFailed, validate_dataset
from tests.conftest import tiny_config

NOW = pd.Timestamp("2026-01-01", tz="UTC")


def test_extra_column_is_a_warning_and_is_dropped_from_clean_rows(tiny_weeks):
    frame = tiny_weeks[3][1].copy().assign(driver_phone="+47 000")
    result = validate_batch(frame, ValidationConfig(), now=NOW, batch="w3")
    assert result.accepted
    assert any("driver_phone" in w for w in result.warnings), result.warnings
    assert "driver_phone" in result.report()["warnings"][0]
    assert "driver_phone" not in result.accepted_rows.columns
    assert len(result.accepted_rows) + len(result.quarantined_rows) == len(frame)


def _landing(tmp_path, tiny_weeks, weeks: int = 8) -> tuple[str, list[str]]:
    root = str(tmp_path / "data")
    store = DatasetStore(root)
    names = []
    for name, frame in tiny_weeks[:weeks]:
        store.storage.write_bytes(store.raw_uri(name), to_parquet_bytes(frame))
        names.append(name)
    return root, names


def test_truncated_week_is_rejected_by_name_and_the_other_weeks_go_on(tmp_path, tiny_weeks):
    root, names = _landing(tmp_path, tiny_weeks)
    broken = names[5]
    raw = DatasetStore(root).raw_uri(broken)
    data = Storage().read_bytes(raw)
    Storage().write_bytes(raw, data[: len(data) // 2])  # a copy cut off half-way: no Parquet footer
    cfg = tiny_config(tmp_path / "ws")

    version = ingest(root, tmp_path / "ingest").data_version  # ingest keeps the file, does not crash
    manifest = DatasetStore(root).manifest(version)
    assert broken in manifest.unreadable

    summary = validate_dataset(cfg, root, version, tmp_path / "validate", fail_on_rejected=False)
    assert list(summary.rejected_batches) == [broken]
    assert f"{broken}.parquet" in summary.rejected_batches[broken][0]
    assert summary.rows_accepted > 0 and summary.clean_version
    clean = pd.read_parquet(tmp_path / "validate" / "clean.parquet")
    assert set(clean["batch"]) == set(names) - {broken}
    kept = Storage().list(f"{root}/quarantine/{version}")
    assert any(k.endswith(f"{broken}.unreadable.parquet") for k in kept)

    with pytest.raises(ValidationFailed, match=broken):
        validate_dataset(cfg, root, version, tmp_path / "validate2", fail_on_rejected=True)


def test_failed_write_leaves_neither_half_file_nor_tmp(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    Storage().write_json(str(target), {"run": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="No space left"):
        Storage().write_json(str(target), {"run": 2})
    assert json.loads(target.read_text()) == {"run": 1}  # the old summary is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_secret_file_is_never_world_readable(tmp_path):
    path = tmp_path / "secret"
    os.umask(0o022)
    write_atomic(path, b"key", mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600
