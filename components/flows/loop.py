"""The dynamic-data loop: weeks keep arriving, the model keeps up (``servicetime simulate``).

Each new week is generated, validated against the champion's training
reference and appended. The champion is scored on the week it has just seen
(the error it would have made, and the rows the model server would have logged);
the model is retrained on a schedule, when the inputs drift, when the champion's
online error grows overall or for one area type, or when stops arrive from areas
it never saw (``components.flows.triggers``); the candidate is promoted only
when the evaluation blesses it. ``frozen`` keeps the first champion and only
records what would have triggered retraining. The same library steps the pipeline runs
do the work here, so the loop and the pipeline cannot disagree.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
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
from components.flows.triggers import evaluated, online, retrain_triggers, served_rows, trailing
from components.learn import history_store, tracking
from components.learn.running_history import RunningHistory
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
    triggers: list[str] = field(default_factory=list)  # every reason to retrain this week (retrain_reason: the first)
    slice_bias: dict[str, float] = field(default_factory=dict)  # the champion's online bias per area type
    unseen_area_share: float | None = None


def _corrupt(frame: pd.DataFrame) -> pd.DataFrame:
    """A realistic feed bug for demonstrations: the label arrives in minutes."""
    return frame.assign(**{LABEL: frame[LABEL] / 60})


def simulate(cfg: Config, new_weeks: int, start_week: int | None = None, corrupt_weeks: tuple[int, ...] = (),
             out_dir: str | Path | None = None, frozen: bool = False) -> list[WeekRecord]:
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
    state: RunningHistory | None = None  # the customer history so far, carried week to week
    weeks_since_train = 0
    champion = load_champion(cfg)
    evaluation = evaluated(champion.metadata.get("run_id")) if champion else None
    served: list[pd.DataFrame] = []  # the champion's served weeks, as the prediction log would hold them
    labelled: list[pd.DataFrame] = []  # and their labels
    started = None  # the champion's figures over its first full window: the slices' starting bias
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
        clean = pd.concat(clean_frames, ignore_index=True)
        history_store.refresh(root, clean, built_from=name, storage=store.storage)  # what the servers follow
        if state is None:  # the history before the loop, once; then each week adds to it
            state = RunningHistory()
            state.add_all(clean_frames[0])
        try:
            this_week = state.add(accepted)  # the week's point-in-time history, without recomputing the past
        except ValueError:  # a week that does not follow the history in time: all of it again
            state = RunningHistory()
            history = state.add_all(clean)
            this_week = history[history["batch"] == name]
        y = this_week[LABEL].to_numpy(float)
        rec.baseline_mae = float(np.mean(np.abs(BusinessLogicModel().predict(this_week) - y)))
        now = None
        if champion:
            served.append(served_rows(champion, this_week))
            labelled.append(this_week)
            rec.champion_mae = float(np.mean(np.abs(served[-1]["service_time_s"].to_numpy() - y)))
            rec.max_psi = max(psi_by_feature(champion.reference, this_week).values())
            window = cfg.retrain.online_window_weeks
            now = online(cfg, trailing(served, window), trailing(labelled, window))
            rec.slice_bias, rec.unseen_area_share = now.slice_bias, now.unseen_area_share
            if started is None and len(served) >= window:
                started = now
        rec.triggers = retrain_triggers(cfg, weeks_since_train, rec.max_psi or 0.0, evaluation, now, started)
        if rec.triggers and not (frozen and champion):
            rec.retrain_reason = rec.triggers[0]
            outcome = _retrain(cfg, root, out / f"week_{week:03d}")
            rec.candidate_mae, rec.candidate_version, rec.blessed = (
                outcome["mae"],
                outcome["version"],
                outcome["blessed"],
            )
            weeks_since_train = 0
            if outcome["blessed"]:
                champion = load_champion(cfg)
                evaluation = evaluated(champion.metadata.get("run_id"))
                served, labelled, started = [], [], None
        records.append(rec)
        log.info("%s", format_record(rec))
    write_outputs(records, out)
    return records


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
    elif r.triggers:  # a frozen champion: what would have retrained it
        line += f"  triggers: {'; '.join(r.triggers)}"
    return line


def write_outputs(records: list[WeekRecord], out: Path) -> None:
    (out / "history.json").write_text(json.dumps([asdict(r) for r in records], indent=1))
    if not records:
        return
    from matplotlib.figure import Figure  # not pyplot: leaves a notebook's backend alone

    df = pd.DataFrame([asdict(r) for r in records])
    fig = Figure(figsize=(9, 8))
    ax, ax3, ax2 = fig.subplots(3, 1, sharex=True, height_ratios=[3, 2, 1])
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
    # The champion's online figures over its last served weeks: what the slice and new-area triggers read.
    slices = sorted({s for b in df.slice_bias for s in b})
    for s in slices:
        ax3.plot(df.week, [b.get(s) for b in df.slice_bias], ".-", label=s.split("=")[-1])
    ax3.axhline(0, color="black", linewidth=0.5)
    ax3.set_ylabel("online bias (s)")
    if slices:
        ax3.legend(loc="lower left", fontsize="small")
    share = ax3.twinx()
    share.fill_between(df.week, df.unseen_area_share.fillna(0) * 100, color="purple", alpha=0.15)
    share.set_ylabel("% stops in new areas", color="purple")
    ax2.bar(df.week, df.max_psi.fillna(0))
    ax2.set_ylabel("max PSI")
    ax2.set_xlabel("week")
    fig.tight_layout()
    fig.savefig(out / "history.png", dpi=90)
