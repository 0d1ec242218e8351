"""Features: point-in-time history, a time-based split and the fitted transform, written for training.

The clean data is read one week at a time: each week gets its customer history from the running
state, joins its split's file and feeds the transform's fit; a second pass over the training and
validation files encodes them. The frames of the year are never in memory at once, only a week,
the history state and the encoded arrays. Weeks that overlap in time (a late file) are taken
together, from the whole clean file, which gives the same features.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.core.config import Config
from components.core.schema import LABEL, TIMESTAMP
from components.core.storage import ParquetAppender
from components.data.drift import build_reference, reference_inputs
from components.learn.feature_fit import TransformFitter
from components.learn.features import (
    HISTORY_FILE,
    REFERENCE_FILE,
    SPLIT_FILE,
    TEST,
    TRAIN,
    TRAIN_FRAME,
    TRANSFORM_FILE,
    VAL,
    VAL_FRAME,
    Arrays,
    FeatureTransform,
    build_features,
    split_weeks,
)
from components.learn.running_history import KEY, RunningHistory
from components.steps import record
from components.steps.outcomes import Featurized

log = logging.getLogger(__name__)
BATCH = "batch"
FRAME_FILES = {"train": TRAIN_FRAME, "val": VAL_FRAME, "test": TEST}


def encode(transform: FeatureTransform, frame: pd.DataFrame) -> Arrays:
    cats, nums = transform.transform(frame)
    return Arrays(cats, nums, frame[LABEL].to_numpy(np.float32))


class CleanWeeks:
    """The weeks of a clean Parquet file, read one by one (validation writes one row group per week)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = pq.ParquetFile(self.path)
        groups: dict[str, list[int]] = {}
        for i in range(self.file.num_row_groups):
            for name in pc.unique(self.file.read_row_group(i, columns=[BATCH]).column(BATCH)).to_pylist():
                groups.setdefault(name, []).append(i)
        self.groups = groups

    @property
    def batches(self) -> list[str]:
        return sorted(self.groups)

    def read(self, batch: str) -> pd.DataFrame:
        table = self.file.read_row_groups(self.groups[batch])
        if len(self.groups[batch]) > 1 or len(pc.unique(table.column(BATCH))) > 1:
            table = table.filter(pc.equal(table.column(BATCH), batch))
        return table.to_pandas()

    def in_time_order(self) -> bool:
        """Whether each week, in name order, starts after the one before ends (what a streamed history needs)."""
        spans = (pq.read_table(self.path, columns=[BATCH, TIMESTAMP]).to_pandas()
                 .assign(**{TIMESTAMP: lambda f: pd.to_datetime(f[TIMESTAMP], utc=True)})
                 .groupby(BATCH)[TIMESTAMP].agg(["min", "max"]).sort_index())
        return bool((spans["min"].iloc[1:].to_numpy() > spans["max"].iloc[:-1].to_numpy()).all())


def _encode_file(transform: FeatureTransform, path: Path, fitter: TransformFitter | None) -> list[tuple]:
    """A split's frame, row group by row group: categories, unscaled numerics and labels (and the
    numerics to the fitter's scalers when it is the training split)."""
    parts = []
    file = pq.ParquetFile(path)
    for i in range(file.num_row_groups):
        frame = file.read_row_group(i).to_pandas()
        cats, raw = transform.encode_raw(frame)
        if fitter is not None:
            fitter.add_numeric(raw)
        parts.append((cats, raw, frame[LABEL].to_numpy(np.float32)))
    return parts


def _arrays(transform: FeatureTransform, parts: list[tuple]) -> Arrays:
    if not parts:
        return Arrays(np.zeros((0, len(transform.categorical)), np.int64),
                      np.zeros((0, len(transform.numeric)), np.float32), np.zeros(0, np.float32))
    return Arrays(np.concatenate([c for c, _, _ in parts]),
                  np.concatenate([transform.standardise(r) for _, r, _ in parts]),
                  np.concatenate([y for _, _, y in parts]))


def _streamed(source: CleanWeeks, weeks: dict[str, list[str]], out: Path) -> dict:
    """Pass 1 over the weeks (history, split files, the fit's first half), pass 2 over the split files
    (the scalers and the encoding). Returns what ``split.json`` and the outcome need."""
    history, fitter = RunningHistory(), TransformFitter()
    writers = {split: ParquetAppender(out / name) for split, name in FRAME_FILES.items()}
    areas: set[str] = set()
    until, snapshot, like = None, None, None
    for split in ("train", "val", "test"):
        for batch in weeks[split]:
            frame = history.add(source.read(batch))
            like = frame
            writers[split].write(frame)
            if split == "train":
                fitter.observe(frame)
                areas.update(frame["area_id"].astype(str).unique())
            log.info("features: week %s (%s), %d stops", batch, split, len(frame))
        if split == "val":  # the history as of the end of the validation weeks: what serving looks up
            snapshot = history.snapshot().sort_values(KEY, kind="stable").reset_index(drop=True)
            until = history.until  # the newest stop of train and val (weeks in time order)
    for w in writers.values():
        w.close(like)
    transform = fitter.scalers()
    train = _encode_file(transform, out / TRAIN_FRAME, fitter)
    transform = fitter.finish()
    (out / TRAIN).write_bytes(_arrays(transform, train).to_bytes())
    del train
    (out / VAL).write_bytes(_arrays(transform, _encode_file(transform, out / VAL_FRAME, None)).to_bytes())
    transform.save(out / TRANSFORM_FILE)
    snapshot.to_parquet(out / HISTORY_FILE, index=False)
    columns = [c for c in reference_inputs() if c in like.columns]
    reference = build_reference(pd.read_parquet(out / TRAIN_FRAME, columns=columns))
    (out / REFERENCE_FILE).write_text(json.dumps(reference.to_dict()))
    return {"rows": {s: w.rows for s, w in writers.items()}, "train_areas": sorted(areas),
            "data_until": float(until.timestamp())}


def _in_memory(clean: pd.DataFrame, cfg: Config, out: Path) -> dict:
    """The whole clean frame at once (weeks overlapping in time)."""
    splits, transform, snapshot = build_features(clean, cfg.split.val_weeks, cfg.split.test_weeks)
    (out / TRAIN).write_bytes(encode(transform, splits["train"]).to_bytes())
    (out / VAL).write_bytes(encode(transform, splits["val"]).to_bytes())
    for split, name in FRAME_FILES.items():
        splits[split].to_parquet(out / name, index=False)
    transform.save(out / TRANSFORM_FILE)
    snapshot.to_parquet(out / HISTORY_FILE, index=False)
    (out / REFERENCE_FILE).write_text(json.dumps(build_reference(splits["train"]).to_dict()))
    return {"rows": {k: len(v) for k, v in splits.items()},
            "train_areas": sorted(splits["train"]["area_id"].astype(str).unique()),
            "data_until": float(max(pd.to_datetime(splits[k][TIMESTAMP], utc=True).max()
                                    for k in ("train", "val")).timestamp())}


def featurize(cfg: Config, clean_path: str | Path, out_dir: str | Path, run_uri: str | None = None) -> Featurized:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = CleanWeeks(clean_path)
    weeks = split_weeks(source.batches, cfg.split.val_weeks, cfg.split.test_weeks)
    if source.in_time_order():
        facts = _streamed(source, weeks, out)
    else:
        log.warning("features: weeks of %s overlap in time; building them from the whole file", clean_path)
        facts = _in_memory(pd.read_parquet(clean_path), cfg, out)
    (out / SPLIT_FILE).write_text(json.dumps({
        "weeks": weeks,
        "rows": facts["rows"],
        "train_areas": facts["train_areas"],
        # The newest stop the model and its history snapshot learned from: their data's age at serving.
        "data_until": facts["data_until"],
    }, indent=1))
    return record(run_uri, Featurized(facts["rows"], weeks["test"], str(out)))
