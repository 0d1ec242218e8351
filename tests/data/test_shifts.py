"""Silent upstream shifts are caught at validation; clean weeks stay clean; old reference files still load."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from components.core.config import ValidationConfig
from components.core.schema import LABEL, TIMESTAMP
from components.data.drift import Reference, build_reference, shift_checks
from components.data.validation import validate_batch

TRAIN_WEEKS = 8  # the tiny config's training weeks (12 - 2 validation - 2 test)


@pytest.fixture(scope="module")
def reference(tiny_weeks) -> Reference:
    return build_reference(pd.concat([f for _, f in tiny_weeks[:TRAIN_WEEKS]], ignore_index=True))


def _resalt(frame: pd.DataFrame, column: str = "customer_key") -> pd.DataFrame:
    return frame.assign(**{column: frame[column].astype(str).map(lambda k: "salt2-" + k[::-1])})


SHIFTS = {
    "labels x1.3 (geofence radius)": (lambda f: f.assign(**{LABEL: f[LABEL] * 1.3}), "error", LABEL),
    "labels +120 s": (lambda f: f.assign(**{LABEL: f[LABEL] + 120}), "error", LABEL),
    "area_type collapsed to urban": (lambda f: f.assign(area_type="urban"), "error", "area_type shares"),
    "customer keys re-salted": (_resalt, "error", "known customer_key"),
    "driver keys re-salted": (lambda f: _resalt(f, "driver_key"), "error", "known driver_key"),
    "clock shifted by 5 hours": (
        lambda f: f.assign(**{TIMESTAMP: pd.to_datetime(f[TIMESTAMP]) + pd.Timedelta(hours=5)}),
        "error",
        "hour-of-day",
    ),
}


@pytest.mark.parametrize("name", list(SHIFTS))
def test_each_shift_is_caught_with_its_reason(name, tiny_weeks, reference):
    change, level, reason = SHIFTS[name]
    frame = change(tiny_weeks[TRAIN_WEEKS][1].copy())
    errors: list[str] = []
    warnings: list[str] = []
    shift_checks(reference, frame, ValidationConfig().shifts, errors, warnings)
    found = errors if level == "error" else warnings
    assert any(reason in line for line in found), (errors, warnings)
    # Through validation itself (the one line in validate_batch): the batch is rejected with that reason.
    result = validate_batch(frame, ValidationConfig(), reference, batch=name)
    assert not result.accepted and any(reason in e for e in result.errors), result.errors


def test_clean_weeks_raise_no_shift(tiny_weeks, reference):
    for name, frame in tiny_weeks[TRAIN_WEEKS:]:
        errors: list[str] = []
        warnings: list[str] = []
        figures = shift_checks(reference, frame, ValidationConfig().shifts, errors, warnings)
        assert errors == [] and warnings == [], (name, figures)
        result = validate_batch(frame, ValidationConfig(), reference, batch=name)
        assert result.accepted and result.warnings == [], (name, result.errors, result.warnings)


def test_new_areas_warn_without_rejecting(tiny_weeks, reference):
    frame = tiny_weeks[TRAIN_WEEKS][1].copy()
    moved = frame.index[: len(frame) // 5]
    frame.loc[moved, "area_id"] = "A-opened-this-week"
    result = validate_batch(frame, ValidationConfig(), reference)
    assert result.accepted and any("areas the reference never saw" in w for w in result.warnings), result.warnings


def test_reference_round_trip_and_old_files(reference):
    again = Reference.from_dict(json.loads(json.dumps(reference.to_dict())))
    assert again == reference
    old = {k: v for k, v in reference.to_dict().items() if k in ("rows", "null_rates", "features")}
    legacy = Reference.from_dict(old)  # a reference.json written before the shift fields
    assert legacy.label_quantiles == {} and legacy.keys == {}
    frame = pd.DataFrame({LABEL: [999.0] * 200})
    errors: list[str] = []
    assert shift_checks(legacy, frame, ValidationConfig().shifts, errors, []) == {} and errors == []


def test_key_sample_holds_digests_not_keys(tiny_weeks, reference):
    keys = set(tiny_weeks[0][1]["customer_key"].astype(str))
    stored = reference.keys["customer_key"].digests
    assert stored and not stored & keys
    assert 0.5 < reference.keys["customer_key"].known_share <= 1.0


def test_key_sample_equals_hashing_every_row(tiny_weeks):
    """The sample hashes each distinct key once; the same sample and known share as hashing row by row."""
    import hashlib

    import numpy as np

    from components.data.drift import MAX_KEY_SAMPLE, key_sample

    frame = pd.concat([f for _, f in tiny_weeks], ignore_index=True).sample(frac=1.0, random_state=5)
    # More distinct customers than the sample keeps, so that it samples (modulus > 1).
    frame["customer_key"] = frame["customer_key"].astype(str) + "-" + (frame[TIMESTAMP].dt.day % 31).astype(str)
    for column in ("customer_key", "driver_key"):
        sample = key_sample(frame, column)
        keys = frame[column].astype(str).to_numpy()
        digests = np.array([hashlib.sha256(k.encode()).hexdigest()[:12] for k in keys], dtype=object)
        modulus = 1
        while frame[column].nunique() / modulus > MAX_KEY_SAMPLE:
            modulus *= 2
        sampled = np.array([int(d[:6], 16) % modulus == 0 for d in digests])
        order = np.argsort(pd.to_datetime(frame[TIMESTAMP], utc=True).astype("int64").to_numpy(), kind="stable")
        cut = int(len(order) * 0.9)
        seen = set(digests[order[:cut]][sampled[order[:cut]]])
        later = digests[order[cut:]][sampled[order[cut:]]]
        assert sample.modulus == modulus and sample.digests == frozenset(digests[sampled])
        assert modulus > 1 or column == "driver_key"
        assert sample.known_share == round(float(np.mean([d in seen for d in later])), 4)
