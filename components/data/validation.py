"""Batch validation: quarantine bad rows, reject bad batches, lose nothing.

Two levels, both driven by the declared schema in ``components.core.schema``:

* **row level** (checked by a pandera schema built from the declared columns):
  impossible values, unknown categories, geofence faults (a stop of a few
  seconds or of hours), missing labels, timestamps in the future, duplicated
  delivery ids. Such rows are quarantined with a reason and kept.
* **batch level**: a missing or mistyped column, a label in the wrong unit, a
  week whose labels are mostly null, null rates far above the reference, a
  distribution far from the reference (PSI), or too many bad rows. The whole
  batch is rejected, every row goes to quarantine with the reason.

Columns the schema does not declare are reported as a warning and dropped from
the accepted rows (the quarantine keeps the batch as it came). A file that cannot
be read at all is a rejected batch too (``unreadable_batch``): named, counted, kept.

Always: ``rows_in == rows_accepted + rows_quarantined``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from components.core.config import ValidationConfig
from components.core.schema import COLUMN_NAMES, COLUMNS, ID, LABEL, TIMESTAMP, Column
from components.data.drift import Reference, psi_by_feature

REASON = "quarantine_reason"


@dataclass
class ValidationResult:
    rows_in: int
    accepted_rows: pd.DataFrame
    quarantined_rows: pd.DataFrame
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    drift_psi: dict[str, float] = field(default_factory=dict)
    batch: str = ""

    @property
    def accepted(self) -> bool:
        return not self.errors

    def report(self) -> dict:
        reasons = (
            Counter(r for cell in self.quarantined_rows[REASON] for r in cell.split("; "))
            if len(self.quarantined_rows)
            else Counter()
        )
        return {
            "batch": self.batch,
            "rows_in": self.rows_in,
            "rows_accepted": len(self.accepted_rows),
            "rows_quarantined": len(self.quarantined_rows),
            "accepted": self.accepted,
            "errors": self.errors,
            "warnings": self.warnings,
            "quarantine_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "drift_psi": self.drift_psi,
        }


def _row_check(col: Column, cfg: ValidationConfig) -> list[pa.Check]:
    checks: list[pa.Check] = []
    if col.name == LABEL:
        # Geofence faults: a real stop is neither a few seconds nor hours long.
        checks.append(
            pa.Check.in_range(cfg.min_service_s, cfg.max_service_s, error="geofence fault: implausible service time")
        )
    elif col.min is not None and col.max is not None:
        checks.append(pa.Check.in_range(col.min, col.max, error=f"{col.name} out of range [{col.min}, {col.max}]"))
    if col.categories:
        checks.append(pa.Check.isin(list(col.categories), error=f"unknown {col.name}"))
    return checks


def pandera_schema(cfg: ValidationConfig, now: pd.Timestamp) -> pa.DataFrameSchema:
    """The row-level schema, built from the one declaration of the columns."""
    columns = {}
    for col in COLUMNS:
        checks = _row_check(col, cfg)
        if col.name == TIMESTAMP:
            checks.append(pa.Check.le(now, error="timestamp in the future"))
        # A missing label is nullable here and reported as its own reason below.
        columns[col.name] = pa.Column(nullable=col.nullable, checks=checks)
    return pa.DataFrameSchema(columns, strict=False)


def _coerce(frame: pd.DataFrame, cfg: ValidationConfig) -> tuple[pd.DataFrame, dict[int, list[str]], list[str]]:
    """Coerce declared types; return (frame, row reasons, batch errors for mistyped columns)."""
    out = frame.copy()
    reasons: dict[int, list[str]] = {}
    errors: list[str] = []
    for col in COLUMNS:
        raw = out[col.name]
        if col.kind in ("int", "float", "bool"):
            if col.kind == "bool" and raw.dtype == bool:
                continue
            values = pd.to_numeric(raw, errors="coerce")
        elif col.kind == "timestamp":
            values = pd.to_datetime(raw, errors="coerce", utc=True)
        else:
            values = raw.astype("string")
            out[col.name] = values
            continue
        bad = values.isna() & raw.notna()
        if bad.any():
            share = bad.mean()
            if share > cfg.max_uncoercible_ratio:
                errors.append(f"column {col.name} is mistyped: {share:.0%} of values are not {col.kind}")
            for idx in np.flatnonzero(bad.to_numpy()):
                reasons.setdefault(int(idx), []).append(f"{col.name}: not a {col.kind} ({raw.iloc[idx]!r})")
        out[col.name] = values.astype(float) if col.kind == "bool" else values
    return out, reasons, errors


def validate_batch(
    frame: pd.DataFrame,
    cfg: ValidationConfig,
    reference: Reference | None = None,
    now: pd.Timestamp | None = None,
    batch: str = "",
) -> ValidationResult:
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    frame = frame.reset_index(drop=True)
    rows_in = len(frame)
    errors: list[str] = []
    warnings: list[str] = []

    missing = [c.name for c in COLUMNS if c.name not in frame.columns]
    extra = [str(c) for c in frame.columns if c not in COLUMN_NAMES]
    if extra:  # a feed that grew a field: say so, but train only on what the schema declares
        warnings.append(f"unexpected column(s) {', '.join(extra)}: not in the schema, dropped from the clean data")
    if missing:
        result = _reject(frame, [f"missing columns: {', '.join(missing)}"], batch)
        result.warnings = warnings
        return result
    if rows_in == 0:
        return _reject(frame, ["empty batch"], batch)
    received, frame = frame, frame.drop(columns=extra)

    typed, row_reasons, type_errors = _coerce(frame, cfg)
    errors += type_errors

    # Row level: the declarative schema, every failure case kept with its row.
    try:
        pandera_schema(cfg, now).validate(typed, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        cases = cases[cases["index"].notna()]
        for idx, column, check in zip(cases["index"], cases["column"], cases["check"]):
            reasons = row_reasons.setdefault(int(idx), [])
            if str(check) == "not_nullable":
                if any(r.startswith(f"{column}: not a") for r in reasons):
                    continue  # already explained by the failed type coercion
                reasons.append(f"{column}: missing value")
            else:
                reasons.append(str(check))
    label_missing = typed[LABEL].isna() & frame[LABEL].isna()
    for idx in np.flatnonzero(label_missing.to_numpy()):
        row_reasons.setdefault(int(idx), []).append("missing label")
    dupes = typed[ID].duplicated(keep="first")
    for idx in np.flatnonzero(dupes.to_numpy()):
        row_reasons.setdefault(int(idx), []).append("duplicate delivery_id")

    # Batch level: unit, null labels, null-rate jumps, drift, share of bad rows.
    labels = typed[LABEL].dropna()
    if len(labels) and labels.median() < cfg.minutes_label_median_s:
        errors.append(
            f"{LABEL} looks like minutes, not seconds: median {labels.median():.1f} < {cfg.minutes_label_median_s:.0f}"
        )
    null_share = float(label_missing.mean())
    if null_share > cfg.max_label_null_ratio:
        errors.append(f"{null_share:.0%} of labels are missing (limit {cfg.max_label_null_ratio:.0%})")
    psi: dict[str, float] = {}
    if reference is not None:
        for column, ref_rate in reference.null_rates.items():
            rate = float(typed[column].isna().mean())
            if rate > ref_rate + cfg.max_null_rate_jump:
                errors.append(f"null rate of {column} jumped to {rate:.0%} (reference {ref_rate:.0%})")
        psi = psi_by_feature(reference, typed)
        for name, value in psi.items():
            if value > cfg.psi_reject:
                errors.append(f"distribution of {name} is far from the reference: PSI {value:.2f} > {cfg.psi_reject}")
            elif value > cfg.psi_warn:
                warnings.append(f"{name} drifted: PSI {value:.2f} > {cfg.psi_warn}")
        # label, categories, keys, hours (components.data.drift)
        reference.shift_checks(typed, cfg.shifts, errors, warnings)
    bad_share = len(row_reasons) / rows_in
    if bad_share > cfg.max_quarantine_ratio:
        errors.append(f"{bad_share:.0%} of rows fail row checks (limit {cfg.max_quarantine_ratio:.0%})")

    if errors:
        result = _reject(received, errors, batch, row_reasons)
        result.warnings, result.drift_psi = warnings, psi
        return result
    bad_idx = sorted(row_reasons)
    quarantined = received.iloc[bad_idx].copy()
    quarantined[REASON] = ["; ".join(row_reasons[i]) for i in bad_idx]
    accepted = typed.drop(index=bad_idx)
    return ValidationResult(rows_in, accepted.reset_index(drop=True), quarantined.reset_index(drop=True),
                            errors, warnings, psi, batch)


def _reject(
    frame: pd.DataFrame, errors: list[str], batch: str, row_reasons: dict[int, list[str]] | None = None
) -> ValidationResult:
    """A rejected batch: every row goes to quarantine, carrying the batch error and its own."""
    row_reasons = row_reasons or {}
    quarantined = frame.copy()
    head = f"batch rejected: {errors[0]}"
    quarantined[REASON] = ["; ".join([head, *row_reasons.get(i, [])]) for i in range(len(frame))]
    return ValidationResult(len(frame), frame.iloc[0:0].copy(), quarantined, list(errors), [], {}, batch)


def unreadable_batch(batch: str, error: str) -> ValidationResult:
    """A batch whose file cannot be parsed: rejected by name with no rows (its bytes stay in the dataset version)."""
    return ValidationResult(0, pd.DataFrame(columns=list(COLUMN_NAMES)), pd.DataFrame(columns=[*COLUMN_NAMES, REASON]),
                            [f"unreadable file: {error}"], [], {}, batch)


def render_markdown(reports: list[dict]) -> str:
    """A summary a person can read: one line per batch, then the reasons."""
    lines = [
        "# Validation report",
        "",
        "| batch | rows in | accepted | quarantined | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for r in reports:
        verdict = "accepted" if r["accepted"] else "**REJECTED**"
        lines.append(f"| {r['batch']} | {r['rows_in']} | {r['rows_accepted']} | {r['rows_quarantined']} | {verdict} |")
    totals = Counter()
    for r in reports:
        totals.update(r["quarantine_reasons"])
    lines += ["", "## Quarantine reasons", ""]
    lines += [f"- {reason}: {count}" for reason, count in totals.most_common(15)] or ["- none"]
    problems = [(r["batch"], e) for r in reports for e in r["errors"]]
    warns = [(r["batch"], w) for r in reports for w in r["warnings"]]
    if problems:
        lines += ["", "## Rejected batches", ""] + [f"- {b}: {e}" for b, e in problems]
    if warns:
        lines += ["", "## Warnings", ""] + [f"- {b}: {w}" for b, w in warns[:20]]
    return "\n".join(lines) + "\n"
