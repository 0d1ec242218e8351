"""The learned model: embeddings for categories, an MLP for the rest, monotone in boxes.

Loss: Huber on seconds (delta about 90 s). Squared error would chase the
heavy tail (a customer not at home costs minutes) and cost MAE; but Huber,
like L1, lands below the mean of this right-skewed label, and route plans add
predictions up, so that bias makes whole routes late. The calibration fitted
on the validation weeks (``components.learn.calibration``) restores the mean.

Shape: ``out = head(h) + sum_j softplus(slope_j(h)) * x_j`` over the monotone
inputs ``x_j`` (boxes, floors climbed without an elevator), with ``h = mlp(the
other inputs)``: time per box and per stair floor are learned from everything
else, but can never be negative, so more boxes or stairs never lower a prediction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TARGET_SCALE_S = 100.0  # the network works in units of 100 s, so weights stay near 1


@dataclass(frozen=True)
class NetConfig:
    cardinalities: list[int]
    n_numeric: int
    embedding_dim: int = 8
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.05
    init_bias_s: float = 380.0
    monotone: tuple[int, ...] = ()  # indices in the numeric inputs of the monotone features

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        return cls(**{**d, "hidden": tuple(d["hidden"]), "monotone": tuple(d.get("monotone") or ())})


class ServiceTimeNet(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(card, min(cfg.embedding_dim, card)) for card in cfg.cardinalities)
        rest = [i for i in range(cfg.n_numeric) if i not in cfg.monotone]
        self.register_buffer("rest_index", torch.tensor(rest, dtype=torch.long), persistent=False)
        self.register_buffer("monotone_index", torch.tensor(list(cfg.monotone), dtype=torch.long), persistent=False)
        width = sum(e.embedding_dim for e in self.embeddings) + len(rest)
        layers: list[nn.Module] = []
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.kinds = tuple("linear" if isinstance(m, nn.Linear) else "relu" if isinstance(m, nn.ReLU) else "dropout"
                           for m in layers)
        self.head = nn.Linear(width, 1)
        nn.init.constant_(self.head.bias, cfg.init_bias_s / TARGET_SCALE_S)
        self.slope = nn.Linear(width, len(cfg.monotone)) if cfg.monotone else None

    def _weights(self) -> tuple:
        """The layers' own parameter tensors, gathered once: reading them through nn.Module attributes costs
        more than the arithmetic for one stop. Rebuilt if a parameter object was replaced."""
        cached = self.__dict__.get("_cached_weights")
        if cached is None or cached[-1] is not self.head.weight:
            mlp = tuple((kind, m.weight if kind == "linear" else None, m.bias if kind == "linear" else None,
                         getattr(m, "p", 0.0)) for kind, m in zip(self.kinds, self.mlp))
            slope = (self.slope.weight, self.slope.bias) if self.slope is not None else None
            cached = (tuple(e.weight for e in self.embeddings), mlp, self.head.bias, slope, self.head.weight)
            self.__dict__["_cached_weights"] = cached
        return cached

    def forward(self, cats: torch.Tensor, nums: torch.Tensor) -> torch.Tensor:
        """Predicted service time in units of TARGET_SCALE_S.

        The one forward pass, for training and serving alike: functional calls on the layers' own weights."""
        tables, mlp, head_b, slope, head_w = self._weights()
        rest = nums if slope is None else nums.index_select(1, self.rest_index)
        h = torch.cat([F.embedding(cats[:, j], w) for j, w in enumerate(tables)] + [rest], dim=1)
        for kind, w, b, p in mlp:
            if kind == "linear":
                h = F.linear(h, w, b)
            elif kind == "relu":
                h = F.relu(h)
            elif self.training:  # dropout: identity in eval mode, so not even called
                h = F.dropout(h, p, True)
        out = F.linear(h, head_w, head_b).squeeze(1)
        if slope is not None:
            out = out + (F.softplus(F.linear(h, *slope)) * nums.index_select(1, self.monotone_index)).sum(1)
        return out


def drop_categories(cats: torch.Tensor, p: float) -> torch.Tensor:
    """Replace each category by "unseen" (index 0) with probability ``p``: trains the unseen row."""
    if p <= 0:
        return cats
    return cats.masked_fill(torch.rand(cats.shape) < p, 0)


def huber_loss(pred_scaled: torch.Tensor, target_s: torch.Tensor, delta_s: float) -> torch.Tensor:
    return nn.functional.huber_loss(pred_scaled, target_s / TARGET_SCALE_S, delta=delta_s / TARGET_SCALE_S)


MIN_SECONDS = 10.0  # no stop takes less: a floor under the network's output


@torch.no_grad()
def predict_seconds(model: nn.Module, cats, nums, batch: int = 65536) -> torch.Tensor:
    model.eval()
    cats_t, nums_t = torch.as_tensor(cats), torch.as_tensor(nums)
    out = [model(cats_t[i : i + batch], nums_t[i : i + batch]) for i in range(0, len(cats_t), batch)]
    return (torch.cat(out) * TARGET_SCALE_S).clamp(min=MIN_SECONDS) if out else torch.zeros(0)


def seconds_from(model: ServiceTimeNet, cats: np.ndarray, nums: np.ndarray) -> np.ndarray:
    """``predict_seconds`` for a request: an eval-mode model, one batch, no autograd bookkeeping."""
    with torch.inference_mode():
        out = model.forward(torch.from_numpy(cats), torch.from_numpy(nums))
        return (out * TARGET_SCALE_S).clamp(min=MIN_SECONDS).numpy().astype(float)
