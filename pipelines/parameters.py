"""The pipeline's parameters: the one table of what a dashboard user may change on *Create run*.

A parameter is either a run input (where the data is, where the records go, how much of it,
whether to tune) or a *knob*: one config field exposed as a parameter. A knob travels only as
its parameter: ``config_json_for`` leaves its field out of the run's ``config_json``, and a step
refuses a ``config_json`` that sets it (``components.core.config.config_with``), so no value
silently wins over another. A knob's default is its field's default in the config; the compiled
pipeline shows every parameter with its default and this table's description.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from components.core.config import Config, load_config


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type
    description: str
    field: str | None = None  # the config field a knob sets; None for a run input
    default: Any = None  # a run input's default (a knob's comes from the config)


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("data_root", str, "Dataset root URI: weekly Parquet batches under <data_root>/raw "
              "(a local path or s3://bucket/prefix).", default=""),
    Parameter("run_uri", str, "Where the run's step records and summary go; a folder ending in / gets one "
              "folder per run (named by the KFP job id).", default=""),
    Parameter("config_json", str, "Every other config field as JSON (components/core/config.py); empty: the "
              "defaults. It must not set a field that is a parameter here.", default=""),
    Parameter("last_weeks", int, "Use only the newest N weekly batches (0: all).", default=0),
    Parameter("num_workers", int, "Ray Train workers (0: train in the step's own process).", "train.num_workers"),
    Parameter("epochs", int, "Training epochs (early stopping may end sooner).", "train.epochs"),
    Parameter("tune_trials", int, "Ray Tune trials searching the model's settings before training "
              "(0: no search).", default=0),
    Parameter("min_improvement", float, "Release gate: relative MAE gain required over the strongest simple "
              "baseline.", "eval.min_improvement_vs_baseline"),
    Parameter("max_slice_regression", float, "Release gate: no slice may be worse than the baseline (or the "
              "champion) by more than this fraction.", "eval.max_slice_regression"),
    Parameter("fail_on_rejected", bool, "Stop the run when validation rejects a weekly batch (its rows are "
              "quarantined either way).", default=True),
    Parameter("simulate_if_empty", bool, "Fill an empty data root with simulated weeks; off: an empty data "
              "root fails the run.", default=True),
)
BY_NAME = {p.name: p for p in PARAMETERS}
KNOBS = {p.name: p.field for p in PARAMETERS if p.field}


def _field(cfg: Config, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def knob_values(cfg: Config) -> dict[str, Any]:
    """The knobs' parameter values that carry ``cfg``'s settings."""
    return {name: _field(cfg, path) for name, path in KNOBS.items()}


def as_fields(**values: Any) -> dict[str, Any]:
    """Knob parameters as the config fields they set: ``as_fields(epochs=3)`` -> ``{"train.epochs": 3}``."""
    return {KNOBS[name]: value for name, value in values.items()}


def config_json_for(cfg: Config) -> str:
    """``cfg`` as the pipeline's ``config_json``: every field but the knobs (they travel as parameters)."""
    raw = json.loads(cfg.model_dump_json())
    for path in KNOBS.values():
        *parents, leaf = path.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node.pop(leaf)
    return json.dumps(raw, separators=(",", ":"))


def defaults(overrides: dict[str, Any] | None = None, cfg: Config | None = None) -> dict[str, Any]:
    """Every parameter's default: run inputs from the table, knobs from the config (``cfg`` or the
    embedded default), then ``overrides`` (what a cluster build pre-fills)."""
    overrides = overrides or {}
    unknown = set(overrides) - set(BY_NAME)
    if unknown:
        raise ValueError(f"no pipeline parameter {sorted(unknown)}")
    out = {p.name: p.default for p in PARAMETERS} | knob_values(cfg or load_config())
    return out | overrides


def docstring(summary: str) -> str:
    """A Google-style docstring: KFP reads each parameter's description from its ``Args`` section."""
    lines = [summary, "", "Args:"]
    lines += [f"    {p.name}: {p.description}" + (f" Sets the config's {p.field}." if p.field else "")
              for p in PARAMETERS]
    return "\n".join(lines) + "\n"
