"""Chaos scenarios run for real on tiny data, each in its own child session and temporary workspace.

The three cheapest run in the suite (about 35 s together on two cores). The other three
start a model server, Ray or the whole local stack (1-6 minutes each): they run with
``SERVICETIME_CHAOS_ALL=1``, e.g. ``SERVICETIME_CHAOS_ALL=1 pytest tests/labs/test_chaos_scenarios.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.core.config import load_config
from components.labs import chaos
from tests.conftest import TINY

ALL = os.environ.get("SERVICETIME_CHAOS_ALL") == "1"
expensive = pytest.mark.skipif(not ALL, reason="minutes each: set SERVICETIME_CHAOS_ALL=1")


def _run(name: str, tmp_path: Path) -> chaos.Outcome:
    outcome = chaos.run_scenario(name, load_config(TINY), echo=lambda text: None, root=tmp_path)
    assert outcome.workspace is None and list(tmp_path.iterdir()) == [], "the workspace was not removed"
    return outcome


def _holds(outcome: chaos.Outcome, *expected_checks: str) -> None:
    report = chaos.render_outcome(outcome)
    names = [c.what for c in outcome.checks]
    for what in (*expected_checks, "nothing left running"):
        assert any(n.startswith(what) for n in names), f"no check {what!r}:\n{report}"
    assert outcome.passed, report


@pytest.mark.slow
def test_feed_bug_is_rejected_and_its_rows_kept(tmp_path):
    outcome = _run("feed-bug", tmp_path)
    _holds(outcome, "the run stops at validation", "every row of the bad week is kept in quarantine",
           "the other weeks are accepted")
    # Notebook 8's receipt on this real outcome, as its last cells make it.
    from components.labs.receipts import check_lab

    chaos.save_outcomes([outcome], tmp_path / "lab")
    receipt = check_lab("08", tmp_path / "lab", student="s")
    assert receipt["passed"], receipt["items"]


@pytest.mark.slow
def test_resalted_customer_keys_are_flagged(tmp_path):
    _holds(
        _run("resalted-keys", tmp_path), "the re-salted week is flagged", "normal weeks raise no customer-key message"
    )


@pytest.mark.slow
def test_worse_canary_is_rolled_back(tmp_path):
    _holds(_run("worse-canary", tmp_path), "the good version passes the same canary",
           "the canary of the worse version fails", "the champion alias is back on the good version")


@pytest.mark.slow
@expensive
def test_deleted_champion_file_falls_back_to_the_rules(tmp_path):
    _holds(_run("champion-file-deleted", tmp_path), "after a restart it answers from the rules",
           "and says so: /readyz is 503")


@pytest.mark.slow
@expensive
def test_killed_ray_worker_resumes_from_its_checkpoint(tmp_path):
    _holds(_run("ray-worker-killed", tmp_path), "Ray Train started a new worker",
           "training resumed from its checkpoint", "every epoch ran once")


@pytest.mark.slow
@expensive
def test_s3_gone_fails_fast_and_a_retry_succeeds(tmp_path):
    _holds(_run("s3-gone", tmp_path), "the run fails within", "its error names S3",
           "the retry after the restart succeeds")
