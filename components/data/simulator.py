"""The delivery simulator: realistic, seeded, weekly batches of grocery deliveries.

No real service-time data can be shipped, so this module *is* the lab's data
source. It follows the generative story of Oda's case study: a driver parks the
van, walks to the building, carries the boxes (slower up stairs), hands the
groceries over and walks back. Service time is the sum of those parts, scaled
by who the customer and the driver are, plus heavy-tailed noise::

    service = (parking(area, hour, week) + walk(building)
               + carry(boxes, floor, elevator) + handover(frozen))
              * customer_factor * driver_factor(tenure) * noise
              * route_shock * day_shock
              + occasional long delay (customer not home, wrong door, ...)

The route and day shocks (traffic, a driver's bad day; weather) are shared by
every stop of a route or of a day and no feature can foresee them, so errors
are correlated along a route as in reality: a model's per-stop gain carries
over to the route's arrival delay only in part (Oda's finding).

What the simulator adds on purpose, because a real pipeline must survive it:

* geofence faults: near-zero stops and stops that last an hour or more;
* missing floors and elevator flags, missing labels, duplicated records;
* change over time: Christmas weeks with larger orders, new areas opening
  mid-year (categories never seen in training), and parking in urban areas
  getting slowly harder (drift).

Everything derives from one seed: the same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from components.core.baseline import BusinessLogicModel
from components.core.config import DataConfig
from components.core.schema import AREA_TYPES, BUILDING_TYPES, COLUMN_NAMES

# --- the generative model's constants (seconds unless named otherwise) -------
PARKING_S = {"urban": 150.0, "suburban": 90.0, "rural": 50.0}
PARKING_AREA_SD = 25.0  # some areas are harder to park in than others
URBAN_PARKING_DRIFT_PER_WEEK = 0.006  # urban parking gets 0.6 % harder every week
RUSH_HOURS = (16, 17, 18)
RUSH_PARKING_FACTOR = 1.25
WALK_S = {"house": 50.0, "apartment": 80.0, "office": 70.0}
CARRY_PER_BOX_S = 22.0
STAIRS_PER_FLOOR = 0.22  # each floor without an elevator adds 22 % to carrying time
ELEVATOR_PER_FLOOR = 0.04
ELEVATOR_WAIT_S = 25.0
HANDOVER_S = 60.0
FROZEN_S = 12.0
CUSTOMER_SD = 0.22  # log-scale spread of the persistent per-customer effect
DRIVER_SD = 0.08
NEW_DRIVER_PENALTY = 0.25  # a brand-new driver is 25 % slower, fading with tenure
TENURE_SCALE_WEEKS = 15.0
NOISE_SD = 0.22
LONG_DELAY_P = 0.04
LONG_DELAY_MEAN_S = 240.0
ROUTE_SHOCK_SD = 0.08  # log-scale: traffic, a driver's bad day; shared by a route's stops
DAY_SHOCK_SD = 0.04  # log-scale: weather; shared by every route of a day

# --- data faults ---------------------------------------------------------------
FAULT_SHORT_P = 0.012  # geofence closed immediately: a stop of a few seconds
FAULT_LONG_P = 0.006  # van left inside the fence: an hour or more
MISSING_FLOOR_P = 0.06
MISSING_ELEVATOR_P = 0.04
MISSING_LABEL_P = 0.005
DUPLICATE_P = 0.005

# --- change over time ----------------------------------------------------------
CHRISTMAS_ORDER_FACTOR = 1.35
CHRISTMAS_VOLUME_FACTOR = 1.15
NEW_AREAS = ((30, 3), (44, 3))  # (week the areas open, how many)

AREA_TYPE_SHARE = {"urban": 0.4, "suburban": 0.35, "rural": 0.25}
BUILDING_MIX = {  # building-type probabilities (house, apartment, office) per area type
    "urban": (0.15, 0.65, 0.20),
    "suburban": (0.55, 0.35, 0.10),
    "rural": (0.85, 0.10, 0.05),
}


@dataclass(frozen=True)
class Population:
    """Everything that persists across weeks: areas, customers and drivers."""

    area_id: np.ndarray
    area_type: np.ndarray
    area_parking_s: np.ndarray
    area_open_week: np.ndarray
    cust_area: np.ndarray  # index into the area arrays
    cust_key: np.ndarray
    cust_building: np.ndarray
    cust_floor: np.ndarray
    cust_elevator: np.ndarray
    cust_factor: np.ndarray
    cust_weight: np.ndarray  # how often the customer orders
    driver_key: np.ndarray
    driver_factor: np.ndarray
    driver_start_tenure: np.ndarray


def _salted_keys(prefix: str, n: int, seed: int) -> np.ndarray:
    """Privacy: customers and drivers appear only as salted hashes, never raw ids."""
    salt = f"servicetime-{seed}-{prefix}".encode()
    return np.array([hashlib.sha256(salt + str(i).encode()).hexdigest()[:16] for i in range(n)])


def build_population(cfg: DataConfig) -> Population:
    rng = np.random.default_rng([cfg.seed, 0])
    n_new = sum(count for _, count in NEW_AREAS)
    n_areas = cfg.n_areas + n_new
    types = rng.choice(AREA_TYPES, size=n_areas, p=[AREA_TYPE_SHARE[t] for t in AREA_TYPES])
    parking = np.array([PARKING_S[t] for t in types]) + rng.normal(0, PARKING_AREA_SD, n_areas)
    open_week = np.zeros(n_areas, dtype=int)
    cursor = cfg.n_areas
    for week, count in NEW_AREAS:
        open_week[cursor : cursor + count] = week
        cursor += count

    n = cfg.n_customers
    # Urban areas hold more customers: weight areas by type.
    area_w = np.array([{"urban": 3.0, "suburban": 2.0, "rural": 1.0}[t] for t in types])
    cust_area = rng.choice(n_areas, size=n, p=area_w / area_w.sum())
    cust_type = types[cust_area]
    building = np.empty(n, dtype=object)
    for area_type, probs in BUILDING_MIX.items():
        mask = cust_type == area_type
        building[mask] = rng.choice(BUILDING_TYPES, size=mask.sum(), p=probs)
    building = building.astype(str)
    floor = np.where(
        building == "apartment",
        1 + rng.geometric(0.3, n).clip(max=14) - 1,
        np.where(building == "office", rng.integers(0, 7, n), (rng.random(n) < 0.1).astype(int)),
    ).astype(float)
    p_elevator = np.where(
        building == "apartment", 1 / (1 + np.exp(-(floor - 4))), np.where(building == "office", 0.8, 0.0)
    )
    elevator = (rng.random(n) < p_elevator).astype(float)

    n_drivers = cfg.n_drivers
    return Population(
        area_id=np.array([f"A{i:03d}" for i in range(n_areas)]),
        area_type=types,
        area_parking_s=np.clip(parking, 15, None),
        area_open_week=open_week,
        cust_area=cust_area,
        cust_key=_salted_keys("customer", n, cfg.seed),
        cust_building=building,
        cust_floor=floor,
        cust_elevator=elevator,
        cust_factor=np.exp(rng.normal(0, CUSTOMER_SD, n)),
        cust_weight=rng.gamma(0.7, 1.0, n),
        driver_key=_salted_keys("driver", n_drivers, cfg.seed),
        driver_factor=np.exp(rng.normal(0, DRIVER_SD, n_drivers)),
        driver_start_tenure=rng.integers(0, 150, n_drivers),
    )


def week_start(cfg: DataConfig, week: int) -> date:
    return date.fromisoformat(cfg.start_date) + timedelta(weeks=week)


def is_christmas_week(monday: date) -> bool:
    return monday.month == 12 and monday.day >= 8


def _route_lengths(rng: np.random.Generator, n_stops: int) -> np.ndarray:
    lengths = []
    while sum(lengths) < n_stops:
        lengths.append(int(rng.integers(15, 36)))
    return np.array(lengths)


def true_service_time(pop: Population, cust: np.ndarray, drivers: np.ndarray, tenure: np.ndarray,
                      boxes: np.ndarray, frozen: np.ndarray, hour: np.ndarray, week: int,
                      rng: np.random.Generator) -> np.ndarray:
    """The ground-truth service time for each stop, before any measurement fault."""
    area = pop.cust_area[cust]
    urban = pop.area_type[area] == "urban"
    parking = pop.area_parking_s[area] * np.where(urban, 1 + URBAN_PARKING_DRIFT_PER_WEEK * week, 1.0)
    parking = parking * np.where(np.isin(hour, RUSH_HOURS), RUSH_PARKING_FACTOR, 1.0)
    building = pop.cust_building[cust]
    walk = np.array([WALK_S[b] for b in building])
    floor = pop.cust_floor[cust]
    elevator = pop.cust_elevator[cust] > 0.5
    per_floor = np.where(elevator, ELEVATOR_PER_FLOOR, STAIRS_PER_FLOOR)
    carry = CARRY_PER_BOX_S * boxes * (1 + per_floor * floor) + np.where(elevator & (floor > 0), ELEVATOR_WAIT_S, 0.0)
    handover = HANDOVER_S + FROZEN_S * frozen
    driver = pop.driver_factor[drivers] * (1 + NEW_DRIVER_PENALTY * np.exp(-tenure / TENURE_SCALE_WEEKS))
    noise = np.exp(rng.normal(0, NOISE_SD, len(cust)))
    seconds = (parking + walk + carry + handover) * pop.cust_factor[cust] * driver * noise
    long_delay = (rng.random(len(cust)) < LONG_DELAY_P) * rng.exponential(LONG_DELAY_MEAN_S, len(cust))
    return seconds + long_delay


def route_shocks(cfg: DataConfig, week: int, day: np.ndarray) -> np.ndarray:
    """One multiplicative shock per route (its own times its day's), mean 1.

    A separate random stream, so that the rest of a week's data does not depend on it.
    """
    rng = np.random.default_rng([cfg.seed, 5000 + week])
    per_day = np.exp(rng.normal(-DAY_SHOCK_SD**2 / 2, DAY_SHOCK_SD, 7))
    per_route = np.exp(rng.normal(-ROUTE_SHOCK_SD**2 / 2, ROUTE_SHOCK_SD, len(day)))
    return per_route * per_day[day]


def generate_week(cfg: DataConfig, pop: Population, week: int) -> pd.DataFrame:
    """One week of deliveries, in delivery order, with this week's faults applied."""
    rng = np.random.default_rng([cfg.seed, 1000 + week])
    monday = week_start(cfg, week)
    christmas = is_christmas_week(monday)
    n_stops = int(rng.poisson(cfg.stops_per_week * (CHRISTMAS_VOLUME_FACTOR if christmas else 1.0)))

    open_areas = np.flatnonzero(pop.area_open_week <= week)
    lengths = _route_lengths(rng, n_stops)
    n_routes = len(lengths)
    # A route serves one primary area; a fifth of its stops spill into a random open area.
    primary = rng.choice(open_areas, size=n_routes)
    route_of_stop = np.repeat(np.arange(n_routes), lengths)
    stop_index = np.concatenate([np.arange(k) for k in lengths])
    spill = rng.random(len(route_of_stop)) < 0.2
    stop_area = np.where(spill, rng.choice(open_areas, size=len(route_of_stop)), primary[route_of_stop])

    # Customers order from their own area; frequent customers order more often.
    cust = np.empty(len(stop_area), dtype=int)
    for area in np.unique(stop_area):
        slots = np.flatnonzero(stop_area == area)
        members = np.flatnonzero(pop.cust_area == area)
        w = pop.cust_weight[members]
        cust[slots] = rng.choice(members, size=len(slots), p=w / w.sum())

    drivers = rng.integers(0, len(pop.driver_key), n_routes)[route_of_stop]
    tenure = pop.driver_start_tenure[drivers] + week

    day = rng.choice(7, size=n_routes, p=[0.17, 0.17, 0.17, 0.17, 0.17, 0.12, 0.03])
    start_minute = rng.integers(8 * 60, 17 * 60, n_routes)
    order_factor = CHRISTMAS_ORDER_FACTOR if christmas else 1.0
    items = 1 + rng.negative_binomial(3, 3 / (3 + 27 * order_factor), len(cust))
    items = np.clip(items, 1, 400)
    boxes = np.clip(np.ceil(items / rng.uniform(8, 14, len(cust))), 1, 60).astype(int)
    weight = np.round(np.clip(items * rng.lognormal(np.log(0.55), 0.3, len(cust)), 0.1, 400), 2)
    frozen = rng.random(len(cust)) < (0.45 if christmas else 0.3)

    # Walk each route: arrival = previous arrival + service + a drive of 3-9 minutes.
    drive_s = rng.uniform(180, 540, len(cust))
    hour_guess = (start_minute[route_of_stop] // 60 + stop_index // 6) % 24
    service = true_service_time(pop, cust, drivers, tenure, boxes, frozen, hour_guess, week, rng)
    service = service * route_shocks(cfg, week, day)[route_of_stop]
    offsets = np.zeros(len(cust))
    for r, (lo, hi) in enumerate(zip(np.cumsum(lengths) - lengths, np.cumsum(lengths))):
        seg = service[lo:hi] + drive_s[lo:hi]
        offsets[lo + 1 : hi] = np.cumsum(seg)[:-1]
    base = pd.Timestamp(monday).tz_localize("UTC")
    arrival = (base + pd.to_timedelta(day[route_of_stop], unit="D")
               + pd.to_timedelta(start_minute[route_of_stop], unit="m")
               + pd.to_timedelta(np.round(offsets), unit="s"))

    # The measurement: geofence faults and missing values.
    measured = service.copy()
    u = rng.random(len(cust))
    measured = np.where(u < FAULT_SHORT_P, rng.uniform(0, 12, len(cust)), measured)
    measured = np.where(
        (u >= FAULT_SHORT_P) & (u < FAULT_SHORT_P + FAULT_LONG_P), rng.uniform(3000, 9000, len(cust)), measured
    )
    measured = np.where(rng.random(len(cust)) < MISSING_LABEL_P, np.nan, np.round(measured, 1))
    floor = pop.cust_floor[cust].copy()
    floor[(rng.random(len(cust)) < MISSING_FLOOR_P) & (pop.cust_building[cust] != "house")] = np.nan
    elevator = pop.cust_elevator[cust].copy()
    elevator[rng.random(len(cust)) < MISSING_ELEVATOR_P] = np.nan

    area_idx = pop.cust_area[cust]
    frame = pd.DataFrame({
        "delivery_id": [f"D{week:03d}-{i:05d}" for i in range(len(cust))],
        "route_id": [f"R{week:03d}-{r:04d}" for r in route_of_stop],
        "stop_index": stop_index.astype("int64"),
        "delivered_at": arrival,
        "customer_key": pop.cust_key[cust],
        "area_id": pop.area_id[area_idx],
        "area_type": pop.area_type[area_idx],
        "building_type": pop.cust_building[cust],
        "floor": floor,
        "has_elevator": elevator,
        "n_items": items.astype("int64"),
        "n_boxes": boxes.astype("int64"),
        "weight_kg": weight,
        "has_frozen": frozen,
        "driver_key": pop.driver_key[drivers],
        "driver_tenure_weeks": tenure.astype("int64"),
        "planned_service_s": 0.0,
        "service_time_s": measured,
    })
    frame["planned_service_s"] = BusinessLogicModel().predict(frame)
    # Duplicated records: the same event delivered twice by the telematics feed.
    dupes = frame.loc[rng.random(len(frame)) < DUPLICATE_P]
    frame = pd.concat([frame, dupes]).sort_values(["delivered_at", "delivery_id"], kind="stable")
    return frame.reset_index(drop=True)[list(COLUMN_NAMES)]


def batch_name(cfg: DataConfig, week: int) -> str:
    return f"week_{week:03d}_{week_start(cfg, week).isoformat()}"


def generate(cfg: DataConfig, weeks: range | None = None):
    """Yield (batch_name, frame) for each requested week; the population is built once."""
    pop = build_population(cfg)
    for week in weeks if weeks is not None else range(cfg.weeks):
        yield batch_name(cfg, week), generate_week(cfg, pop, week)
