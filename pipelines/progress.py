"""A local run that reads like progress: one line per step as it starts and ends, a bar for epochs.

The KFP local runner and Ray write hundreds of lines (executor inputs as JSON,
Ray's start-up); they go to the run's log file. This turns that stream into what
a person wants to see, with each step's headline figure from its step record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK_START = re.compile(r"Executing task '([\w-]+)'")
TASK_END = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
EPOCH = re.compile(r"components\.learn\.train: epoch (\d+)\b.*?val_mae ([\d.]+) s")
# KFP task names -> the step record each writes (pipelines/ops.py -> components/steps).
STEPS = {"ingest-op": "ingest", "validate-op": "validate", "features-op": "features", "tune-op": "tune",
         "train-op": "train",
         "evaluate-op": "evaluate", "register-op": "register", "deploy-op": "deploy", "summary-op": "summary"}
TAIL_LINES = 15  # of a failing step's output, shown on the terminal


def plain(line: str) -> str:
    return ANSI.sub("", line).rstrip("\n")


def headline(step: str, rec: dict | None) -> str:
    """The one figure a person looks for after each step."""
    if not rec:
        return ""
    try:
        if step == "ingest":
            return f"{rec['weeks']} weeks, {rec['rows']:,} rows, data {rec['data_version'][:8]}"
        if step == "validate":
            return (
                f"{rec['rows_accepted']:,} of {rec['rows_in']:,} rows accepted, "
                f"{rec['rows_quarantined']:,} quarantined, {len(rec.get('rejected_batches') or [])} batch(es) rejected"
            )
        if step == "features":
            rows = rec["rows"]
            return (
                ", ".join(f"{k} {v:,}" for k, v in rows.items()) + " rows"
                if isinstance(rows, dict)
                else f"{rows:,} rows"
            )
        if step == "tune":
            if not rec.get("trials"):
                return "off (tune_trials 0)"
            return (f"{rec['trials']} trials, best val MAE {rec['best_val_mae_s']:.1f} s vs defaults "
                    f"{rec['defaults_val_mae_s']:.1f} s ({rec['improvement_pct']:+.1f} %)")
        if step == "train":
            where = f"{rec['num_workers']} Ray workers" if rec["num_workers"] else "in-process"
            tuned = ", tuned settings" if rec.get("tuned_from") else ""
            return (f"best val MAE {rec['best_val_mae_s']:.1f} s (epoch {rec['best_epoch']}), {where}{tuned}, "
                    f"v{rec['model_version']}")
        if step == "evaluate":
            mae = (rec.get("metrics") or {}).get("candidate", {}).get("mae")
            verdict = "BLESSED" if rec.get("blessed") else "not blessed"
            return f"{verdict}" + (f", test MAE {mae:.1f} s" if mae is not None else "")
        if step == "register":
            before = f"v{rec['previous']}" if rec.get("previous") else "none"
            return f"champion {before} -> v{rec['version']}"
        if step == "deploy":
            return f"v{rec['version']} serving, canary MAE {rec['mae']:.1f} s" if "mae" in rec else f"v{rec['version']}"
    except (KeyError, TypeError, ValueError):
        return ""
    return ""


def bar(done: int, total: int, width: int = 24) -> str:
    filled = round(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + "]"


@dataclass
class Progress:
    """Feed it the run's output line by line; it calls ``emit`` with what the terminal shows."""

    emit: Callable[[str, bool], None]  # (text, replaces the current line)
    clock: Callable[[], float]
    read_record: Callable[[str], dict | None]
    epochs: int
    tty: bool = False
    started: dict[str, float] = field(default_factory=dict)
    current: str | None = None
    lines: dict[str, list[str]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    best: float | None = None
    epochs_seen: int = 0

    def feed(self, raw: str) -> None:
        line = plain(raw)
        if self.current:
            self.lines.setdefault(self.current, []).append(line)
        if m := TASK_START.search(line):
            task = m[1]
            self.attempts[task] = self.attempts.get(task, 0) + 1
            self.current, self.started[task] = task, self.clock()
            self.lines[task] = []  # a retry's output replaces the attempt before
            again = f"started again (attempt {self.attempts[task]})" if self.attempts[task] > 1 else "started"
            self.emit(f"  ... {STEPS.get(task, task):<9} {again}", False)
        elif m := TASK_END.search(line):
            self._finish(m[1], m[2])
        elif (m := EPOCH.search(line)) and self.current == "train-op":
            self.epochs_seen = int(m[1]) + 1
            mae = float(m[2])
            self.best = mae if self.best is None else min(self.best, mae)
            text = (f"        epochs {bar(self.epochs_seen, self.epochs)} {self.epochs_seen}/{self.epochs}"
                    f"  val MAE {mae:.1f} s (best {self.best:.1f} s)")
            if self.tty:
                self.emit(text, True)
            elif self.epochs_seen == self.epochs:
                self.emit(text, False)

    def _finish(self, task: str, status: str) -> None:
        step = STEPS.get(task, task)
        seconds = self.clock() - self.started.get(task, self.clock())
        if task == "train-op" and self.tty and self.epochs_seen:
            self.emit("", False)  # end the bar's line
        ok = status == "SUCCESS"
        figure = headline(step, self.read_record(step)) if ok else "see its output below"
        self.emit(f"  {'ok ' if ok else 'FAILED'} {step:<9} {seconds:6.1f} s  {figure}".rstrip(), False)
        if not ok and task not in self.failed:
            self.failed.append(task)
        if ok and task in self.failed:  # a retry made it
            self.failed.remove(task)
        self.current = None

    def failure_tail(self) -> list[str]:
        """The last lines of each failed step's own output (what a person needs to see why)."""
        out = []
        for task in self.failed:
            out.append(f"--- last lines of {STEPS.get(task, task)} ---")
            own = [line for line in self.lines.get(task, []) if not TASK_END.search(line)]
            while own and not own[-1].strip():
                own.pop()
            out += own[-TAIL_LINES:]
        return out
