"""Raw ids at the door: a batch or an order file that carries the upstream's real ids is hashed before anything
keeps it, with the secret salt (``components.core.keys``); without a salt it is refused, never stored raw."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping

import pandas as pd
import pyarrow.parquet as pq

from components.core.keys import SaltError, pseudonymise, require_salt
from components.core.schema import RAW_ID_COLUMNS
from components.core.storage import to_parquet_bytes

log = logging.getLogger(__name__)


def raw_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in RAW_ID_COLUMNS if c in frame.columns]


def hash_frame(frame: pd.DataFrame, what: str, environ: Mapping[str, str] | None = None) -> pd.DataFrame:
    """``frame`` with each raw id column replaced, in place of it, by its key column; unchanged without raw ids.
    ``what`` names the file in errors."""
    raw = raw_columns(frame)
    if not raw:
        return frame
    salt = require_salt(environ, why=f"{what} carries raw ids ({', '.join(raw)})")
    out = frame.copy()
    for column in raw:
        key = RAW_ID_COLUMNS[column]
        if key in out.columns:
            raise SaltError(f"{what} has both {column} and {key}: which one names the customer is ambiguous")
        out.insert(out.columns.get_loc(column), key, pseudonymise(out.pop(column), salt))
    return out


def hash_batch(name: str, data: bytes, environ: Mapping[str, str] | None = None) -> tuple[bytes, int]:
    """Ingest's door for one landing batch: its bytes with raw ids replaced by their keys, and the rows hashed
    (the bytes unchanged and 0 without raw ids). A batch that cannot be read is left to validation, which
    quarantines it by name."""
    try:
        names = pq.read_schema(io.BytesIO(data)).names
    except Exception as exc:  # any unreadable file: validation rejects it by name, with the reader's error
        log.debug("batch %s unreadable here (%s); validation will report it", name, exc)
        return data, 0
    if not any(c in names for c in RAW_ID_COLUMNS):
        return data, 0
    frame = hash_frame(pd.read_parquet(io.BytesIO(data)), f"landing batch {name}", environ)
    log.info("batch %s: raw ids of %d rows replaced by their salted keys", name, len(frame))
    return to_parquet_bytes(frame), len(frame)
