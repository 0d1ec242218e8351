"""The data schema: the one place that names every column, its type, range and categories.

The simulator writes these columns, validation checks them (through a pandera
schema built here), features read them, and the model server's request model
is derived from the planning-time subset. ``SCHEMA_VERSION`` goes into every
dataset manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SCHEMA_VERSION = "1"

Kind = Literal["id", "timestamp", "int", "float", "bool", "category", "string"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    planning: bool = False  # known to the route planner before the stop happens
    doc: str = ""


AREA_TYPES = ("urban", "suburban", "rural")
BUILDING_TYPES = ("house", "apartment", "office")

COLUMNS: tuple[Column, ...] = (
    Column("delivery_id", "string", doc="unique id of the delivery"),
    Column("route_id", "string", planning=True, doc="the van route this stop belongs to"),
    Column("stop_index", "int", min=0, max=200, planning=True, doc="position on the route"),
    Column("delivered_at", "timestamp", planning=True, doc="planned arrival (UTC)"),
    Column("customer_key", "string", planning=True, doc="salted hash of the customer, never a raw id"),
    Column("area_id", "string", planning=True, doc="delivery area"),
    Column("area_type", "category", categories=AREA_TYPES, planning=True),
    Column("building_type", "category", categories=BUILDING_TYPES, planning=True),
    Column("floor", "float", nullable=True, min=0, max=40, planning=True, doc="missing for some stops"),
    Column("has_elevator", "float", nullable=True, min=0, max=1, planning=True, doc="1/0, missing for some stops"),
    Column("n_items", "int", min=1, max=400, planning=True),
    Column("n_boxes", "int", min=1, max=60, planning=True),
    Column("weight_kg", "float", min=0.1, max=400, planning=True),
    Column("has_frozen", "bool", planning=True),
    Column("driver_key", "string", planning=True, doc="salted hash of the driver"),
    Column("driver_tenure_weeks", "int", min=0, max=1000, planning=True),
    Column("planned_service_s", "float", min=0, max=7200, doc="what the business-logic rules planned"),
    Column("service_time_s", "float", nullable=True, min=0, max=36000, doc="geofence measurement: the label"),
)

COLUMN_NAMES = tuple(c.name for c in COLUMNS)
LABEL = "service_time_s"
TIMESTAMP = "delivered_at"
ID = "delivery_id"
PLANNING_COLUMNS = tuple(c.name for c in COLUMNS if c.planning)
NUMERIC_KINDS = ("int", "float", "bool")

# Features the drift monitor and validation compare against the training reference.
DRIFT_FEATURES = ("n_items", "n_boxes", "weight_kg", "floor", "has_frozen")

# A real export may carry the upstream's raw ids; they are hashed into these key columns at the door
# (components/core/keys.py) and never stored.
RAW_ID_COLUMNS = {"customer_id": "customer_key", "driver_id": "driver_key"}


@dataclass(frozen=True)
class FeatureSpec:
    """What the model sees. Numeric features are standardised; categorical ones embedded.

    ``monotone`` inputs enter the network only through non-negative slopes, so more
    boxes, or floors climbed without an elevator, can never lower a prediction. The
    elevator flag itself is seen only through ``no_elevator_floors`` (and whether it
    is missing), so that an elevator can never make a high floor slower.
    """

    categorical: tuple[str, ...] = ("area_id", "area_type", "building_type", "weekday", "hour", "floor_band")
    numeric: tuple[str, ...] = (
        "log_items",
        "boxes",
        "log_weight",
        "has_frozen",
        "floor_filled",
        "floor_missing",
        "elevator_missing",
        "no_elevator_floors",
        "log_tenure",
        "cust_prev_count_log",
        "cust_prev_mean_log_s",
        "cust_is_new",
    )
    monotone: tuple[str, ...] = ("boxes", "no_elevator_floors")
    extra: dict[str, str] = field(default_factory=dict)


FEATURES = FeatureSpec()
