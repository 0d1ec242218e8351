"""How ML breaks, hands on: break one part of the system on purpose and check that it holds.

Each ``Scenario`` states what it breaks, the outcome the system promises, and the
lecture's and the paper's names for that kind of failure (``scenarios.yaml`` beside this
module is the one table, read by ``scenarios()``: ``servicetime chaos list`` and notebook 8
print it from here). The lecture
names the paper's finding in two kinds: failures "in ML-specific ways" and failures
"in any of the typical large-scale distributed systems ways"; its three qualities
(velocity, validation, versioning) say what catches each one.

``run_scenario`` runs one scenario in a child process of its own session, in a
temporary workspace, with a marker in the environment of everything it starts:
afterwards the group and every marked process are stopped, and "nothing left
running" is itself one of the checks. A scenario returns ``Check``s (what was
expected, whether it held, the evidence); the outcome passes only when all hold.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import yaml

from components.core.config import Config
from components.devstack.process import pids_with_env
from components.labs.chaos_base import LECTURE_AREAS as LECTURE_AREAS
from components.labs.chaos_base import PAPER_KINDS as PAPER_KINDS
from components.labs.chaos_base import QUALITIES as QUALITIES
from components.labs.chaos_base import S3_FAIL_WITHIN_S, Check, Context, Outcome, Scenario
from components.labs.chaos_data import feed_bug, resalted_keys
from components.labs.chaos_runs import ray_worker_killed, s3_gone
from components.labs.chaos_serving import champion_file_deleted, worse_canary

TOKEN_ENV = "SERVICETIME_CHAOS_TOKEN"  # not the pipeline's run token: a run inside a scenario stops only its own
OUTCOME_FILE = "outcome.json"
OUTCOMES_FILE = "chaos-outcomes.json"  # a lab folder's scenarios, read by the lab's receipt
LEFTOVER_GRACE_S = 20.0  # Ray's processes take a while to go after ray.shutdown()
# Leaked into a scenario, these would point it at the user's own MLflow or S3 instead of its workspace.
_FOREIGN_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_S3_ENDPOINT_URL")


TABLE_FILE = Path(__file__).with_name("scenarios.yaml")
_RUNS: tuple[Callable[[Context], list[Check]], ...] = (
    ray_worker_killed, feed_bug, resalted_keys, s3_gone, worse_canary, champion_file_deleted,
)
_FIELDS = ("name", "breaks", "expected", "lecture", "quality", "paper", "minutes_tiny")


@functools.cache
def scenarios() -> tuple[Scenario, ...]:
    """The table's rows in its order, each with the function that runs it (its name with dashes)."""
    rows = yaml.safe_load(TABLE_FILE.read_text()) or []
    runs = {run.__name__.replace("_", "-"): run for run in _RUNS}
    out = []
    for row in rows:
        name = row.get("name")
        if sorted(row) != sorted(_FIELDS):
            raise ValueError(f"{TABLE_FILE.name}: {name}: fields {sorted(row)}, expected {sorted(_FIELDS)}")
        for value, known in ((row["lecture"], LECTURE_AREAS), (row["quality"], QUALITIES),
                             (row["paper"], PAPER_KINDS)):
            if value not in known:
                raise ValueError(f"{TABLE_FILE.name}: {name}: {value!r} is none of {known}")
        if name not in runs:
            raise ValueError(f"{TABLE_FILE.name}: no function runs {name!r}")
        expected = row["expected"].format(s3_fail_within_s=S3_FAIL_WITHIN_S)
        out.append(Scenario(name, row["breaks"], expected, row["lecture"], row["quality"], row["paper"],
                            float(row["minutes_tiny"]), runs.pop(name)))
    if runs:
        raise ValueError(f"{TABLE_FILE.name} has no row for {', '.join(runs)}")
    return tuple(out)


def get(name: str) -> Scenario:
    for scenario in scenarios():
        if scenario.name == name:
            return scenario
    raise KeyError(f"no chaos scenario {name!r}; known: {', '.join(s.name for s in scenarios())}")


TABLE_COLUMNS = ("scenario", "what breaks", "expected", "lecture", "3 Vs", "paper", "min (tiny)")


def table_rows() -> list[tuple[str, ...]]:
    return [(s.name, s.breaks, s.expected, s.lecture, s.quality, s.paper, f"{s.minutes_tiny:g}") for s in scenarios()]


def render_table(markdown: bool = False) -> str:
    """The one table: each scenario against the lecture's and the paper's categories."""
    rows = table_rows()
    if markdown:
        lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    short = [(r[0], r[3], r[4], r[5], r[6]) for r in rows]
    head = ("scenario", "lecture", "3 Vs", "paper", "min (tiny)")
    widths = [max(len(x) for x in col) for col in zip(head, *short)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in short]
    out.append("")
    for s in scenarios():
        out.append(f"{s.name}: breaks {s.breaks}; expected: {s.expected}")
    return "\n".join(out) + "\n"


def save_outcomes(outcomes: list[Outcome], folder: str | Path) -> Path:
    """Write the scenarios' outcomes (every check with its evidence) to ``folder/OUTCOMES_FILE``, atomically."""
    from components.core.storage import write_atomic  # here, not at the top: `chaos list` stays free of pandas

    path = Path(folder) / OUTCOMES_FILE
    write_atomic(path, json.dumps({"scenarios": [o.to_dict() for o in outcomes]}, indent=1).encode())
    return path


def load_outcomes(path: str | Path) -> list[Outcome]:
    """The outcomes ``save_outcomes`` wrote (an empty list for a file without any)."""
    saved = json.loads(Path(path).read_text())
    return [Outcome(o["scenario"], o["expected"], [Check(**c) for c in o["checks"]], o["seconds"], o.get("workspace"))
            for o in saved.get("scenarios", [])]


def render_outcome(outcome: Outcome) -> str:
    lines = [f"{outcome.scenario}: {'PASS' if outcome.passed else 'FAIL'} ({outcome.seconds:.0f} s)",
             f"  expected: {outcome.expected}"]
    for c in outcome.checks:
        lines.append(f"  [{'pass' if c.passed else 'FAIL'}] {c.what}: {c.evidence}")
    if not outcome.passed and outcome.log_tail:
        lines += ["  last lines of its log:", *(f"    {t}" for t in outcome.log_tail)]
    return "\n".join(lines)


# --- isolation: a child process, a marker, a temporary workspace ---------------------------------


def _marked(token: str) -> list[int]:
    """Live pids (other than this one) whose environment carries the scenario's marker."""
    return pids_with_env(TOKEN_ENV, token)


def _describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return f"{pid} {command[:100]}"
    except OSError:
        return str(pid)


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _leftovers(token: str, grace_s: float) -> list[str]:
    """What the scenario left running once it ended (given time to exit), then stopped: the check's evidence."""
    deadline = time.monotonic() + grace_s
    left = _marked(token)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _marked(token)
    described = [_describe(p) for p in left]
    _kill(left, signal.SIGTERM)
    time.sleep(1.0 if left else 0.0)
    _kill(_marked(token), signal.SIGKILL)
    return described


def _child_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV and not k.startswith("AWS_")}
    return {**env, TOKEN_ENV: token, "PYTHONUNBUFFERED": "1", "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true"}


def run_scenario(name: str, cfg: Config, keep: bool = False, timeout_s: float = 2400.0,
                 echo: Callable[[str], None] | None = None, root: str | Path | None = None) -> Outcome:
    """Run one scenario in a child process and a fresh workspace (a temporary folder, under ``root`` if given);
    stop whatever it left; remove the workspace unless ``keep``; return the outcome."""
    scenario = get(name)
    echo = echo or (lambda text: print(text, flush=True))
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix=f"servicetime-chaos-{name}-", dir=root))
    spec = workspace / "spec.json"
    spec.write_text(json.dumps({"scenario": name,
                                "config": cfg.model_copy(update={"workspace": str(workspace)}).model_dump_json()}))
    token = uuid.uuid4().hex
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "components.labs.chaos", "--child", str(spec)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workspace,
                             env=_child_env(token), start_new_session=True)
    timer = threading.Timer(timeout_s, _stop_group, args=(child.pid,))
    timer.start()
    tail: list[str] = []
    try:
        with open(workspace / "scenario.log", "w") as log:
            for line in child.stdout:
                log.write(line)
                tail = [*tail[-19:], line.rstrip("\n")]
                echo(line.rstrip("\n"))
        child.wait()
    finally:
        timer.cancel()
        if child.poll() is None:
            _stop_group(child.pid)
            child.wait()
        left = _leftovers(token, LEFTOVER_GRACE_S)
    seconds = time.monotonic() - started
    result = workspace / OUTCOME_FILE
    if result.exists():
        checks = [Check(**c) for c in json.loads(result.read_text())["checks"]]
    else:
        why = f"timed out after {timeout_s:.0f} s" if seconds >= timeout_s else f"exit status {child.returncode}"
        checks = [Check("the scenario ran to its end", False, f"no outcome: the scenario's process ended ({why})")]
    checks.append(Check("nothing left running", not left and not _marked(token),
                        f"left running and stopped: {left}" if left else "no process of the scenario outlived it"))
    outcome = Outcome(name, scenario.expected, checks, seconds, str(workspace) if keep else None, tail)
    if not keep:
        shutil.rmtree(workspace, ignore_errors=True)
    return outcome


def _child(spec_path: str) -> int:
    """In the child: run the scenario, write its checks (a crash is a failed check, with its reason)."""
    import traceback

    from components.core.config import config_from_json
    from components.core.logs import configure

    configure()
    spec = json.loads(Path(spec_path).read_text())
    cfg = config_from_json(spec["config"])
    scenario = get(spec["scenario"])
    print(f"{scenario.name}: {scenario.breaks}", flush=True)
    print(f"  expected: {scenario.expected}", flush=True)
    try:
        checks = scenario.run(Context(cfg, Path(cfg.workspace)))
    except Exception as exc:  # noqa: BLE001 (a scenario that crashes is a failed check, reported with its reason)
        traceback.print_exc()
        checks = [Check("the scenario ran to its end", False, f"{type(exc).__name__}: {str(exc)[:300]}")]
    Path(cfg.workspace, OUTCOME_FILE).write_text(json.dumps({"checks": [asdict(c) for c in checks]}, indent=1))
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    raise SystemExit(_child(sys.argv[2]))
