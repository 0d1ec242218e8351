"""Pipeline steps: one module per step, each a function of config, URIs and local paths.

The KFP components in ``pipelines/`` are thin wrappers around these; the CLI
and the simulation loop call them directly. Each step records a small JSON
summary under the run's URI so the exit handler can assemble the run summary.
"""

from __future__ import annotations

from typing import Any

from components.storage import Storage, join


def record(run_uri: str | None, step: str, data: dict[str, Any]) -> dict[str, Any]:
    """Write a step's outcome to ``<run_uri>/steps/<step>.json`` (if a run URI is given)."""
    if run_uri:
        Storage().write_json(join(run_uri, "steps", f"{step}.json"), data)
    return data
