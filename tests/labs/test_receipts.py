"""Receipts without a lab run: naming, skipping with a reason, an unreachable cluster, collecting."""

from __future__ import annotations

import json

import pytest

from components.labs import receipts


def test_a_lab_is_named_by_number_or_notebook():
    assert receipts.lab_key("4") == receipts.lab_key("evaluation") == receipts.lab_key("04_evaluation.ipynb") == "04"
    with pytest.raises(KeyError, match="no lab"):
        receipts.lab_key("09")


def test_the_cluster_lab_with_nothing_given_skips_everything_and_does_not_pass(tmp_path):
    receipt = receipts.check_lab("07", tmp_path / "absent", student="s")
    assert not receipt["passed"]  # nothing checked is not a pass
    assert {i["result"] for i in receipt["items"]} == {receipts.SKIP}
    assert all("given" in i["reason"] for i in receipt["items"])


def test_an_unreachable_cluster_fails_with_a_reason(tmp_path):
    from components.devstack.process import free_port

    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    receipt = receipts.check_lab("07", tmp_path, student="s", options=receipts.Options(kubeconfig=str(kubeconfig)))
    rayjob = next(i for i in receipt["items"] if i["name"] == "RayJob")
    assert rayjob["result"] == receipts.FAIL and "tunnel" in rayjob["reason"]
    assert not receipt["passed"]


def test_the_chaos_lab_passes_only_when_every_scenario_it_ran_held(tmp_path):
    from components.labs import chaos

    empty = receipts.check_lab("08", tmp_path, student="s")
    assert not empty["passed"] and "no scenario has run" in empty["items"][0]["reason"]
    held = chaos.Outcome("feed-bug", "x", [chaos.Check("the run stops at validation", True, "exit 1")], 12.0)
    broke = chaos.Outcome("s3-gone", "x", [chaos.Check("its error names S3", False, "said: timeout")], 30.0)
    chaos.save_outcomes([held], tmp_path)
    ok = receipts.check_lab("08", tmp_path, student="s")
    assert ok["passed"] and [i["name"] for i in ok["items"]] == ["scenarios run", "scenario feed-bug"]
    assert str(tmp_path / chaos.OUTCOMES_FILE) in ok["files_sha256"]
    chaos.save_outcomes([held, broke], tmp_path)
    failed = receipts.check_lab("08", tmp_path, student="s")
    item = next(i for i in failed["items"] if i["name"] == "scenario s3-gone")
    assert not failed["passed"] and item["result"] == receipts.FAIL and "said: timeout" in item["reason"]
    assert item["found"] == "0 of 1 checks held"


def _receipt(student: str, lab: str, passed: bool, at: str) -> dict:
    item = {"name": "x", "expected": "e", "found": "f", "result": "pass" if passed else "fail",
            "reason": "" if passed else "not done"}
    return {"lab": lab, "notebook": receipts.LABS[lab].notebook, "student": student, "passed": passed,
            "created_at": at, "counts": {"pass": int(passed), "fail": int(not passed), "skip": 0},
            "items": [item], "run_ids": [], "files_sha256": {}}


def test_collect_keeps_each_students_newest_receipt_per_lab(tmp_path):
    receipts.write_receipt(_receipt("ana", "02", False, "2026-01-01T10:00:00Z"), tmp_path / "a")
    receipts.write_receipt(_receipt("ana", "02", True, "2026-01-01T11:00:00Z"), tmp_path / "b")  # redone later
    receipts.write_receipt(_receipt("ben", "01", False, "2026-01-01T09:00:00Z"), tmp_path)
    (tmp_path / "notes.json").write_text('{"not": "a receipt"}')
    table = receipts.collect(tmp_path)
    assert {s: {k: r["passed"] for k, r in labs.items()} for s, labs in table.items()} == \
        {"ana": {"02": True}, "ben": {"01": False}}
    text = receipts.render_collected(table)
    assert f"## ana: 1 of {len(receipts.LABS)} labs pass" in text
    assert "| 01 01_quickstart.ipynb | FAIL | 0/1/0 | x: not done |" in text


def test_the_student_comes_from_the_flag_then_the_environment(monkeypatch):
    monkeypatch.setenv(receipts.STUDENT_ENV, "env-id")
    assert receipts.student_id("flag-id") == "flag-id"
    assert receipts.student_id() == "env-id"
