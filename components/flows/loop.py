"""The dynamic-data loop: weeks keep arriving, the model keeps up (``servicetime simulate``).

Each new week is generated, validated against the champion's training
reference and appended. The champion is scored on the week it has just seen
(the error it would have made); the model is retrained on a schedule, when the
inputs drift, or when the champion's error grows; the candidate is promoted
only when the evaluation blesses it. The same library steps the pipeline runs
do the work here, so the loop and the pipeline cannot disagree.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.baseline import BusinessLogicModel
from components.core.config import Config
from components.core.schema import LABEL
from components.core.storage import to_parquet_bytes
from components.data.datasets import DatasetStore
from components.data.drift import psi_by_feature
from components.data.simulator import batch_name, build_population, generate_week
from components.data.validation import validate_batch
from components.learn import tracking
from components.learn.features import add_point_in_time_history
from components.steps.evaluate import evaluate_step, load_champion
from components.steps.featurize import featurize
from components.steps.ingest import ingest
from components.steps.register import promote_step
from components.steps.train import train_step
from components.steps.validate import CLEAN_FILE, validate_dataset

log = logging.getLogger(__name__)


@dataclass
class WeekRecord:
    week: int
    batch: str
    rows_in: int
    accepted: bool
    rows_quarantined: int
    baseline_mae: float | None
    champion_mae: float | None
    champion_version: str | None
    max_psi: float | None
    retrain_reason: str | None = None
    candidate_mae: float | None = None
    candidate_version: str | None = None
    blessed: bool | None = None
    rejected_because: str | None = None


def retrain_reason(cfg: Config, weeks_since_train: int, max_psi: float, champion_mae: float | None,
                   champion_eval_mae: float | None) -> str | None:
    """Why to retrain now, or None: schedule, drift, or error growth (in that order)."""
    if champion_mae is None:
        return "no champion yet"
    if weeks_since_train >= cfg.retrain.every_weeks:
        return f"schedule ({weeks_since_train} weeks since last training)"
    if max_psi > cfg.retrain.drift_psi:
        return f"input drift (max PSI {max_psi:.2f} > {cfg.retrain.drift_psi})"
    if champion_eval_mae and champion_mae > champion_eval_mae * (1 + cfg.retrain.error_growth):
        return f"error growth (MAE {champion_mae:.0f} s vs {champion_eval_mae:.0f} s at evaluation)"
    return None


def _corrupt(frame: pd.DataFrame) -> pd.DataFrame:
    """A realistic feed bug for demonstrations: the label arrives in minutes."""
    return frame.assign(**{LABEL: frame[LABEL] / 60})


def simulate(cfg: Config, new_weeks: int, start_week: int | None = None, corrupt_weeks: tuple[int, ...] = (),
             out_dir: str | Path | None = None) -> list[WeekRecord]:
    ws = Path(cfg.workspace)
    out = Path(out_dir or ws / "simulate")
    out.mkdir(parents=True, exist_ok=True)
    root = str(ws / "data")
    store = DatasetStore(root)
    pop = build_population(cfg.data)
    start = start_week if start_week is not None else cfg.data.weeks
    for week in range(start):  # the history that exists before the loop starts
        name = batch_name(cfg.data, week)
        if not store.storage.exists(store.raw_uri(name)):
            store.storage.write_bytes(store.raw_uri(name), to_parquet_bytes(generate_week(cfg.data, pop, week)))
    tracking.setup(cfg)

    records: list[WeekRecord] = []
    clean_frames: list[pd.DataFrame] = []
    weeks_since_train = 0
    champion = load_champion(cfg)
    champion_eval_mae = _evaluated_mae(champion.metadata.get("run_id")) if champion else None
    for week in range(start, start + new_weeks):
        name = batch_name(cfg.data, week)
        frame = generate_week(cfg.data, pop, week)
        if week in corrupt_weeks:
            frame = _corrupt(frame)
        reference = champion.reference if champion else None
        result = validate_batch(frame, cfg.validation, reference, batch=name)
        if len(result.quarantined_rows):
            store.storage.write_bytes(
                f"{root}/quarantine/live/{name}.parquet", to_parquet_bytes(result.quarantined_rows)
            )
        rec = WeekRecord(week, name, len(frame), result.accepted, len(result.quarantined_rows), None, None,
                         champion.version if champion else None, None)
        if not result.accepted:
            rec.rejected_because = "; ".join(result.errors)
            log.warning("week %d (%s) rejected: %s; rows kept in quarantine", week, name, rec.rejected_because)
            records.append(rec)
            continue
        store.storage.write_bytes(store.raw_uri(name), to_parquet_bytes(frame))
        weeks_since_train += 1

        # How did the rules and the champion do on this week (point-in-time history)?
        if not clean_frames:
            clean_frames = [_clean_history(cfg, store)]
        accepted = result.accepted_rows.assign(batch=name)
        clean_frames.append(accepted)
        history = add_point_in_time_history(pd.concat(clean_frames, ignore_index=True))
        this_week = history[history["batch"] == name]
        y = this_week[LABEL].to_numpy(float)
        rec.baseline_mae = float(np.mean(np.abs(BusinessLogicModel().predict(this_week) - y)))
        if champion:
            rec.champion_mae = float(np.mean(np.abs(champion.predict(this_week) - y)))
            rec.max_psi = max(psi_by_feature(champion.reference, this_week).values())
        rec.retrain_reason = retrain_reason(
            cfg, weeks_since_train, rec.max_psi or 0.0, rec.champion_mae, champion_eval_mae
        )
        if rec.retrain_reason:
            outcome = _retrain(cfg, root, out / f"week_{week:03d}")
            rec.candidate_mae, rec.candidate_version, rec.blessed = (
                outcome["mae"],
                outcome["version"],
                outcome["blessed"],
            )
            weeks_since_train = 0
            if outcome["blessed"]:
                champion = load_champion(cfg)
                champion_eval_mae = outcome["mae"]
        records.append(rec)
        log.info("%s", format_record(rec))
    write_outputs(records, out)
    return records


def _evaluated_mae(run_id: str | None) -> float | None:
    """The champion's MAE on its own held-out weeks, as its evaluation logged it."""
    if not run_id:
        return None
    from mlflow import MlflowClient

    return MlflowClient().get_run(run_id).data.metrics.get(tracking.test_metric("candidate", "mae"))


def _clean_history(cfg: Config, store: DatasetStore) -> pd.DataFrame:
    frames = []
    for name in store.raw_batches():
        res = validate_batch(store.storage.read_parquet(store.raw_uri(name)), cfg.validation, batch=name)
        if res.accepted:
            frames.append(res.accepted_rows.assign(batch=name))
    return pd.concat(frames, ignore_index=True)


def _retrain(cfg: Config, root: str, work: Path) -> dict:
    """One pass of the pipeline's steps: version, validate, features, train, evaluate, promote if blessed."""
    version = ingest(root, work / "ingest").data_version
    validated = validate_dataset(cfg, root, version, work / "validate", fail_on_rejected=False)
    featurize(cfg, work / "validate" / CLEAN_FILE, work / "features")
    trained = train_step(cfg, work / "features", work / "model", validated.clean_version)
    ev = evaluate_step(cfg, work / "features", work / "model", work / "evaluation", run_id=trained.run_id)
    if ev.blessed:
        promote_step(cfg, trained.model_version)
    return {"version": trained.model_version, "blessed": ev.blessed, "mae": ev.metrics["candidate"]["mae"]}


def format_record(r: WeekRecord) -> str:
    def f(v):
        return f"{v:6.1f}" if v is not None else "     -"

    line = f"week {r.week:3d}  rows {r.rows_in:5d}  baseline {f(r.baseline_mae)}  champion {f(r.champion_mae)}"
    line += f"  psi {r.max_psi:4.2f}" if r.max_psi is not None else "  psi    -"
    if not r.accepted:
        return line + f"  REJECTED: {r.rejected_because}"
    if r.retrain_reason:
        line += f"  retrain: {r.retrain_reason} -> v{r.candidate_version} MAE {r.candidate_mae:.1f} "
        line += "promoted" if r.blessed else "not blessed"
    return line


def write_outputs(records: list[WeekRecord], out: Path) -> None:
    (out / "history.json").write_text(json.dumps([asdict(r) for r in records], indent=1))
    if not records:
        return
    from matplotlib.figure import Figure  # not pyplot: leaves a notebook's backend alone

    df = pd.DataFrame([asdict(r) for r in records])
    fig = Figure(figsize=(9, 6))
    ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot(df.week, df.baseline_mae, "o-", label="business rules")
    ax.plot(df.week, df.champion_mae, "o-", label="champion (before retraining)")
    ax.plot(df.week, df.candidate_mae, "s", label="candidate (held-out weeks)")
    for _, r in df[df.retrain_reason.notna()].iterrows():
        ax.axvline(r.week, color="grey", alpha=0.3)
    for _, r in df[~df.accepted].iterrows():
        ax.axvline(r.week, color="red", alpha=0.5, linestyle="--")
    ax.set_ylabel("MAE (s)")
    ax.set_title("Weekly error; grey: retrain, red dashed: rejected batch")
    ax.legend()
    ax2.bar(df.week, df.max_psi.fillna(0))
    ax2.set_ylabel("max PSI")
    ax2.set_xlabel("week")
    fig.tight_layout()
    fig.savefig(out / "history.png", dpi=90)
