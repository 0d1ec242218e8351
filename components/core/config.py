"""Typed configuration for every pipeline step, loaded from YAML.

One model (``Config``) with a section per step; unknown keys are errors
(``extra="forbid"``) so a typo in a YAML file fails loudly instead of silently
falling back to a default. Loading has no side effects.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    weeks: int = Field(52, ge=1, description="weeks the simulator generates")
    stops_per_week: int = Field(4000, ge=50)
    seed: int = 7
    start_date: str = "2024-01-01"  # a Monday; weeks are Monday-to-Sunday
    n_areas: int = Field(40, ge=4)
    n_customers: int = Field(12000, ge=100)
    n_drivers: int = Field(120, ge=2)


class StorageConfig(_Section):
    endpoint_url: str | None = None  # S3 endpoint for s3:// URIs; env AWS_ENDPOINT_URL wins
    region: str = "us-east-1"
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"


class ShiftConfig(_Section):
    """Silent upstream shifts caught at validation (components.data.drift.shift_checks)."""

    label_quantile_warn: float = 0.15  # mean of (batch quantile / reference quantile - 1) over q10..q90
    label_quantile_reject: float = 0.20
    category_psi_warn: float = 0.2  # area_type, building_type, area_id shares against the reference
    category_psi_reject: float = 1.0
    unseen_area_warn: float = 0.05  # share of stops in areas the reference never saw (new areas: a warning)
    known_key_drop_warn: float = 0.5  # known-customer (driver) share below this fraction of the reference's
    known_key_drop_reject: float = 0.25
    hour_psi_warn: float = 0.2  # hour-of-day profile (a clock shift)
    hour_psi_reject: float = 1.0
    min_rows: int = Field(100, ge=1)  # smaller batches are too noisy to judge


class ValidationConfig(_Section):
    min_service_s: float = 20.0  # below: geofence fault (driver never really stopped)
    max_service_s: float = 3600.0  # above: geofence fault (left the van parked in the fence)
    max_quarantine_ratio: float = 0.2  # more bad rows than this rejects the whole batch
    max_label_null_ratio: float = 0.2
    max_null_rate_jump: float = 0.15
    minutes_label_median_s: float = 30.0  # a median below this means minutes, not seconds
    psi_warn: float = 0.2
    psi_reject: float = 1.0
    max_uncoercible_ratio: float = 0.5  # above: the column is mistyped, not a few bad cells
    shifts: ShiftConfig = ShiftConfig()


class SplitConfig(_Section):
    val_weeks: int = Field(4, ge=1)
    test_weeks: int = Field(4, ge=1)


class TrainConfig(_Section):
    num_workers: int = Field(2, ge=0, description="0 trains in-process without Ray")
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(512, ge=8)
    lr: float = 3e-3
    weight_decay: float = 1e-5
    hidden: list[int] = [128, 64]
    embedding_dim: int = 8
    dropout: float = 0.05
    huber_delta_s: float = 90.0
    # Share of training rows whose category is replaced by "unseen" (index 0), per column:
    # without it the unseen row is never trained and a new area gets a random embedding.
    category_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    patience: int = Field(3, ge=1)
    seed: int = 13
    max_failures: int = 2
    use_gpu: bool = False
    backend: Literal["local", "kuberay"] = "local"
    checkpoint_uri: str | None = None  # default: <workspace>/checkpoints
    cpus_per_worker: float = 1.0
    # Overlay <workspace>/tuning/best.json (written by `servicetime tune`) onto these settings when it exists.
    use_tuned: bool = True


class CalibrationConfig(_Section):
    """Fitted on the validation weeks after training, saved in the bundle, applied at serving time."""

    # Huber predicts below the mean of a right-skewed label, and route plans add predictions up:
    # a multiplicative mean correction per segment removes that bias.
    mean_correction: Literal["none", "global", "segment"] = "segment"
    segment_column: Literal["area_type", "building_type"] = "area_type"
    interval_nominal: float = Field(0.80, gt=0.0, lt=1.0)  # central prediction interval
    interval_per_segment: bool = True
    min_segment_rows: int = Field(200, ge=10)  # a smaller segment uses the global fit


class EvalConfig(_Section):
    min_improvement_vs_baseline: float = 0.10  # relative MAE gain required over the strongest baseline
    # Champion check: paired bootstrap over routes; the upper confidence bound of the relative
    # MAE regression may not exceed this (non-inferiority, so retraining noise does not block).
    max_regression_vs_champion: float = 0.02
    bootstrap_samples: int = Field(400, ge=20)
    bootstrap_confidence: float = Field(0.95, gt=0.5, lt=1.0)
    champion_bias_tolerance_s: float = 2.0  # |bias| may exceed the champion's by this much
    late_share_tolerance: float = 0.01  # late share may exceed the champion's by this much
    max_abs_bias_s: float = 5.0  # per-stop bias on the test weeks
    max_slice_regression: float = 0.10  # no slice worse than the rules (or the champion) by more than this
    min_slice_rows: int = 50
    require_route_kpi_gain: bool = True
    promised_window_s: float = 900.0  # half-width of the promised arrival window
    interval_coverage_tolerance: float = 0.03  # |coverage - nominal| on the test weeks
    max_group_bias_gap_s: float = 15.0  # largest bias difference between area types / tenure bands
    min_group_rows: int = 500  # smaller groups (a few drivers' routes) are shown, not judged
    importance_repeats: int = 2
    importance_rows: int = 4000


class TrackingConfig(_Section):
    tracking_uri: str | None = None  # default: sqlite under the workspace
    experiment: str = "servicetime"
    model_name: str | None = None  # default: platform model_name


class ServeConfig(_Section):
    host: str = "127.0.0.1"
    port: int | None = None  # default: platform port
    max_batch: int = 1000
    reload_interval_s: float = 10.0
    drift_window: int = 2000
    workers: int = 1
    # Answer with the newest customer-history snapshot (refreshed with each validated batch) rather than
    # the one frozen in the model bundle; its store: history_uri, default <workspace>/data/history.
    follow_history: bool = True
    history_uri: str | None = None


class DeployConfig(_Section):
    backend: Literal["local", "kubernetes"] = "local"
    mae_tolerance: float = 0.05  # the deployed model may differ from its evaluation by this much
    canary_seconds: float = 120.0
    namespace: str | None = None  # default: platform namespace
    prometheus_url: str | None = None


class RetrainConfig(_Section):
    every_weeks: int = Field(4, ge=1)
    drift_psi: float = 0.2
    error_growth: float = 0.15  # champion MAE this much above its eval MAE triggers retrain
    # Triggers from the champion's online figures (components.flows.triggers), over its last served weeks:
    # four weeks, because one or two weeks of a slice move its bias by 10 s on route and day shocks alone.
    online_window_weeks: int = Field(4, ge=1)
    slice_bias_growth_s: float = 20.0  # an area type's online bias this far from its first full window's
    unseen_area_share: float = 0.05  # share of stops in areas the model never saw


class RetentionConfig(_Section):
    """How long what piles up is kept (``servicetime data prune``; components.data.retention)."""

    raw_weeks: int | None = Field(None, ge=1)  # newest landing batches kept (None: all; versions keep copies)
    quarantine_days: float = Field(90, gt=0)  # rejected rows, kept to replay once a feed is fixed
    prediction_log_days: float = Field(120, gt=0)  # past the labels' arrival and a season of monitoring
    run_log_days: float = Field(30, gt=0)  # workspace/logs
    checkpoint_days: float = Field(14, gt=0)  # training checkpoints (a finished run needs none)


class MonitorConfig(_Section):
    """The prediction log and online quality (components.serving.predlog, components.serving.monitor)."""

    log_predictions: bool = True
    prediction_log_uri: str | None = None  # default: <workspace>/predictions (cluster: s3://<data bucket>/predictions)
    log_flush_rows: int = Field(20_000, ge=1)
    log_flush_s: float = Field(5.0, gt=0)
    log_queue: int = Field(10_000, ge=1)
    report_uri: str | None = None  # default: <workspace>/monitor
    min_slice_rows: int = Field(50, ge=1)


class Config(_Section):
    workspace: str = "workspace"
    data: DataConfig = DataConfig()
    storage: StorageConfig = StorageConfig()
    validation: ValidationConfig = ValidationConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
    serve: ServeConfig = ServeConfig()
    deploy: DeployConfig = DeployConfig()
    retrain: RetrainConfig = RetrainConfig()
    monitor: MonitorConfig = MonitorConfig()
    retention: RetentionConfig = RetentionConfig()

    def hash(self) -> str:
        """A short content hash of the effective config, recorded as lineage."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """{"train.epochs": 2} -> {"train": {"epochs": 2}}."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Default YAML, then the given YAML file on top, then dotted overrides."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text()) or {}
    if path is not None:
        raw = _merge(raw, yaml.safe_load(Path(path).read_text()) or {})
    if overrides:
        raw = _merge(raw, _dotted(overrides))
    return Config.model_validate(raw)


def config_from_json(text: str) -> Config:
    return Config.model_validate_json(text)


def _has(raw: dict, dotted: str) -> bool:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def config_with(config_json: str, params: dict[str, Any] | None = None, tuned: dict[str, Any] | None = None) -> Config:
    """A run's config: the JSON the pipeline was launched with (empty: the defaults), the tuned settings
    on top, then the pipeline's parameters. A field that arrives as a parameter must not also be in the
    JSON: each knob has one channel, and a value that would silently lose is an error instead.

    Pipeline steps call this first, so it also sets up their logging.
    """
    from components.core.logs import configure

    configure()
    given = json.loads(config_json) if config_json else None
    both = sorted(k for k in params or {} if given is not None and _has(given, k))
    if both:
        raise ValueError(f"config_json sets {', '.join(both)}, which this pipeline takes as parameters: "
                         "leave them out of config_json and set the parameters instead")
    raw = given if given is not None else yaml.safe_load(DEFAULT_CONFIG.read_text())
    for layer in (tuned, params):
        if layer:
            raw = _merge(raw, _dotted({k: v for k, v in layer.items() if v is not None}))
    return Config.model_validate(raw)
