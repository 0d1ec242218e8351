"""The committed compiled pipelines (pipelines/compiled/) match a fresh compile, the SDK version aside:
a change to the DAG, a parameter or a task's environment shows up as a diff to review."""

import difflib

import pytest

from pipelines.golden import GOLDEN_DIR, NAMES, comparable, compile_all


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    return compile_all(tmp_path_factory.mktemp("compiled"))


@pytest.mark.parametrize("name", NAMES)
def test_compiled_pipeline_matches_the_committed_one(fresh, name):
    new = next(p for p in fresh if p.name == name)
    golden = GOLDEN_DIR / name
    assert golden.exists(), f"{golden} missing: run `make golden` and commit it"
    old_lines, new_lines = comparable(golden.read_text()), comparable(new.read_text())
    diff = list(difflib.unified_diff(old_lines, new_lines, f"committed/{name}", f"fresh/{name}", lineterm="", n=2))
    assert not diff, ("the compiled pipeline changed; if intended, run `make golden` and commit the diff:\n"
                      + "\n".join(diff[:80]))


def test_the_comparison_sees_a_change(fresh):
    """A check that cannot fail is no check: one changed default is a difference."""
    text = fresh[0].read_text()
    changed = text.replace("defaultValue: 12.0", "defaultValue: 13.0", 1)
    assert changed != text and comparable(changed) != comparable(text)
    assert comparable("sdkVersion: kfp-2.17.3\na: 1\n") == comparable("sdkVersion: kfp-9.9\na: 1\n")
