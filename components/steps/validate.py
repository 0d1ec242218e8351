"""Validate: every batch of a dataset version; accepted rows form the clean version, the rest is kept in quarantine."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from components.core.config import Config
from components.core.storage import ParquetAppender, StorageError, join, to_parquet_bytes
from components.data.datasets import DatasetStore
from components.data.drift import REFERENCE_FILE, Reference, build_reference
from components.data.validation import (
    ValidationResult,
    render_markdown,
    unreadable_batch,
    validate_batch,
)
from components.learn import history_store
from components.steps import Rejected, record
from components.steps.outcomes import Validated

log = logging.getLogger(__name__)
CLEAN_FILE = "clean.parquet"  # every accepted batch's rows: what featurize reads
REFERENCE_WEEKS = 4


class ValidationFailed(Rejected):
    """A batch was rejected; the message lists every reason. Nothing was lost: see the quarantine."""


def _check(store: DatasetStore, version: str, batch: str, cfg: Config, reference: Reference | None) -> ValidationResult:
    """One batch; a file that cannot be read is a rejected batch named in the report, not a crash of the run."""
    try:
        frame = store.read_batch(version, batch)
    except StorageError as exc:
        return unreadable_batch(batch, str(exc))
    return validate_batch(frame, cfg.validation, reference, batch=batch)


def _reference(store: DatasetStore, version: str, batches: list[str], cfg: Config) -> Reference:
    """Without a published reference, the first weeks' accepted rows serve as one."""
    head = [_check(store, version, b, cfg, None) for b in batches[:REFERENCE_WEEKS]]
    rows = [r.accepted_rows for r in head if r.accepted]
    if not rows:
        reasons = "; ".join(f"{b}: {', '.join(r.errors) or 'rejected'}" for b, r in zip(batches, head))
        raise ValidationFailed(f"no usable reference: the first {len(head)} batch(es) were all rejected ({reasons})")
    return build_reference(pd.concat(rows))


def validate_dataset(
    cfg: Config,
    data_root: str,
    version: str,
    out_dir: str | Path,
    report_path: str | Path | None = None,
    fail_on_rejected: bool = True,
    reference: Reference | None = None,
    run_uri: str | None = None,
) -> Validated:
    store = DatasetStore(data_root)
    manifest = store.manifest(version)
    batches = list(manifest.batches)
    reference = reference or _reference(store, version, batches, cfg)
    reports: list[dict] = []
    accepted: dict[str, bytes] = {}  # the clean version's batches (compressed: a small share of the frames)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_rows = ParquetAppender(out / CLEAN_FILE)  # one row group per week: featurize reads it so
    for i, batch in enumerate(batches):  # one week in memory at a time
        res = _check(store, version, batch, cfg, reference)
        reports.append(res.report())
        if res.errors and res.errors[0].startswith("unreadable file"):  # keep the file itself in quarantine
            store.storage.write_bytes(join(data_root, "quarantine", version, f"{batch}.unreadable.parquet"),
                                      store.storage.read_bytes(join(store.version_uri(version), f"{batch}.parquet")))
        if len(res.quarantined_rows):
            store.storage.write_bytes(join(data_root, "quarantine", version, f"{batch}.parquet"),
                                      to_parquet_bytes(res.quarantined_rows))
        if res.accepted:
            accepted[batch] = to_parquet_bytes(res.accepted_rows)
            clean_rows.write(res.accepted_rows.assign(batch=batch))
        else:
            log.warning("batch %s REJECTED: %s", batch, "; ".join(res.errors))
        if (i + 1) % 13 == 0 or i + 1 == len(batches):
            log.info("validated %d/%d batches", i + 1, len(batches))
    clean_rows.close()

    totals = {"rows_in": sum(r["rows_in"] for r in reports), "rows_accepted": sum(r["rows_accepted"] for r in reports),
              "rows_quarantined": sum(r["rows_quarantined"] for r in reports)}
    assert totals["rows_in"] == totals["rows_accepted"] + totals["rows_quarantined"], "validation lost rows"
    rejected = [r for r in reports if not r["accepted"]]
    clean = store.write_version(accepted, kind="clean", parent=version) if accepted else None
    del accepted

    if clean is not None and set(batches) >= set(store.raw_batches()):
        # Every landing batch validated: the servers' customer history is rebuilt from all clean rows
        # (the columns it needs, read back from the clean file).
        rows = pd.read_parquet(out / CLEAN_FILE, columns=list(history_store.INPUTS))
        snap = history_store.refresh(data_root, rows, built_from=clean.version, storage=store.storage)
        log.info("customer history %s: %d customers, %d stops", snap.version, snap.customers, snap.stops)
        del rows
    summary = Validated(**totals, accepted=not rejected, data_version=version,
                        clean_version=clean.version if clean else None,
                        rejected_batches={r["batch"]: r["errors"] for r in rejected},
                        quarantine_uri=join(data_root, "quarantine", version), batches=reports)
    (out / "validation.json").write_text(json.dumps(asdict(summary), indent=2, default=str))
    (out / REFERENCE_FILE).write_text(json.dumps(reference.to_dict()))
    markdown = render_markdown(reports)
    (out / "report.md").write_text(markdown)
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(markdown)
    record(run_uri, summary)
    if rejected and fail_on_rejected:
        reasons = "; ".join(f"{b}: {', '.join(e)}" for b, e in summary.rejected_batches.items())
        raise ValidationFailed(f"{len(rejected)} batch(es) rejected: {reasons}. "
                               f"Quarantined rows kept under {summary.quarantine_uri}")
    return summary
