"""The learned model: embeddings for categories, an MLP for the rest.

Loss: Huber on seconds (delta about 90 s). Squared error would chase the
heavy tail (a customer not at home costs minutes); pure L1 predicts the
median, which sits below the mean of this right-skewed distribution, and that
bias adds up along a route and hurts the arrival-delay KPI. Huber is
quadratic for ordinary errors (close to the mean) and linear for outliers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        return cls(**{**d, "hidden": tuple(d["hidden"])})


class ServiceTimeNet(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(card, min(cfg.embedding_dim, card)) for card in cfg.cardinalities)
        width = sum(e.embedding_dim for e in self.embeddings) + cfg.n_numeric
        layers: list[nn.Module] = []
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)
        nn.init.constant_(self.head.bias, cfg.init_bias_s / TARGET_SCALE_S)

    def forward(self, cats: torch.Tensor, nums: torch.Tensor) -> torch.Tensor:
        """Predicted service time in units of TARGET_SCALE_S."""
        parts = [emb(cats[:, j]) for j, emb in enumerate(self.embeddings)] + [nums]
        return self.head(self.mlp(torch.cat(parts, dim=1))).squeeze(1)


def huber_loss(pred_scaled: torch.Tensor, target_s: torch.Tensor, delta_s: float) -> torch.Tensor:
    return nn.functional.huber_loss(pred_scaled, target_s / TARGET_SCALE_S, delta=delta_s / TARGET_SCALE_S)


@torch.no_grad()
def predict_seconds(model: nn.Module, cats, nums, batch: int = 65536) -> torch.Tensor:
    model.eval()
    cats_t, nums_t = torch.as_tensor(cats), torch.as_tensor(nums)
    out = [model(cats_t[i : i + batch], nums_t[i : i + batch]) for i in range(0, len(cats_t), batch)]
    return (torch.cat(out) * TARGET_SCALE_S).clamp(min=10.0) if out else torch.zeros(0)
