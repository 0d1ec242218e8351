"""Checkpoints and RayJob results are state dicts + JSON, read back with ``weights_only=True``:
nothing the project loads from disk or S3 can run code."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from components.cluster.train_job import RESULT, load_result, save_result
from components.learn.model import NetConfig, ServiceTimeNet
from components.learn.train import LoopState, TrainResult, load_state, save_state

REPO = Path(__file__).resolve().parents[2]


def _net() -> NetConfig:
    return NetConfig([5, 7], 3, 4, (8,), 0.0, 300.0, ())


def test_no_unsafe_torch_load_in_the_project():
    unsafe = [f"{p.relative_to(REPO)}:{i}" for folder in ("components", "pipelines")
              for p in (REPO / folder).rglob("*.py")
              for i, line in enumerate(p.read_text().splitlines(), 1)
              if re.search(r"weights_only\s*=\s*False", line)]
    assert unsafe == []


def test_loop_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    model = ServiceTimeNet(_net())
    opt = torch.optim.AdamW(model.parameters())
    state = LoopState(epoch=2, model=model.state_dict(), optimizer=opt.state_dict(), best_state=model.state_dict(),
                      best_val=12.5, best_epoch=1, history=[{"epoch": 0, "val_mae_s": 13.0}], samples_seen=99)
    save_state(state, tmp_path / "state.pt")
    back = load_state(tmp_path / "state.pt")
    assert (back.epoch, back.best_val, back.history, back.samples_seen) == (2, 12.5, state.history, 99)
    assert all(torch.equal(back.model[k], v) for k, v in state.model.items())


def test_rayjob_result_is_weights_plus_json(tmp_path):
    model = ServiceTimeNet(_net())
    result = TrainResult(model.state_dict(), _net(), [{"epoch": 0, "val_mae_s": 10.0}], 0, 1.5, 100, 2,
                         extra={"rayjob": "train-x"})
    save_result(result, str(tmp_path))
    assert isinstance(torch.load(tmp_path / RESULT, weights_only=True), dict)
    back = load_result(str(tmp_path))
    assert back.net == result.net and back.history == result.history and back.extra == {"rayjob": "train-x"}
    assert all(torch.equal(back.state_dict[k], v) for k, v in result.state_dict.items())
