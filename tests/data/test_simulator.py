import numpy as np
import pandas as pd

from components.core.config import DataConfig
from components.core.schema import COLUMN_NAMES
from components.core.storage import to_parquet_bytes
from components.data.simulator import (
    build_population,
    generate,
    generate_week,
    is_christmas_week,
    true_service_time,
    week_start,
)

SMALL = DataConfig(weeks=3, stops_per_week=400, n_customers=800, n_drivers=10)


def test_same_seed_same_bytes_and_other_seed_differs():
    a = [to_parquet_bytes(f) for _, f in generate(SMALL)]
    b = [to_parquet_bytes(f) for _, f in generate(SMALL)]
    c = [to_parquet_bytes(f) for _, f in generate(SMALL.model_copy(update={"seed": 8}))]
    assert a == b
    assert a != c


def test_week_has_schema_routes_and_plausible_service_times(tiny_weeks):
    _, week = tiny_weeks[0]
    assert tuple(week.columns) == COLUMN_NAMES
    stops_per_route = week.drop_duplicates("delivery_id").groupby("route_id").size()
    assert stops_per_route.between(15, 35).mean() > 0.9  # the last route of a week may be cut short
    median = week["service_time_s"].median()
    assert 240 < median < 420, median  # about 5-6 minutes
    assert week["customer_key"].str.fullmatch(r"[0-9a-f]{16}").all()  # salted hashes only


def test_faults_and_missing_values_are_present(tiny_weeks):
    data = pd.concat([w for _, w in tiny_weeks])
    assert data["delivery_id"].duplicated().sum() > 0
    assert (data["service_time_s"] < 15).sum() > 0  # geofence closed at once
    assert (data["service_time_s"] > 3600).sum() > 0  # van left in the fence
    assert data["floor"].isna().sum() > 0
    assert data["service_time_s"].isna().sum() > 0


def test_customers_return_so_history_can_help(tiny_weeks):
    data = pd.concat([w for _, w in tiny_weeks])
    visits = data.groupby("customer_key").size()
    assert (visits > 1).mean() > 0.3


def test_christmas_orders_are_larger_and_new_areas_open_and_urban_parking_drifts():
    cfg = DataConfig(stops_per_week=1500, n_customers=3000, n_drivers=20)
    pop = build_population(cfg)
    christmas = [w for w in range(52) if is_christmas_week(week_start(cfg, w))]
    assert christmas, "the default year has Christmas weeks"
    normal = generate_week(cfg, pop, 20)
    xmas = generate_week(cfg, pop, christmas[0])
    assert xmas["n_items"].mean() > 1.2 * normal["n_items"].mean()
    early_areas = set(generate_week(cfg, pop, 5)["area_id"])
    late_areas = set(generate_week(cfg, pop, 46)["area_id"])
    assert late_areas - early_areas, "areas opened during the year"
    # Same stops, same noise, later week: urban stops take longer (parking drift), rural ones do not.
    stops = np.arange(len(pop.cust_area))
    args = (pop, stops, np.zeros_like(stops), np.full(len(stops), 100), np.full(len(stops), 3),
            np.zeros(len(stops)), np.full(len(stops), 10))
    early = true_service_time(*args, 2, np.random.default_rng(0))
    late = true_service_time(*args, 45, np.random.default_rng(0))
    urban = pop.area_type[pop.cust_area] == "urban"
    assert (late[urban] > early[urban]).all()
    assert np.allclose(late[~urban], early[~urban])


def test_planned_service_is_the_business_rule(tiny_weeks):
    from components.core.baseline import BusinessLogicModel

    _, week = tiny_weeks[1]
    assert np.allclose(week["planned_service_s"], BusinessLogicModel().predict(week))
