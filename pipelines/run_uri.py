"""Where a run's step records go, when the dashboard user leaves it to the pipeline."""

from __future__ import annotations


def resolve(run_uri: str, job_id: str) -> str:
    """A ``run_uri`` ending in ``/`` is a folder of runs: this run's records go to ``<folder><job id>``.

    The uploaded cluster pipeline defaults to such a folder, so *Create run* with the
    defaults gives every run its own place without anyone typing a path.
    """
    if run_uri.endswith("/"):
        if not job_id or "{{" in job_id:
            raise ValueError(f"run_uri {run_uri!r} is a folder but the run has no job id to name its subfolder")
        return f"{run_uri}{job_id}"
    return run_uri
