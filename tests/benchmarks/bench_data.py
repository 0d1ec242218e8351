"""Data benchmark (not a test): the data steps at 1x, 4x, 16x and 25x the default size.

    .venv/bin/python -m pytest tests/benchmarks/bench_data.py -m bench -s -p no:cacheprovider

The default data is 52 weeks x 4,000 stops (about 211,000 rows, 12,000 customers).
Larger sizes keep 52 weeks and scale ``stops_per_week`` and ``n_customers`` by the
factor (drivers and areas stay as they are). Each size runs in its own fresh
process, so sizes never share a heap and the peak resident memory
(``getrusage(RUSAGE_SELF).ru_maxrss``) is that size's own.

The stages are the pipeline's data steps, with their Parquet files, in a temporary folder:

* generate:  ``steps.ingest.generate_raw`` (the simulator, one landing file per week);
* ingest:    ``steps.ingest.ingest`` (the landing zone frozen into a dataset version);
* validate:  ``steps.validate.validate_dataset`` (every week; the clean version and file);
* features:  ``steps.featurize.featurize`` (week by week: point-in-time history, split
             files, the transform's streamed fit, the encoded train and val arrays).

Reported: seconds and rows/s per stage, peak memory, and how cost grows with
size: the time ratio against the rows ratio and the exponent ``k`` in
``time ~ rows^k`` (1.0 is linear). Goal (printed, not asserted): ``k <= 1.1``.

This module also holds ``default_features()``: the default data through the real
pipeline steps (generate_raw, ingest, validate_dataset, featurize) into a temporary
folder, built once per process and shared by the other benchmarks.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import pytest

from tests.benchmarks.results import goal, print_table, ratio, record

# 25x: a national grocer's week (100,000 stops, 52 weeks: 5.2 M stops).
SCALES = tuple(int(s) for s in os.environ.get("BENCH_DATA_SCALES", "1,4,16,25").split(","))
PEAK_GOAL_GB = 8.0
LINEAR_EXPONENT_GOAL = 1.1
STAGES = ("generate", "ingest", "validate", "features", "total")


def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _instrument(sink: dict) -> None:
    """Time the parts of the features step by wrapping the functions it calls (this process only)."""
    import components.steps.featurize as featurize
    from components.learn.feature_fit import TransformFitter
    from components.learn.features import Arrays, FeatureTransform
    from components.learn.running_history import RunningHistory

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sink[name] = sink.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    featurize.CleanWeeks.read = timed("read", featurize.CleanWeeks.read)
    RunningHistory.history = timed("history", RunningHistory.history)
    featurize._FrameWriter.write = timed("write", featurize._FrameWriter.write)
    TransformFitter.observe = timed("fit", TransformFitter.observe)
    FeatureTransform.encode_raw = timed("encode", FeatureTransform.encode_raw)
    TransformFitter.add_numeric = timed("scalers", TransformFitter.add_numeric)
    Arrays.to_bytes = timed("save arrays", Arrays.to_bytes)
    featurize.build_reference = timed("reference", featurize.build_reference)


def measure_size(scale: int, root: Path) -> dict:
    """One size through the real data steps on local files, in the calling (fresh) process."""
    from components.core.config import load_config
    from components.steps.featurize import featurize
    from components.steps.ingest import generate_raw, ingest
    from components.steps.validate import CLEAN_FILE, validate_dataset

    base = load_config(None, {"workspace": str(root / "ws")})
    cfg = base.model_copy(update={"data": base.data.model_copy(update={
        "stops_per_week": base.data.stops_per_week * scale, "n_customers": base.data.n_customers * scale})})
    data = str(root / "data")
    out: dict = {"scale": scale, "weeks": cfg.data.weeks, "stops_per_week": cfg.data.stops_per_week,
                 "n_customers": cfg.data.n_customers, "rss_after_imports_mb": _maxrss_mb()}

    started = time.perf_counter()
    generate_raw(cfg.data, data)
    out["generate_s"] = time.perf_counter() - started
    out["rss_after_generate_mb"] = _maxrss_mb()

    started = time.perf_counter()
    version = ingest(data, str(root / "ingest")).data_version
    out["ingest_s"] = time.perf_counter() - started
    out["rss_after_ingest_mb"] = _maxrss_mb()

    started = time.perf_counter()
    validated = validate_dataset(cfg, data, version, root / "validate", fail_on_rejected=False)
    out["validate_s"] = time.perf_counter() - started
    out["raw_rows"], out["rows_accepted"] = validated.rows_in, validated.rows_accepted
    out["rows_quarantined"], out["batches_rejected"] = validated.rows_quarantined, len(validated.rejected_batches)
    out["rows_conserved"] = validated.rows_in == validated.rows_accepted + validated.rows_quarantined
    out["rss_after_validate_mb"] = _maxrss_mb()

    parts: dict[str, float] = {}
    _instrument(parts)
    started = time.perf_counter()
    featurized = featurize(cfg, root / "validate" / CLEAN_FILE, root / "features")
    out["features_s"] = time.perf_counter() - started
    out["features_parts_s"] = parts
    out["feature_rows"] = sum(featurized.rows.values())
    out["train_rows"], out["val_rows"], out["test_rows"] = (featurized.rows[k] for k in ("train", "val", "test"))
    out["peak_rss_mb"] = _maxrss_mb()
    out["total_s"] = out["generate_s"] + out["ingest_s"] + out["validate_s"] + out["features_s"]
    out["disk_mb"] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20
    return out


def _in_fresh_process(scale: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"servicetime-bench-data-{scale}x-"))
    try:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            return pool.submit(measure_size, scale, root).result()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the default features, shared by the other benchmarks ----------------------------------------


@dataclass
class DefaultFeatures:
    """The default data through the real pipeline steps; files under ``dir`` as featurize writes them."""

    cfg: object  # components.core.config.Config
    dir: Path  # train.npz, val.npz, test.parquet, transform.json, customer_history.parquet, reference.json
    train: object  # components.learn.train.Arrays
    val: object
    test: object  # pandas DataFrame: the held-out weeks with history columns and labels
    transform: object  # components.learn.features.FeatureTransform
    seconds: float

    @property
    def train_uri(self) -> str:
        return str(self.dir / "train.npz")

    @property
    def val_uri(self) -> str:
        return str(self.dir / "val.npz")

    def net(self, cfg=None):
        """The network config the train step builds (``learn.train.net_config``)."""
        from components.learn.train import net_config

        return net_config(cfg or self.cfg, self.transform, self.train)

    def test_arrays(self):
        from components.steps.featurize import encode

        return encode(self.transform, self.test)


@lru_cache(maxsize=1)
def default_features() -> DefaultFeatures:
    """Default config data: generate_raw -> ingest -> validate_dataset -> featurize (about 15 s, once)."""
    import pandas as pd

    from components.core.config import load_config
    from components.learn.features import TEST, TRAIN, VAL, FeatureTransform
    from components.learn.train import Arrays
    from components.steps.featurize import featurize
    from components.steps.ingest import generate_raw, ingest
    from components.steps.validate import validate_dataset

    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="servicetime-bench-"))
    atexit.register(shutil.rmtree, root, True)
    cfg = load_config(None, {"workspace": str(root / "ws")})
    data = root / "data"
    generate_raw(cfg.data, str(data))
    version = ingest(str(data), str(root / "ingest")).data_version
    validate_dataset(cfg, str(data), version, str(root / "validate"))
    featurize(cfg, str(root / "validate" / "clean.parquet"), str(root / "features"))
    d = root / "features"
    return DefaultFeatures(
        cfg,
        d,
        Arrays.from_bytes((d / TRAIN).read_bytes()),
        Arrays.from_bytes((d / VAL).read_bytes()),
        pd.read_parquet(d / TEST),
        FeatureTransform.load(d / "transform.json"),
        time.perf_counter() - started,
    )


# --- the benchmark ---------------------------------------------------------------------------


def _exponent(t: float, t1: float, r: float, r1: float) -> float | None:
    if r == r1 or t <= 0 or t1 <= 0:
        return None
    return math.log(t / t1) / math.log(r / r1)


@pytest.mark.bench
def test_bench_data_at_scale():  # -k scale
    wall = time.perf_counter()
    load_before = os.getloadavg()
    sizes = [_in_fresh_process(scale) for scale in SCALES]
    for s in sizes:
        assert s["rows_conserved"], f"validation lost rows at {s['scale']}x"
        assert s["batches_rejected"] == 0, f"{s['batches_rejected']} batches rejected at {s['scale']}x"

    one = sizes[0]
    rows = []
    for s in sizes:
        row = {"size": f"{s['scale']}x", "raw rows": s["raw_rows"], "generate s": s["generate_s"],
               "gen rows/s": s["raw_rows"] / s["generate_s"], "ingest s": s["ingest_s"], "validate s": s["validate_s"],
               "val rows/s": s["raw_rows"] / s["validate_s"], "features s": s["features_s"],
               "feat rows/s": s["feature_rows"] / s["features_s"], "total s": s["total_s"],
               "total rows/s": s["raw_rows"] / s["total_s"], "peak RSS MB": s["peak_rss_mb"],
               "RSS imports MB": s["rss_after_imports_mb"], "RSS after validate MB": s["rss_after_validate_mb"],
               "disk MB": s["disk_mb"]}
        s["rows_ratio"] = s["raw_rows"] / one["raw_rows"]
        for stage in STAGES:
            s[f"{stage}_time_ratio"] = s[f"{stage}_s"] / one[f"{stage}_s"]
            s[f"{stage}_exponent"] = _exponent(s[f"{stage}_s"], one[f"{stage}_s"], s["raw_rows"], one["raw_rows"])
        s["memory_ratio"] = ratio(
            s["peak_rss_mb"] - s["rss_after_imports_mb"], one["peak_rss_mb"] - one["rss_after_imports_mb"]
        )
        s["bytes_per_row"] = (s["peak_rss_mb"] - s["rss_after_imports_mb"]) * 2**20 / s["raw_rows"]
        rows.append(row)
    print_table("data: generate + ingest + validate + features (52 weeks; one fresh process per size)", rows)
    growth = [{"size": f"{s['scale']}x", "rows ratio": s["rows_ratio"],
               **{f"{st} time ratio": s[f"{st}_time_ratio"] for st in STAGES},
               "total exponent k": s["total_exponent"], "memory ratio": s["memory_ratio"],
               "data bytes/row": s["bytes_per_row"]} for s in sizes]
    print_table("data: growth against 1x (time ~ rows^k; k = 1 is linear)", growth)
    parts = [
        {
            "size": f"{s['scale']}x",
            **{f"{k} s": v for k, v in s["features_parts_s"].items()},
            **{f"{k} rows/s": s["feature_rows"] / v for k, v in s["features_parts_s"].items() if v > 0},
        }
        for s in sizes
    ]
    print_table("data: inside the features step (seconds; history = point-in-time customer history)", parts)
    largest = sizes[-1]
    exponents = {st: largest[f"{st}_exponent"] for st in STAGES}
    part_exponents = {k: _exponent(v, one["features_parts_s"][k], largest["feature_rows"], one["feature_rows"])
                      for k, v in largest["features_parts_s"].items()}
    print("cost exponent k at the largest size: "
          + ", ".join(f"{k} {v:.2f}" for k, v in exponents.items() if v is not None)
          + "; inside features: " + ", ".join(f"{k} {v:.2f}" for k, v in part_exponents.items() if v is not None))
    worst = max((k for k in exponents if exponents[k] is not None), key=lambda k: exponents[k], default=None)
    g = goal(f"cost grows linearly with size (every stage k <= {LINEAR_EXPONENT_GOAL} at {largest['scale']}x)",
             worst is not None and exponents[worst] <= LINEAR_EXPONENT_GOAL,
             f"worst stage {worst}: k = {exponents[worst]:.2f}" if worst else "one size only")
    g_largest = None
    if len(sizes) > 1:  # the growth between the two largest sizes, and the largest one's peak
        a, b = sizes[-2], sizes[-1]
        k = _exponent(b["total_s"], a["total_s"], b["raw_rows"], a["raw_rows"])
        peak_gb, k_text = b["peak_rss_mb"] / 1024, "n/a" if k is None else f"{k:.2f}"
        print(f"data at {b['scale']}x: {b['total_s']:.0f} s, peak {peak_gb:.1f} GB, k={k_text}")
        g_largest = goal(f"at {b['scale']}x: peak <= {PEAK_GOAL_GB:.0f} GB and k <= {LINEAR_EXPONENT_GOAL} between "
             f"{a['scale']}x and {b['scale']}x", peak_gb <= PEAK_GOAL_GB and k is not None
             and k <= LINEAR_EXPONENT_GOAL, f"peak {peak_gb:.1f} GB, k = {k_text}")
    record("data", {"sizes": sizes, "goal_linear": g, "goal_largest": g_largest, "exponents_at_largest": exponents,
                    "feature_part_exponents_at_largest": part_exponents,
                    "load_average_before": load_before, "wall_s": time.perf_counter() - wall})
    print(f"data benchmark wall time {time.perf_counter() - wall:.1f} s")
