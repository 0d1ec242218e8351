"""Reference statistics and drift measures (PSI), shared by validation and the model server.

Beyond the numeric inputs' PSI, the reference describes what a silent upstream
change would move while every row still looks valid (``shift_checks``):

* the label's quantiles (a geofence radius change scales it, a clock or
  event change shifts it);
* the shares of ``area_type``, ``building_type`` and ``area_id`` (a category
  collapsed into one value) and the share of stops in areas never seen;
* the share of rows whose customer (driver) key the reference knew, from a
  hashed sample of the keys (a re-salted key makes every customer "new");
* the hour-of-day profile (a clock shift).

Files written before these fields existed still load (``from_dict``); the new
checks then stay silent for lack of a reference.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from components.core.schema import COLUMNS, DRIFT_FEATURES, LABEL, TIMESTAMP

REFERENCE_FILE = "reference.json"  # a saved Reference, beside the data it describes
N_BINS = 10
_EPS = 1e-4


@dataclass(frozen=True)
class FeatureReference:
    edges: list[float]  # inner bin edges (quantiles of the reference)
    proportions: list[float]  # share of reference rows per bin (len(edges) + 1)


CATEGORY_COLUMNS = ("area_type", "building_type", "area_id")
# Shares judged by PSI. Not area_id: a route serves one primary area, so a week's area shares
# swing with the few routes of the week (PSI about 1 in a normal tiny week); areas are judged
# by the share of stops in areas never seen instead.
SHARE_PSI_COLUMNS = ("area_type", "building_type")
KEY_COLUMNS = ("customer_key", "driver_key")
LABEL_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
MAX_KEY_SAMPLE = 4000  # hashed keys kept per column: enough for a share, small in the JSON
UNSEEN = "<unseen>"


@dataclass(frozen=True)
class KeySample:
    """A hashed sample of the keys the reference saw: digests of keys whose digest falls in 1/``modulus``."""

    modulus: int
    digests: frozenset[str]
    known_share: float  # the share a normal later week shows (measured inside the reference itself)


@dataclass(frozen=True)
class Reference:
    features: dict[str, FeatureReference]
    null_rates: dict[str, float]
    rows: int
    label_quantiles: dict[str, float] = field(default_factory=dict)  # "0.5" -> seconds
    categories: dict[str, dict[str, float]] = field(default_factory=dict)  # column -> value -> share
    keys: dict[str, KeySample] = field(default_factory=dict)
    hour_profile: list[float] = field(default_factory=list)  # 24 shares (UTC hours)

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "null_rates": self.null_rates,
            "features": {k: {"edges": v.edges, "proportions": v.proportions} for k, v in self.features.items()},
            "label_quantiles": self.label_quantiles,
            "categories": self.categories,
            "keys": {k: {"modulus": v.modulus, "digests": sorted(v.digests), "known_share": v.known_share}
                     for k, v in self.keys.items()},
            "hour_profile": self.hour_profile,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Reference:
        feats = {k: FeatureReference(v["edges"], v["proportions"]) for k, v in d["features"].items()}
        keys = {k: KeySample(int(v["modulus"]), frozenset(v["digests"]), float(v["known_share"]))
                for k, v in d.get("keys", {}).items()}
        return cls(feats, d["null_rates"], d["rows"], dict(d.get("label_quantiles", {})),
                   {k: dict(v) for k, v in d.get("categories", {}).items()}, keys, list(d.get("hour_profile", [])))

    def shift_checks(self, frame: pd.DataFrame, cfg, errors: list[str], warnings: list[str]) -> dict[str, float]:
        """Silent shifts of ``frame`` against this reference, appended to ``errors`` / ``warnings``
        (a method, so that validation calls it in one line without another import)."""
        return shift_checks(self, frame, cfg, errors, warnings)


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    values = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1)


def _digests(values) -> np.ndarray:
    return np.array([hashlib.sha256(str(v).encode()).hexdigest()[:12] for v in values], dtype=object)


def _in_sample(digests: np.ndarray, modulus: int) -> np.ndarray:
    return np.array([int(d[:6], 16) % modulus == 0 for d in digests], dtype=bool)


def key_sample(frame: pd.DataFrame, column: str) -> KeySample:
    """The hashed sample of one key column, and the known share a later week shows: the last
    tenth of the rows (in time) against the keys of the rest. Each distinct key is hashed once;
    rows carry its code."""
    codes, unique = pd.factorize(frame[column].astype(str).to_numpy(), use_na_sentinel=False)
    modulus = 1
    while len(unique) / modulus > MAX_KEY_SAMPLE:
        modulus *= 2
    digests = _digests(unique)
    sampled_key = _in_sample(digests, modulus)
    # As datetime64, not the objects a tz-aware column's to_numpy() gives: sorting those took seconds.
    order = (np.argsort(pd.to_datetime(frame[TIMESTAMP], utc=True).to_numpy("datetime64[ns]"), kind="stable")
             if TIMESTAMP in frame else np.arange(len(frame)))
    cut = int(len(order) * 0.9)
    earlier, later = codes[order[:cut]], codes[order[cut:]]
    seen = np.zeros(len(unique), dtype=bool)
    seen[earlier[sampled_key[earlier]]] = True
    later_sampled = later[sampled_key[later]]
    known = float(np.mean(seen[later_sampled])) if len(later_sampled) else 1.0
    return KeySample(modulus, frozenset(digests[sampled_key]), round(known, 4))


def known_share(sample: KeySample, values) -> tuple[float, int]:
    """(share of the sampled rows whose key the reference knew, sampled rows)."""
    unique = pd.unique(np.asarray(values, dtype=str))
    digest_of = dict(zip(unique, _digests(unique), strict=True))
    digests = np.array([digest_of[str(v)] for v in values], dtype=object)
    sampled = digests[_in_sample(digests, sample.modulus)] if len(digests) else digests
    if not len(sampled):
        return 1.0, 0
    return float(np.mean([d in sample.digests for d in sampled])), len(sampled)


def hours_utc(values) -> np.ndarray:
    """UTC hours as floats (NaN where the timestamp is missing or unreadable)."""
    return pd.to_datetime(pd.Series(values), utc=True, errors="coerce").dt.hour.to_numpy(float)


def hour_profile(values) -> list[float]:
    hours = hours_utc(values)
    hours = hours[~np.isnan(hours)].astype(int)
    counts = np.bincount(hours, minlength=24)[:24]
    return (counts / max(counts.sum(), 1)).round(6).tolist()


def category_shares(values) -> dict[str, float]:
    shares = pd.Series(values).astype(str).value_counts(normalize=True)
    return {str(k): round(float(v), 6) for k, v in shares.sort_index().items()}


def share_psi(expected: dict[str, float], values) -> float:
    """PSI of categorical ``values`` against reference shares; values never seen form one more bin."""
    actual = pd.Series(values).astype(str).value_counts(normalize=True).to_dict()
    bins = [*expected, UNSEEN]
    unseen = sum(v for k, v in actual.items() if k not in expected)
    a = np.clip(np.array([actual.get(k, 0.0) for k in expected] + [unseen]), _EPS, None)
    e = np.clip(np.array([expected.get(k, 0.0) for k in bins[:-1]] + [0.0]), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def profile_psi(expected: list[float], actual: list[float]) -> float:
    a, e = np.clip(np.asarray(actual), _EPS, None), np.clip(np.asarray(expected), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def label_quantile_shift(expected: dict[str, float], labels) -> dict[str, float]:
    """Relative change of each label quantile (batch / reference - 1)."""
    y = pd.to_numeric(pd.Series(labels), errors="coerce").dropna().to_numpy(float)
    if not len(y) or not expected:
        return {}
    return {q: round(float(np.quantile(y, float(q)) / ref - 1), 4) for q, ref in expected.items() if ref > 0}


def reference_inputs(features: tuple[str, ...] = DRIFT_FEATURES) -> list[str]:
    """The columns ``build_reference`` reads: a frame of these alone gives the same reference."""
    names = [*features, *(c.name for c in COLUMNS if c.nullable), LABEL, *CATEGORY_COLUMNS, *KEY_COLUMNS, TIMESTAMP]
    return list(dict.fromkeys(names))


def build_reference(frame: pd.DataFrame, features: tuple[str, ...] = DRIFT_FEATURES) -> Reference:
    feats = {}
    for name in features:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(float)
        finite = values[~np.isnan(values)]
        edges = (
            sorted(set(np.quantile(finite, np.linspace(0, 1, N_BINS + 1)[1:-1]).round(6).tolist()))
            if len(finite)
            else []
        )
        counts = bin_counts(values, edges)
        feats[name] = FeatureReference(edges, (counts / max(counts.sum(), 1)).round(6).tolist())
    nullable = [c.name for c in COLUMNS if c.nullable and c.name in frame]
    nulls = {c: round(float(frame[c].isna().mean()), 6) for c in nullable}
    labels = pd.to_numeric(frame[LABEL], errors="coerce").dropna() if LABEL in frame else pd.Series(dtype=float)
    quantiles = {str(q): round(float(labels.quantile(q)), 3) for q in LABEL_QUANTILES} if len(labels) else {}
    categories = {c: category_shares(frame[c]) for c in CATEGORY_COLUMNS if c in frame}
    keys = {c: key_sample(frame, c) for c in KEY_COLUMNS if c in frame and len(frame)}
    hours = hour_profile(frame[TIMESTAMP]) if TIMESTAMP in frame else []
    return Reference(feats, nulls, len(frame), quantiles, categories, keys, hours)


def _judge(value: float, warn: float, reject: float, message: str, errors: list[str], warnings: list[str]) -> None:
    if value > reject:
        errors.append(f"{message} (limit {reject})")
    elif value > warn:
        warnings.append(f"{message} (warning above {warn})")


def shift_checks(reference: Reference, frame: pd.DataFrame, cfg, errors: list[str],
                 warnings: list[str]) -> dict[str, float]:
    """Silent upstream shifts: label distribution, categories, unseen areas, known keys, hours.

    ``cfg`` is a ``components.core.config.ShiftConfig``; each finding is one line in ``errors``
    (the batch is rejected) or ``warnings``; returns the measured figures.
    """
    figures: dict[str, float] = {}
    if len(frame) < cfg.min_rows:
        return figures
    if reference.label_quantiles and LABEL in frame:
        shift = label_quantile_shift(reference.label_quantiles, frame[LABEL])
        if shift:
            # The mean over q10..q90: a rescaled label moves every quantile by the factor, a
            # shifted one the low quantiles most; a normal week moves them a little, not all alike.
            moved = float(np.mean(list(shift.values())))
            figures["label_quantile_shift"] = round(moved, 4)
            detail = ", ".join(f"q{float(k) * 100:.0f} {v:+.0%}" for k, v in shift.items())
            _judge(abs(moved), cfg.label_quantile_warn, cfg.label_quantile_reject,
                   f"{LABEL} distribution moved against the reference by {moved:+.0%} on average ({detail}): "
                   "a rescaled or shifted label?", errors, warnings)
    for column, shares in reference.categories.items():
        if column not in frame or column not in SHARE_PSI_COLUMNS:
            continue
        value = share_psi(shares, frame[column])
        figures[f"psi_{column}"] = round(value, 4)
        top = pd.Series(frame[column]).astype(str).value_counts(normalize=True)
        _judge(value, cfg.category_psi_warn, cfg.category_psi_reject,
               f"{column} shares far from the reference: PSI {value:.2f} (most common {top.index[0]!r} "
               f"{top.iloc[0]:.0%}, reference {shares.get(str(top.index[0]), 0.0):.0%})", errors, warnings)
    if "area_id" in reference.categories and "area_id" in frame:
        unseen = float((~frame["area_id"].astype(str).isin(reference.categories["area_id"])).mean())
        figures["unseen_area_share"] = round(unseen, 4)
        if unseen > cfg.unseen_area_warn:
            warnings.append(f"{unseen:.0%} of stops are in areas the reference never saw "
                            f"(warning above {cfg.unseen_area_warn:.0%}): new areas, retrain soon")
    for column, sample in reference.keys.items():
        if column not in frame or sample.known_share <= 0:
            continue
        share, n = known_share(sample, frame[column])
        figures[f"known_{column}_share"] = round(share, 4)
        if n < 20:  # too few sampled rows to judge
            continue
        ratio = share / sample.known_share
        message = (f"share of known {column} values fell to {share:.0%} (reference week: {sample.known_share:.0%}): "
                   "re-salted or re-keyed ids?")
        if ratio < cfg.known_key_drop_reject:
            errors.append(f"{message} (limit {cfg.known_key_drop_reject:.0%} of the reference's)")
        elif ratio < cfg.known_key_drop_warn:
            warnings.append(f"{message} (warning below {cfg.known_key_drop_warn:.0%} of the reference's)")
    if len(reference.hour_profile) == 24 and TIMESTAMP in frame:
        value = profile_psi(reference.hour_profile, hour_profile(frame[TIMESTAMP]))
        figures["psi_hour_of_day"] = round(value, 4)
        _judge(value, cfg.hour_psi_warn, cfg.hour_psi_reject,
               f"hour-of-day profile far from the reference: PSI {value:.2f} (a clock or time-zone shift?)",
               errors, warnings)
    return figures


def psi(reference: FeatureReference, values: np.ndarray) -> float:
    """Population stability index of ``values`` against a reference binning."""
    counts = bin_counts(np.asarray(values, dtype=float), reference.edges)
    if counts.sum() == 0:
        return 0.0
    actual = np.clip(counts / counts.sum(), _EPS, None)
    expected = np.clip(np.asarray(reference.proportions), _EPS, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_by_feature(reference: Reference, frame: pd.DataFrame) -> dict[str, float]:
    return {
        name: round(psi(ref, pd.to_numeric(frame[name], errors="coerce").to_numpy(float)), 4)
        for name, ref in reference.features.items()
        if name in frame
    }
