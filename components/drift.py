"""Reference statistics and drift measures (PSI), shared by validation and the model server."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.schema import COLUMNS, DRIFT_FEATURES

N_BINS = 10
_EPS = 1e-4


@dataclass(frozen=True)
class FeatureReference:
    edges: list[float]  # inner bin edges (quantiles of the reference)
    proportions: list[float]  # share of reference rows per bin (len(edges) + 1)


@dataclass(frozen=True)
class Reference:
    features: dict[str, FeatureReference]
    null_rates: dict[str, float]
    rows: int

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "null_rates": self.null_rates,
            "features": {k: {"edges": v.edges, "proportions": v.proportions} for k, v in self.features.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Reference:
        feats = {k: FeatureReference(v["edges"], v["proportions"]) for k, v in d["features"].items()}
        return cls(feats, d["null_rates"], d["rows"])


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    values = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1)


def build_reference(frame: pd.DataFrame, features: tuple[str, ...] = DRIFT_FEATURES) -> Reference:
    feats = {}
    for name in features:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(float)
        finite = values[~np.isnan(values)]
        edges = sorted(set(np.quantile(finite, np.linspace(0, 1, N_BINS + 1)[1:-1]).round(6).tolist())) if len(finite) else []
        counts = bin_counts(values, edges)
        feats[name] = FeatureReference(edges, (counts / max(counts.sum(), 1)).round(6).tolist())
    nullable = [c.name for c in COLUMNS if c.nullable and c.name in frame]
    nulls = {c: round(float(frame[c].isna().mean()), 6) for c in nullable}
    return Reference(feats, nulls, len(frame))


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
