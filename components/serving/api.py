"""The model server's request and response models, derived from the data schema.

A stop carries exactly the planning-time columns of ``components.core.schema``
(``Column.planning``): types, ranges, categories and nullability all come from
there, so a column added to the schema appears in the API without another
edit. Customer history is never sent: the server looks it up in the model's
snapshot by ``customer_key``. Extra fields are refused, as are NaN and
infinity.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from operator import attrgetter
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from components.core.schema import COLUMNS, ID, TIMESTAMP, Column

MAX_STRING = 256  # ids and hashes are short; this bounds what one field can cost
# Planned arrivals outside this range are typing mistakes (and outside what
# pandas timestamps can hold); they are refused rather than scored.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)

PLANNING: tuple[Column, ...] = tuple(c for c in COLUMNS if c.planning)
FIELD_NAMES: tuple[str, ...] = tuple(c.name for c in PLANNING)


def _as_utc(value: dt.datetime) -> dt.datetime:
    """Naive timestamps are UTC (as in the data); aware ones are converted."""
    value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST.date()} and {LATEST.date()}")
    return value


def _bounds(column: Column) -> dict[str, float]:
    return {k: v for k, v in (("ge", column.min), ("le", column.max)) if v is not None}


def field_type(column: Column) -> Any:
    """The pydantic type of one schema column."""
    if column.kind == "category":
        base: Any = Literal[column.categories]  # type: ignore[valid-type]
    elif column.kind == "timestamp":
        base = Annotated[dt.datetime, AfterValidator(_as_utc)]
    elif column.kind == "int":
        base = Annotated[int, Field(**_bounds(column))]
    elif column.kind == "float":
        base = Annotated[float, Field(**_bounds(column))]
    elif column.kind == "bool":
        base = bool
    else:  # id, string
        base = Annotated[str, Field(min_length=1, max_length=MAX_STRING)]
    return base | None if column.nullable else base


def _field(column: Column) -> tuple[Any, Any]:
    default = None if column.nullable else ...
    return field_type(column), Field(default, description=column.doc or None)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


# Optional, not a feature: echoed in the answer and written to the prediction log, so the
# label that arrives a week later can be joined to what was predicted.
DELIVERY_ID_FIELD = (Annotated[str, Field(min_length=1, max_length=MAX_STRING)] | None,
                     Field(None, description="the delivery's id, echoed in the answer and logged for the labels join"))

Stop = create_model(
    "Stop",
    __base__=_Strict,
    __doc__="One planned stop: the planning-time columns of the data schema (and, optionally, its delivery_id).",
    **{c.name: _field(c) for c in PLANNING},
    **{ID: DELIVERY_ID_FIELD},
)


@lru_cache(maxsize=8)
def request_model(max_batch: int) -> type[BaseModel]:
    """``{"stops": [Stop, ...]}`` with 1..max_batch stops."""
    return create_model(
        "PredictRequest",
        __base__=_Strict,
        __doc__=f"A batch of 1 to {max_batch} stops.",
        stops=(list[Stop], Field(min_length=1, max_length=max_batch)),
    )


class Prediction(BaseModel):
    service_time_s: float = Field(description="predicted service time in seconds (the mean: what a route adds up)")
    low_s: float = Field(description="lower end of the calibrated central interval (nominal 80 % by default)")
    high_s: float = Field(description="upper end of the calibrated central interval")
    source: Literal["model", "fallback"] = Field(description="the learned model or the business-logic rules")
    delivery_id: str | None = Field(None, description="the stop's delivery_id, when the request carried one")


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model_version: str | None = Field(description="registry version of the model that answered; null: none loaded")


class ErrorResponse(BaseModel):
    detail: str
    errors: list[dict] = []


_GETTERS = {name: attrgetter(name) for name in FIELD_NAMES}
_GET_ID = attrgetter(ID)


def columns_to_frame(cols: dict[str, Any]) -> pd.DataFrame:
    """Request columns as the DataFrame the library's models take (timestamps back to UTC datetimes)."""
    frame = pd.DataFrame({k: v for k, v in cols.items() if k != TIMESTAMP})
    if TIMESTAMP in cols:
        frame[TIMESTAMP] = pd.to_datetime(np.asarray(cols[TIMESTAMP], dtype=float) * 1e6, unit="us", utc=True)
    return frame


def to_columns(stops: list[BaseModel]) -> dict[str, Any]:
    """Validated stops as columns: numbers as float arrays (None -> NaN), the rest as lists.

    ``delivered_at`` becomes epoch seconds (float, UTC); ``delivery_id`` (a list, None where not
    sent) rides along for the answer and the prediction log, and is no feature.
    """
    out: dict[str, Any] = {}
    for column in PLANNING:
        get = _GETTERS[column.name]
        if column.kind == "timestamp":
            out[column.name] = np.fromiter((get(s).timestamp() for s in stops), dtype=float, count=len(stops))
        elif column.kind in ("int", "float", "bool"):
            out[column.name] = np.array([get(s) for s in stops], dtype=float)
        else:
            out[column.name] = [get(s) for s in stops]
    out[ID] = list(map(_GET_ID, stops))
    return out
