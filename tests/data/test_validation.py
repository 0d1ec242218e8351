"""Every corruption of a batch is rejected or quarantined with a reason; no row disappears."""

import numpy as np
import pandas as pd
import pytest

from components.core.config import ValidationConfig
from components.data.drift import build_reference
from components.data.validation import REASON, validate_batch

CFG = ValidationConfig()
NOW = pd.Timestamp("2026-01-01", tz="UTC")


@pytest.fixture
def batch(tiny_weeks):
    return tiny_weeks[3][1].copy()


@pytest.fixture
def reference(tiny_weeks):
    return build_reference(pd.concat([w for _, w in tiny_weeks[:3]]))


def check_accounting(result, frame):
    report = result.report()
    assert report["rows_in"] == len(frame) == report["rows_accepted"] + report["rows_quarantined"]
    assert (result.quarantined_rows[REASON].str.len() > 0).all()
    kept = set(result.accepted_rows["delivery_id"].astype(str)) | set(
        result.quarantined_rows["delivery_id"].astype(str)
    )
    assert kept == set(frame["delivery_id"].astype(str))
    return report


def reasons(result) -> str:
    return " | ".join(result.quarantined_rows[REASON]) + " | " + " | ".join(result.errors)


def test_clean_batch_is_accepted_and_faults_are_quarantined(batch, reference):
    result = validate_batch(batch, CFG, reference, now=NOW)
    report = check_accounting(result, batch)
    assert result.accepted
    assert 0 < report["rows_quarantined"] < 0.1 * report["rows_in"]
    assert "geofence fault" in reasons(result)
    assert "duplicate delivery_id" in reasons(result)
    assert result.accepted_rows["service_time_s"].between(CFG.min_service_s, CFG.max_service_s).all()


def test_dropped_column_rejects_batch(batch, reference):
    bad = batch.drop(columns=["n_boxes"])
    result = validate_batch(bad, CFG, reference, now=NOW)
    check_accounting(result, bad)
    assert not result.accepted and "missing columns: n_boxes" in result.errors[0]


def test_string_in_numeric_column_is_quarantined(batch, reference):
    bad = batch.astype({"weight_kg": object})
    bad.loc[bad.index[:3], "weight_kg"] = "heavy"
    result = validate_batch(bad, CFG, reference, now=NOW)
    check_accounting(result, bad)
    assert result.accepted
    flagged = result.quarantined_rows[result.quarantined_rows[REASON].str.contains("weight_kg: not a float")]
    assert len(flagged) == 3


def test_mostly_strings_means_mistyped_column(batch, reference):
    bad = batch.assign(n_items=["many"] * len(batch))
    result = validate_batch(bad, CFG, reference, now=NOW)
    check_accounting(result, bad)
    assert not result.accepted and any("n_items is mistyped" in e for e in result.errors)


def test_negative_weights_are_quarantined(batch, reference):
    bad = batch.copy()
    bad.loc[bad.index[:5], "weight_kg"] = -2.0
    result = validate_batch(bad, CFG, reference, now=NOW)
    check_accounting(result, bad)
    assert result.quarantined_rows[REASON].str.contains("weight_kg out of range").sum() == 5


def test_duplicated_ids_are_quarantined(batch, reference):
    bad = pd.concat([batch, batch.iloc[:10]], ignore_index=True)
    result = validate_batch(bad, CFG, reference, now=NOW)
    check_accounting(result, bad)
    assert result.quarantined_rows[REASON].str.contains("duplicate delivery_id").sum() >= 10


def test_minutes_instead_of_seconds_rejects_batch(batch, reference):
    bad = batch.assign(service_time_s=batch["service_time_s"] / 60)
    result = validate_batch(bad, CFG, reference, now=NOW)
    check_accounting(result, bad)
    assert not result.accepted and "looks like minutes" in result.errors[0]


def test_mostly_null_labels_rejects_batch(batch, reference):
    bad = batch.copy()
    bad.loc[bad.sample(frac=0.7, random_state=0).index, "service_time_s"] = np.nan
    result = validate_batch(bad, CFG, reference, now=NOW)
    check_accounting(result, bad)
    assert not result.accepted and any("labels are missing" in e for e in result.errors)


def test_future_timestamps_are_quarantined(batch, reference):
    bad = batch.copy()
    bad.loc[bad.index[:4], "delivered_at"] = NOW + pd.Timedelta(days=30)
    result = validate_batch(bad, CFG, reference, now=NOW)
    check_accounting(result, bad)
    assert result.quarantined_rows[REASON].str.contains("timestamp in the future").sum() == 4


def test_unknown_building_type_is_quarantined(batch, reference):
    bad = batch.copy()
    bad.loc[bad.index[:2], "building_type"] = "castle"
    result = validate_batch(bad, CFG, reference, now=NOW)
    check_accounting(result, bad)
    assert result.quarantined_rows[REASON].str.contains("unknown building_type").sum() == 2


def test_null_rate_jump_and_distribution_shift_reject(batch, reference):
    nulls = batch.assign(floor=np.nan)
    assert any("null rate of floor" in e for e in validate_batch(nulls, CFG, reference, now=NOW).errors)
    shifted = batch.assign(n_items=batch["n_items"] * 4, weight_kg=(batch["weight_kg"] * 4).clip(upper=399))
    result = validate_batch(shifted, CFG, reference, now=NOW)
    check_accounting(result, shifted)
    assert any("far from the reference" in e for e in result.errors)
