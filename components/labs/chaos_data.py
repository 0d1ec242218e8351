"""Chaos scenarios in the data: a feed bug and re-salted customer keys, both caught at validation."""

from __future__ import annotations

import hashlib
import json
import re

from components.labs.chaos_base import (
    Check,
    Context,
    simulated_raw,
)


def _newest_week(root: str) -> tuple[str, str, list[str]]:
    """(name, URI) of the newest batch in the landing zone, and every batch name: a weekly run meets the newest."""
    from components.data.datasets import DatasetStore

    store = DatasetStore(root)
    names = store.raw_batches()
    return names[-1], store.raw_uri(names[-1]), names


def feed_bug(ctx: Context) -> list[Check]:
    """One week's labels arrive in minutes (``components.flows.loop._corrupt``): rejected, every row kept."""
    from components.core.storage import Storage, join
    from components.flows.loop import _corrupt
    from components.steps.ingest import ingest
    from components.steps.validate import ValidationFailed, validate_dataset

    storage = Storage()
    root = simulated_raw(ctx)
    name, uri, _ = _newest_week(root)
    corrupted = _corrupt(storage.read_parquet(uri))
    storage.write_parquet(uri, corrupted)
    ctx.say(f"week {name}: service_time_s divided by 60 (the feed now sends minutes)")
    version = ingest(root, ctx.workspace / "ingest").data_version
    try:
        validate_dataset(ctx.cfg, root, version, ctx.workspace / "validate")
        stopped = Check("the run stops at validation", False, "validate_dataset accepted the dataset")
    except ValidationFailed as exc:
        stopped = Check("the run stops at validation, naming the week and the reason",
                        name in str(exc) and "minutes" in str(exc), str(exc)[:300])
    summary = json.loads((ctx.workspace / "validate" / "validation.json").read_text())
    quarantine = join(summary["quarantine_uri"], f"{name}.parquet")
    kept = storage.read_parquet(quarantine) if storage.exists(quarantine) else None
    same = kept is not None and sorted(kept["delivery_id"]) == sorted(corrupted["delivery_id"])
    others = [b for b in summary["batches"] if b["batch"] != name]
    return [
        stopped,
        Check(
            "every row of the bad week is kept in quarantine",
            same,
            f"{0 if kept is None else len(kept)} of {len(corrupted)} rows in {quarantine}"
            + (f"; reason: {kept['quarantine_reason'].iloc[0][:100]}" if kept is not None and len(kept) else ""),
        ),
        Check(
            "the other weeks are accepted",
            all(b["accepted"] for b in others),
            f"{sum(b['accepted'] for b in others)} of {len(others)} other weeks accepted; "
            f"rows in {summary['rows_in']} = accepted {summary['rows_accepted']} "
            f"+ quarantined {summary['rows_quarantined']}",
        ),
    ]


def _resalt(key: str) -> str:
    """The upstream system rotated its hashing salt: the same customer, a new key."""
    return hashlib.sha256(b"rotated-salt-" + str(key).encode()).hexdigest()[:16]


def _mentions_customers(messages: list[str]) -> list[str]:
    return [m for m in messages if re.search(r"customer[ _]?key|customers", m, re.IGNORECASE)]


def resalted_keys(ctx: Context) -> list[Check]:
    """The newest week's customer keys are re-salted: every customer looks new; validation must say so."""
    from components.core.storage import Storage
    from components.steps.ingest import ingest
    from components.steps.validate import validate_dataset

    storage = Storage()
    root = simulated_raw(ctx)
    name, uri, names = _newest_week(root)
    frame = storage.read_parquet(uri)
    before = set(frame["customer_key"].astype(str))
    earlier = set().union(*(set(storage.read_parquet(uri.replace(name, n))["customer_key"].astype(str))
                            for n in names[:-1]))
    frame["customer_key"] = frame["customer_key"].map(_resalt)
    storage.write_parquet(uri, frame)
    known_before = len(before & earlier) / max(len(before), 1)
    known_after = len(set(frame["customer_key"]) & earlier) / max(len(before), 1)
    ctx.say(f"week {name}: customer keys re-salted; customers seen before: {known_before:.0%} -> {known_after:.0%}")
    version = ingest(root, ctx.workspace / "ingest").data_version
    summary = validate_dataset(ctx.cfg, root, version, ctx.workspace / "validate", fail_on_rejected=False)
    by_batch = {b["batch"]: b for b in summary.batches}
    flagged = _mentions_customers(by_batch[name]["warnings"] + by_batch[name]["errors"])
    false_alarms = {b: _mentions_customers(r["warnings"] + r["errors"]) for b, r in by_batch.items() if b != name}
    false_alarms = {b: m for b, m in false_alarms.items() if m}
    return [
        Check("the re-salted week is flagged with a warning (or error) about customer keys", bool(flagged),
              flagged[0][:200] if flagged else
              f"no message about customer keys; the week's warnings: {by_batch[name]['warnings'][:3]}, "
              f"errors: {by_batch[name]['errors'][:3]} (known customers {known_before:.0%} -> {known_after:.0%})"),
        Check("normal weeks raise no customer-key message", not false_alarms,
              f"{len(by_batch) - 1} normal weeks checked" + (f"; flagged: {false_alarms}" if false_alarms else "")),
    ]
