"""Features streamed week by week equal the features built from the whole year at once."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.learn.feature_fit import TransformFitter, median_of_counts
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
    add_point_in_time_history,
)
from components.steps.featurize import CleanWeeks, _in_memory, featurize
from components.steps.ingest import generate_raw, ingest
from components.steps.validate import CLEAN_FILE, validate_dataset
from tests.conftest import tiny_config


def test_median_of_counts_is_pandas_median():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 10, 11, 200):
        values = rng.integers(-1, 8, n).astype(float)
        assert median_of_counts(Counter(values.tolist())) == pd.Series(values).median()
    assert np.isnan(median_of_counts(Counter()))


def test_fitter_fed_week_by_week_equals_the_fit_on_all_weeks(tiny_weeks):
    year = add_point_in_time_history(pd.concat([f.assign(batch=n) for n, f in tiny_weeks], ignore_index=True))
    year.loc[year["building_type"] == year["building_type"].iloc[0], "floor"] = np.nan  # a type without any floor
    whole = FeatureTransform().fit(year)
    fitter = TransformFitter()
    weeks = [w for _, w in year.groupby("batch", sort=True)]
    for week in weeks:
        fitter.observe(week)
    scaled = fitter.scalers()
    for week in weeks:
        fitter.add_numeric(scaled.encode_raw(week)[1])
    streamed = fitter.finish()
    assert streamed.floor_fill == whole.floor_fill and streamed.vocab == whole.vocab
    assert streamed.prior_log_s == pytest.approx(whole.prior_log_s, abs=1e-12)
    np.testing.assert_allclose(streamed.mean, whole.mean, atol=2e-8)
    np.testing.assert_allclose(streamed.std, whole.std, atol=2e-8)


def test_fitter_without_rows_says_so():
    with pytest.raises(ValueError, match="no training rows"):
        TransformFitter().finish()


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """The tiny data through the real steps, featurized streamed and all at once from the same clean file."""
    ws = tmp_path_factory.mktemp("streamed")
    cfg = tiny_config(ws, **{"train.num_workers": 0})
    root = str(ws / "data")
    generate_raw(cfg.data, root)
    version = ingest(root, ws / "ingest").data_version
    validate_dataset(cfg, root, version, ws / "validate")
    clean = ws / "validate" / CLEAN_FILE
    featurize(cfg, clean, ws / "streamed")
    (ws / "whole").mkdir()
    facts = _in_memory(pd.read_parquet(clean), cfg, ws / "whole")
    return cfg, clean, ws / "streamed", ws / "whole", facts


def test_validation_writes_one_row_group_per_week(features):
    _, clean, *_ = features
    weeks = CleanWeeks(clean)
    assert pq.ParquetFile(clean).num_row_groups == len(weeks.batches) > 10
    assert all(len(groups) == 1 for groups in weeks.groups.values())
    assert weeks.in_time_order()
    assert weeks.read(weeks.batches[3])["batch"].unique().tolist() == [weeks.batches[3]]


def test_streamed_features_equal_the_whole_year_features(features):
    _, _, streamed, whole, facts = features
    for name in (TRAIN_FRAME, VAL_FRAME, TEST):  # frames with their history columns, rows in the same order
        pd.testing.assert_frame_equal(pd.read_parquet(streamed / name), pd.read_parquet(whole / name))
    a, b = FeatureTransform.load(streamed / TRANSFORM_FILE), FeatureTransform.load(whole / TRANSFORM_FILE)
    assert (a.vocab, a.floor_fill, a.categorical, a.numeric) == (b.vocab, b.floor_fill, b.categorical, b.numeric)
    np.testing.assert_allclose(a.mean, b.mean, atol=2e-8)
    np.testing.assert_allclose(a.std, b.std, atol=2e-8)
    for name in (TRAIN, VAL):
        x, y = Arrays.from_bytes((streamed / name).read_bytes()), Arrays.from_bytes((whole / name).read_bytes())
        assert len(x) == len(y) > 0
        np.testing.assert_array_equal(x.cats, y.cats)
        np.testing.assert_array_equal(x.y, y.y)
        np.testing.assert_allclose(x.nums, y.nums, atol=1e-5)
    s, w = pd.read_parquet(streamed / HISTORY_FILE), pd.read_parquet(whole / HISTORY_FILE)
    assert s["customer_key"].tolist() == w["customer_key"].tolist()
    np.testing.assert_array_equal(s["count"], w["count"])
    np.testing.assert_allclose(s["sum_log"], w["sum_log"], atol=1e-9)
    assert json.loads((streamed / REFERENCE_FILE).read_text()) == json.loads((whole / REFERENCE_FILE).read_text())
    split = json.loads((streamed / SPLIT_FILE).read_text())
    assert (split["rows"], split["train_areas"], split["data_until"]) == (
        facts["rows"], facts["train_areas"], facts["data_until"])


def test_weeks_that_overlap_in_time_are_built_from_the_whole_file(features, tmp_path, caplog):
    cfg, clean, _, whole, _ = features
    frame = pd.read_parquet(clean)
    weeks = sorted(frame["batch"].unique())
    late = frame["batch"] == weeks[5]
    frame.loc[late.idxmax(), "delivered_at"] = frame.loc[frame["batch"] == weeks[2], "delivered_at"].iloc[0]
    frame.to_parquet(tmp_path / CLEAN_FILE, index=False)
    assert not CleanWeeks(tmp_path / CLEAN_FILE).in_time_order()
    featurize(cfg, tmp_path / CLEAN_FILE, tmp_path / "features")
    assert "overlap in time" in caplog.text
    (tmp_path / "whole").mkdir()
    _in_memory(frame, cfg, tmp_path / "whole")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "features" / TRAIN_FRAME),
                                  pd.read_parquet(tmp_path / "whole" / TRAIN_FRAME))
