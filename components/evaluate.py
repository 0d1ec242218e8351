"""Evaluation that decides: the candidate against the rules and the champion, overall and per slice.

Writes a machine-readable verdict (blessed or not, with every reason) and a
Markdown report with plots. Thresholds come from ``EvalConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from components.config import EvalConfig
from components.features import floor_band
from components.kpi import arrival_delays, route_kpi
from components.schema import LABEL


class Model(Protocol):
    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...


def point_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    err = np.asarray(pred, float) - np.asarray(y, float)
    if len(err) == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "p90_abs_error": float("nan"), "bias": float("nan"), "n": 0}
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "p90_abs_error": float(np.quantile(np.abs(err), 0.9)),
        "bias": float(np.mean(err)),
        "n": int(len(err)),
    }


def slice_masks(frame: pd.DataFrame, train_areas: set[str]) -> dict[str, np.ndarray]:
    """The slices that matter to the business, as boolean masks over ``frame``."""
    masks: dict[str, np.ndarray] = {}
    for area_type in sorted(frame["area_type"].astype(str).unique()):
        masks[f"area_type={area_type}"] = (frame["area_type"].astype(str) == area_type).to_numpy()
    apartment = (frame["building_type"].astype(str) == "apartment").to_numpy()
    elevator = pd.to_numeric(frame["has_elevator"], errors="coerce").to_numpy()
    band = floor_band(frame["floor"]).to_numpy()
    for lift, lift_mask in (("elevator", elevator == 1), ("no elevator", elevator == 0)):
        for b in ("0", "1-2", "3-5", "6+"):
            masks[f"apartment, {lift}, floor {b}"] = apartment & lift_mask & (band == b)
    boxes = pd.to_numeric(frame["n_boxes"], errors="coerce").to_numpy()
    masks["boxes 1-2"] = boxes <= 2
    masks["boxes 3-4"] = (boxes >= 3) & (boxes <= 4)
    masks["boxes 5+"] = boxes >= 5
    new = frame["cust_prev_count"].to_numpy() == 0
    masks["new customer"] = new
    masks["returning customer"] = ~new
    masks["area unseen in training"] = ~frame["area_id"].astype(str).isin(train_areas).to_numpy()
    return masks


@dataclass
class Evaluation:
    metrics: dict[str, dict | None]
    slices: list[dict]
    route_kpi: dict[str, dict | None]
    importance: dict[str, float]
    verdict: dict
    delays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    errors_by_week: pd.DataFrame | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "slices": self.slices, "route_kpi": self.route_kpi,
                "importance": self.importance, "verdict": self.verdict}


IMPORTANCE_GROUPS = {
    "order size": ["n_items", "n_boxes", "weight_kg"],
    "floor": ["floor"],
    "elevator": ["has_elevator"],
    "building type": ["building_type"],
    "area": ["area_id", "area_type"],
    "time of day/week": ["delivered_at"],
    "customer history": ["cust_prev_count", "cust_prev_sum_log"],
    "driver tenure": ["driver_tenure_weeks"],
    "frozen goods": ["has_frozen"],
}


def permutation_importance(model: Model, frame: pd.DataFrame, repeats: int, rows: int, seed: int = 0) -> dict[str, float]:
    """MAE increase (seconds) when a group of inputs is shuffled: what the model relies on."""
    rng = np.random.default_rng(seed)
    sample = frame.sample(min(rows, len(frame)), random_state=seed).reset_index(drop=True)
    y = sample[LABEL].to_numpy(float)
    base = np.mean(np.abs(model.predict(sample) - y))
    out = {}
    for group, cols in IMPORTANCE_GROUPS.items():
        deltas = []
        for _ in range(repeats):
            shuffled = sample.copy()
            perm = rng.permutation(len(sample))
            for c in cols:
                shuffled[c] = sample[c].to_numpy()[perm]
            deltas.append(np.mean(np.abs(model.predict(shuffled) - y)) - base)
        out[group] = float(np.mean(deltas))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def decide(metrics: dict[str, dict | None], slices: list[dict], kpi: dict[str, dict | None], cfg: EvalConfig) -> dict:
    """The verdict, as data: every check with its outcome. Blessed only if all pass."""
    checks: list[dict] = []
    cand, base, champ = metrics["candidate"], metrics["baseline"], metrics.get("champion")
    gain = 1 - cand["mae"] / base["mae"]
    checks.append({"check": "beats business-logic baseline", "passed": gain >= cfg.min_improvement_vs_baseline,
                   "detail": f"MAE {cand['mae']:.1f} s vs {base['mae']:.1f} s: {gain:+.1%} (need >= {cfg.min_improvement_vs_baseline:.0%})"})
    if cfg.require_route_kpi_gain:
        c, b = kpi["candidate"]["delay_std_s"], kpi["baseline"]["delay_std_s"]
        checks.append({"check": "lowers spread of route arrival delay", "passed": c < b,
                       "detail": f"delay std {c:.0f} s vs baseline {b:.0f} s"})
    worst = [s for s in slices if s["rows"] >= cfg.min_slice_rows and s["vs_baseline"] > cfg.max_slice_regression]
    checks.append({"check": f"no slice more than {cfg.max_slice_regression:.0%} worse than baseline", "passed": not worst,
                   "detail": "; ".join(f"{s['slice']}: {s['vs_baseline']:+.1%}" for s in worst) or
                   f"{sum(s['rows'] >= cfg.min_slice_rows for s in slices)} slices checked"})
    if champ is None:
        checks.append({"check": "no regression against champion", "passed": True,
                       "detail": "no champion yet: first model, judged against the baseline only"})
    else:
        limit = champ["mae"] * (1 + cfg.max_regression_vs_champion)
        checks.append({"check": "no regression against champion", "passed": cand["mae"] <= limit,
                       "detail": f"MAE {cand['mae']:.1f} s vs champion {champ['mae']:.1f} s (limit {limit:.1f} s)"})
    blessed = all(c["passed"] for c in checks)
    reasons = [f"{'PASS' if c['passed'] else 'FAIL'} {c['check']}: {c['detail']}" for c in checks]
    return {"blessed": blessed, "reasons": reasons, "checks": checks, "first_model": champ is None}


def evaluate(test: pd.DataFrame, candidate: Model, baseline: Model, champion: Model | None,
             train_areas: set[str], cfg: EvalConfig) -> Evaluation:
    y = test[LABEL].to_numpy(float)
    models = {"candidate": candidate, "baseline": baseline, "champion": champion}
    preds = {k: m.predict(test) for k, m in models.items() if m is not None}
    metrics = {k: point_metrics(y, preds[k]) if k in preds else None for k in models}
    kpi = {k: route_kpi(test, preds[k], cfg.promised_window_s) if k in preds else None for k in models}
    slices = []
    for name, mask in slice_masks(test, train_areas).items():
        if not mask.any():
            continue
        row = {"slice": name, "rows": int(mask.sum())}
        for k, p in preds.items():
            row[k] = point_metrics(y[mask], p[mask])["mae"]
        row["vs_baseline"] = row["candidate"] / row["baseline"] - 1
        slices.append(row)
    importance = permutation_importance(candidate, test, cfg.importance_repeats, cfg.importance_rows)
    verdict = decide(metrics, slices, kpi, cfg)
    delays = {k: arrival_delays(test, p).to_numpy() for k, p in preds.items()}
    week = test["batch"] if "batch" in test else pd.Series("all", index=test.index)
    by_week = pd.DataFrame({k: np.abs(p - y) for k, p in preds.items()}).groupby(week.to_numpy()).mean()
    return Evaluation(metrics, slices, kpi, importance, verdict, delays, by_week)


def write_report(ev: Evaluation, out_dir: str | Path, title: str = "Evaluation") -> Path:
    """Markdown report with PNG plots; returns the Markdown path."""
    # Figure objects, not pyplot: no global backend switch (a notebook keeps its inline plots).
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [k for k in ("baseline", "champion", "candidate") if ev.metrics.get(k)]

    fig = Figure(figsize=(9, 6))
    ax = fig.subplots()
    labels = [s["slice"] for s in ev.slices]
    ypos = np.arange(len(labels))
    for i, k in enumerate(names):
        ax.barh(ypos + (i - (len(names) - 1) / 2) * 0.27, [s.get(k, np.nan) for s in ev.slices], height=0.27, label=k)
    ax.set_yticks(ypos, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("MAE (s)")
    ax.set_title("Error by slice")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "slices.png", dpi=90)

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for k in names:
        ax.hist(ev.delays[k] / 60, bins=80, range=(-60, 60), histtype="step", label=f"{k} (std {ev.route_kpi[k]['delay_std_s'] / 60:.1f} min)")
    ax.set_xlabel("arrival delay at stop (min)")
    ax.set_ylabel("stops")
    ax.set_title("Route replay: arrival delay")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "route_delay.png", dpi=90)

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    groups = list(ev.importance)
    ax.barh(groups, [ev.importance[g] for g in groups])
    ax.invert_yaxis()
    ax.set_xlabel("MAE increase when shuffled (s)")
    ax.set_title("Permutation importance")
    fig.tight_layout()
    fig.savefig(out / "importance.png", dpi=90)

    if ev.errors_by_week is not None:
        fig = Figure(figsize=(7, 3.5))
        ax = fig.subplots()
        ev.errors_by_week.plot(ax=ax, marker="o")
        ax.set_ylabel("MAE (s)")
        ax.set_title("Error by held-out week")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        fig.tight_layout()
        fig.savefig(out / "weeks.png", dpi=90)

    v = ev.verdict
    lines = [f"# {title}", "", f"**Verdict: {'BLESSED' if v['blessed'] else 'NOT BLESSED'}**", ""]
    lines += [f"- {r}" for r in v["reasons"]]
    lines += ["", "## Per stop (held-out weeks)", "", "| model | MAE s | RMSE s | P90 abs err s | bias s |", "|---|---:|---:|---:|---:|"]
    for k in names:
        m = ev.metrics[k]
        lines.append(f"| {k} | {m['mae']:.1f} | {m['rmse']:.1f} | {m['p90_abs_error']:.1f} | {m['bias']:+.1f} |")
    lines += ["", "## Route replay KPI", "", "| model | delay std s | mean abs delay s | outside window |", "|---|---:|---:|---:|"]
    for k in names:
        r = ev.route_kpi[k]
        lines.append(f"| {k} | {r['delay_std_s']:.0f} | {r['delay_mae_s']:.0f} | {r['outside_window_share']:.1%} |")
    lines += ["", "![route delay](route_delay.png)", "", "## Slices", "",
              "| slice | rows | baseline MAE | candidate MAE | vs baseline |", "|---|---:|---:|---:|---:|"]
    for s in ev.slices:
        lines.append(f"| {s['slice']} | {s['rows']} | {s['baseline']:.1f} | {s['candidate']:.1f} | {s['vs_baseline']:+.1%} |")
    lines += ["", "![slices](slices.png)", "", "## What the model relies on", ""]
    lines += [f"- {g}: +{d:.1f} s MAE when shuffled" for g, d in ev.importance.items()]
    lines += ["", "![importance](importance.png)", "", "![weeks](weeks.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def inline_images(markdown_path: str | Path) -> str:
    """The report with its PNGs embedded as data URIs: one file the KFP UI can show."""
    import base64
    import re

    path = Path(markdown_path)

    def embed(match: re.Match) -> str:
        png = path.parent / match.group(2)
        if not png.exists():
            return ""
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"

    return re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", embed, path.read_text())
