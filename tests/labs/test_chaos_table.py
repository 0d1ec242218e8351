"""The chaos scenarios' registry and table, the runner's clean-up, and notebook 8's static shape."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import nbformat
import pytest
import yaml

from components.labs import chaos

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "08_how_ml_breaks.ipynb"
ISSUE_SCENARIOS = {"ray-worker-killed", "feed-bug", "resalted-keys", "s3-gone", "worse-canary", "champion-file-deleted"}


def test_every_scenario_is_registered_once_with_its_categories():
    names = [s.name for s in chaos.scenarios()]
    assert sorted(names) == sorted(ISSUE_SCENARIOS)
    for s in chaos.scenarios():
        assert s.lecture in chaos.LECTURE_AREAS, s.name
        assert s.quality in chaos.QUALITIES, s.name
        assert s.paper in chaos.PAPER_KINDS, s.name
        assert s.breaks and s.expected and callable(s.run) and s.minutes_tiny > 0
    # Both of the paper's kinds occur: the lesson is that most outages are not ML-specific.
    assert {s.paper for s in chaos.scenarios()} == set(chaos.PAPER_KINDS)


def test_the_table_has_one_row_per_scenario_with_its_categories():
    markdown = chaos.render_table(markdown=True).splitlines()
    assert markdown[0].count("|") == len(chaos.TABLE_COLUMNS) + 1
    rows = markdown[2:]
    assert len(rows) == len(chaos.scenarios())
    for row, s in zip(rows, chaos.scenarios(), strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells == [s.name, s.breaks, s.expected, s.lecture, s.quality, s.paper, f"{s.minutes_tiny:g}"]
    text = chaos.render_table()
    assert all(s.name in text and s.expected in text for s in chaos.scenarios())


def test_get_names_the_known_scenarios():
    assert chaos.get("feed-bug").name == "feed-bug"
    with pytest.raises(KeyError, match="feed-bug"):
        chaos.get("no-such-thing")


def test_an_outcome_without_checks_does_not_pass():
    assert not chaos.Outcome("feed-bug", "x", [], 1.0).passed
    failed = chaos.Outcome("feed-bug", "x", [chaos.Check("a", True, ""), chaos.Check("b", False, "why")], 1.0)
    assert not failed.passed and "[FAIL] b: why" in chaos.render_outcome(failed)


def test_chaos_list_prints_the_table(capsys):
    from components.cli.main import main

    assert main(["chaos", "list", "--markdown"]) == 0
    assert capsys.readouterr().out == chaos.render_table(markdown=True)


def test_leftovers_are_found_by_their_marker_and_stopped():
    token = uuid.uuid4().hex
    proc = subprocess.Popen(["sleep", "60"], env={**os.environ, chaos.TOKEN_ENV: token}, start_new_session=True)
    try:
        left = chaos._leftovers(token, grace_s=0.5)
        assert len(left) == 1 and left[0].startswith(f"{proc.pid} sleep")
        proc.wait(5)
        assert chaos._marked(token) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_clean_scenario_leaves_no_leftovers():
    token = uuid.uuid4().hex
    started = time.monotonic()
    assert chaos._leftovers(token, grace_s=5.0) == []
    assert time.monotonic() - started < 2.0  # nothing to wait for


def _cells(kind: str) -> list[str]:
    return [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == kind]


def test_notebook_opens_with_what_where_how_long_and_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown"
    for words in ("What it teaches", "Where it runs", "How long"):
        assert words in nb.cells[0].source
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "WORKSPACE" in tagged[0].source and "CONFIG" in tagged[0].source


def test_notebook_runs_every_scenario_and_prints_the_table_from_the_library():
    code = "\n".join(_cells("code"))
    assert "render_table(markdown=True)" in code
    for s in chaos.scenarios():
        assert f'"{s.name}"' in code, f"notebook 8 never runs {s.name}"
    # One source of truth: the notebook's prose does not restate the table's categories by hand.
    prose = "\n".join(_cells("markdown"))
    assert not any(s.expected in prose for s in chaos.scenarios())
    for i, source in enumerate(_cells("code")):
        compile(source, f"notebook 8 code cell {i}", "exec")


def test_the_table_file_and_the_runners_must_agree(tmp_path, monkeypatch):
    rows = yaml.safe_load(chaos.TABLE_FILE.read_text())
    cases = {
        "no function runs 'no-such-thing'": rows + [{**rows[0], "name": "no-such-thing"}],
        "has no row for feed-bug": [r for r in rows if r["name"] != "feed-bug"],
        "'weather' is none of": [{**rows[0], "lecture": "weather"}] + rows[1:],
        "fields": [{k: v for k, v in rows[0].items() if k != "paper"}] + rows[1:],
    }
    for message, table in cases.items():
        bad = tmp_path / "scenarios.yaml"
        bad.write_text(yaml.safe_dump(table))
        monkeypatch.setattr(chaos, "TABLE_FILE", bad)
        chaos.scenarios.cache_clear()
        with pytest.raises(ValueError, match=message):
            chaos.scenarios()
    chaos.scenarios.cache_clear()
