"""Behavioural tests: what the trained model must get right whatever its MAE (its sense of the world)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.learn.model import NetConfig, ServiceTimeNet
from components.learn.train import Arrays, train_in_process


def _stops(split, n: int = 150) -> pd.DataFrame:
    return split.test.sample(n, random_state=3).reset_index(drop=True)


def test_more_boxes_never_lowers_the_prediction(tiny_split, tiny_predictor):
    stops = _stops(tiny_split)
    previous = None
    for boxes in (1, 2, 3, 5, 8, 13, 21, 40, 60):
        pred = tiny_predictor.predict(stops.assign(n_boxes=boxes))
        if previous is not None:
            assert (pred >= previous - 1e-6).all(), f"{boxes} boxes predicted shorter than fewer boxes"
        previous = pred


def test_high_floor_without_elevator_is_not_faster(tiny_split, tiny_predictor):
    stops = _stops(tiny_split).assign(building_type="apartment", n_boxes=4)
    for floor in (4.0, 6.0, 9.0):
        with_lift = tiny_predictor.predict(stops.assign(floor=floor, has_elevator=1.0))
        stairs = tiny_predictor.predict(stops.assign(floor=floor, has_elevator=0.0))
        assert (stairs >= with_lift).all(), (
            f"floor {floor}: stairs faster than the elevator for {(stairs < with_lift).sum()} stops"
        )


def test_unseen_area_is_finite_and_near_its_area_type(tiny_split, tiny_predictor):
    stops = _stops(tiny_split, 60)
    vocab = tiny_predictor.transform.vocab["area_id"]
    for area_type in ("urban", "suburban", "rural"):
        known = tiny_split.train.loc[tiny_split.train.area_type == area_type, "area_id"].unique()
        typical = np.median(
            [tiny_predictor.predict(stops.assign(area_id=a, area_type=area_type)) for a in known], axis=0
        )
        unseen = tiny_predictor.predict(stops.assign(area_id="A-opened-yesterday", area_type=area_type))
        assert "A-opened-yesterday" not in vocab and np.isfinite(unseen).all()
        assert np.median(np.abs(unseen / typical - 1)) < 0.10, area_type


def test_driver_id_text_does_not_change_an_unseen_driver(tiny_split, tiny_predictor):
    stops = _stops(tiny_split, 50)
    preds = [tiny_predictor.predict(stops.assign(driver_key=key)) for key in ("new-driver", "x" * 64, "ÆØÅ-7")]
    assert all(np.array_equal(preds[0], p) for p in preds[1:])


def test_category_dropout_trains_the_unseen_row(tiny_split):
    """Without dropout no training row has index 0, so its embedding never moves from its initial value."""
    from components.core.config import TrainConfig

    rng = np.random.default_rng(0)
    n = 2000
    cats = rng.integers(1, 5, (n, 1))
    arrays = Arrays(cats, rng.normal(size=(n, 2)).astype(np.float32), (300 + 40 * cats[:, 0]).astype(np.float32))
    net = NetConfig([5], 2, embedding_dim=4, hidden=(8,))

    def unseen_row(p: float) -> float:
        """How far row 0 moved in training (no weight decay: only gradients move it)."""
        import torch

        cfg = TrainConfig(num_workers=0, epochs=2, batch_size=256, category_dropout=p, seed=5, weight_decay=0.0)
        torch.manual_seed(cfg.seed)  # what train_in_process does first: the same initial table
        start = ServiceTimeNet(net).embeddings[0].weight[0].detach().clone()
        result = train_in_process(arrays, arrays, net, cfg)
        return (result.state_dict["embeddings.0.weight"][0] - start).abs().sum().item()

    assert unseen_row(0.0) == 0.0
    assert unseen_row(0.1) > 0.0
