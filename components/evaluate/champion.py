"""The champion check: is the candidate worse than the model in production, beyond noise?

Two trainings of the same code on the same data differ by a fraction of a
percent of MAE, and a few bad routes can move the test MAE as much. A paired
bootstrap over routes (the unit that shares traffic, weather and driver)
resamples the test routes, scores both models on the same resample, and gives
a confidence interval of the relative MAE regression. The candidate passes if
even the interval's upper bound stays within the tolerance (non-inferiority).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def paired_bootstrap(route_id, abs_err_candidate: np.ndarray, abs_err_champion: np.ndarray, samples: int,
                     confidence: float, seed: int = 0) -> dict[str, float]:
    """Relative MAE regression (candidate / champion - 1): the point estimate and its bootstrap bounds."""
    codes, uniques = pd.factorize(pd.Series(route_id).astype(str))
    n_routes = len(uniques)
    stops = np.bincount(codes, minlength=n_routes).astype(float)
    cand = np.bincount(codes, weights=np.asarray(abs_err_candidate, float), minlength=n_routes)
    champ = np.bincount(codes, weights=np.asarray(abs_err_champion, float), minlength=n_routes)
    rng = np.random.default_rng(seed)
    # How often each route is drawn in each resample (routes drawn with replacement).
    counts = rng.multinomial(n_routes, np.full(n_routes, 1.0 / n_routes), size=samples).astype(float)
    rel = (counts @ cand) / (counts @ champ) - 1.0
    return {"mae_regression": float(cand.sum() / champ.sum() - 1.0),
            "lower": float(np.quantile(rel, 1 - confidence)), "upper": float(np.quantile(rel, confidence)),
            "confidence": float(confidence), "samples": int(samples), "routes": int(n_routes),
            "stops": int(stops.sum())}
