"""What each pipeline step returns, typed: one class per step.

A step returns its outcome and records it as JSON under ``<run_uri>/steps/<step>.json``
(``StepOutcome.record``), where the run summary and the lab checks read it. The record's
keys are the fields; a field named in ``FLATTENED`` (a dict of details that differ by
backend) is written as top-level keys, one named in ``UNRECORDED`` is left out (too big
for a record, kept in the step's own output folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class StepOutcome:
    STEP: ClassVar[str]
    FLATTENED: ClassVar[tuple[str, ...]] = ()
    UNRECORDED: ClassVar[tuple[str, ...]] = ()

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in self.UNRECORDED:
                continue
            value = getattr(self, f.name)
            if f.name in self.FLATTENED:
                out.update(value)
            else:
                out[f.name] = value
        return out


@dataclass(frozen=True)
class Ingested(StepOutcome):
    STEP: ClassVar[str] = "ingest"
    data_version: str
    rows: int
    weeks: int
    uri: str
    forgotten_rows: int = 0  # rows of tombstoned customers dropped from the landing batches
    hashed_rows: int = 0  # rows whose raw ids were replaced by salted keys at the door


@dataclass(frozen=True)
class Validated(StepOutcome):
    STEP: ClassVar[str] = "validate"
    UNRECORDED: ClassVar[tuple[str, ...]] = ("batches",)
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    accepted: bool  # no batch rejected
    data_version: str
    clean_version: str | None  # None when no batch was accepted
    rejected_batches: dict[str, list[str]]  # batch -> its errors
    quarantine_uri: str
    batches: list[dict] = field(default_factory=list)  # every batch's report (validation.json)


@dataclass(frozen=True)
class Featurized(StepOutcome):
    STEP: ClassVar[str] = "features"
    rows: dict[str, int]  # per split
    test_weeks: list[str]
    path: str


@dataclass(frozen=True)
class Tuned(StepOutcome):
    STEP: ClassVar[str] = "tune"
    trials: int
    settings_json: str  # what the train step lays over its config; "" when tuning is off
    best_trial: int | None = None
    best_val_mae_s: float | None = None
    defaults_val_mae_s: float | None = None
    improvement_pct: float | None = None
    early_stopped: int | None = None
    best_settings: dict | None = None
    mlflow_run_id: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Trained(StepOutcome):
    STEP: ClassVar[str] = "train"
    FLATTENED: ClassVar[tuple[str, ...]] = ("timings",)
    run_id: str
    model_uri: str
    model_version: str
    model_name: str
    bundle: str
    num_workers: int
    train_seconds: float
    samples_per_s: float
    best_val_mae_s: float
    best_epoch: int
    train_settings: dict
    tuned_from: str | None
    timings: dict[str, float] = field(default_factory=dict)  # Ray's fixed costs when on Ray (ray_init_s, ...)


@dataclass(frozen=True)
class Evaluated(StepOutcome):
    STEP: ClassVar[str] = "evaluate"
    blessed: bool
    reasons: list[str]
    metrics: dict[str, dict | None]  # model -> its test metrics (None: not evaluated, e.g. no champion)
    route_kpi: dict[str, dict]
    champion_version: str | None
    report: str
    importance: dict[str, float]
    intervals: dict
    fairness: dict
    windows: dict
    champion_test: dict | None


@dataclass(frozen=True)
class Promoted(StepOutcome):
    STEP: ClassVar[str] = "register"
    name: str
    version: str
    previous: str | None


@dataclass(frozen=True)
class Deployed(StepOutcome):
    STEP: ClassVar[str] = "deploy"
    FLATTENED: ClassVar[tuple[str, ...]] = ("details",)
    backend: str  # local | kubernetes
    version: str
    details: dict[str, Any] = field(default_factory=dict)  # the canary check, or the rollout's outcome
