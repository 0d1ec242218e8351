"""The network on the request path: ``ServiceTimeNet.forward`` as plain functional calls.

``torch.nn.Module`` calls cost a third of the time for one stop; the same
kernels on the model's own weights give the same numbers without that
overhead. ``components.serving.scorer`` checks this against the module on
probe stops every time a model loads and falls back to the module if they differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.learn.model import TARGET_SCALE_S

MIN_SECONDS = 10.0  # the floor components.learn.model.predict_seconds clamps to


class NotCompilable(ValueError):
    """The bundle's transform or network uses something the compiled path does not implement."""


def functional_forward(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``ServiceTimeNet.forward`` as plain functional calls on the model's own weights."""
    embeddings = getattr(model, "embeddings", None)
    mlp, head = getattr(model, "mlp", None), getattr(model, "head", None)
    if embeddings is None or mlp is None or not isinstance(head, nn.Linear):
        raise NotCompilable(f"unknown network structure: {type(model).__name__}")
    slope = getattr(model, "slope", None)
    if slope is not None and not isinstance(slope, nn.Linear):
        raise NotCompilable("a monotone slope other than nn.Linear")
    rest = getattr(model, "rest_index", None) if slope is not None else None
    monotone = getattr(model, "monotone_index", None)
    if not all(isinstance(e, nn.Embedding) for e in embeddings):
        raise NotCompilable("embeddings other than nn.Embedding")
    tables = [e.weight for e in embeddings]
    layers: list[tuple[str, Any]] = []
    for module in mlp:
        if isinstance(module, nn.Linear):
            layers.append(("linear", (module.weight, module.bias)))
        elif isinstance(module, nn.ReLU):
            layers.append(("relu", None))
        elif isinstance(module, nn.Dropout):
            continue  # identity in eval mode
        else:
            raise NotCompilable(f"layer without a compiled form: {type(module).__name__}")
    head_w, head_b = head.weight, head.bias
    if slope is not None and layers and layers[0][0] == "linear":
        # The first layer reads every numeric input, with zero weights on the monotone ones:
        # the same sums without selecting the other columns on every request.
        w, b = (t.detach() for t in layers[0][1])
        width = w.shape[1] - len(rest) + nums_width(model)
        wide = torch.zeros(w.shape[0], width, dtype=w.dtype)
        n_emb = w.shape[1] - len(rest)
        wide[:, :n_emb] = w[:, :n_emb]
        wide[:, n_emb + rest] = w[:, n_emb:]
        layers[0] = ("linear", (wide, b))
        rest = None
    if slope is not None:  # one matrix product for the head and the slopes
        head_w = torch.cat([head.weight, slope.weight]).detach()
        head_b = torch.cat([head.bias, slope.bias]).detach()

    def forward(cats: torch.Tensor, nums: torch.Tensor) -> torch.Tensor:
        inputs = nums if rest is None else nums.index_select(1, rest)
        x = torch.cat([F.embedding(cats[:, j], w) for j, w in enumerate(tables)] + [inputs], dim=1)
        for kind, params in layers:
            x = F.linear(x, *params) if kind == "linear" else F.relu(x)
        y = F.linear(x, head_w, head_b)
        if slope is None:
            return y.squeeze(1)
        return y[:, 0] + (F.softplus(y[:, 1:]) * nums.index_select(1, monotone)).sum(1)

    return forward


def nums_width(model: torch.nn.Module) -> int:
    """How many numeric inputs the network takes (the monotone ones included)."""
    return len(model.rest_index) + len(model.monotone_index)


def seconds_from(net: Callable, cats: np.ndarray, nums: np.ndarray) -> np.ndarray:
    """``components.learn.model.predict_seconds`` without its per-call ``model.eval()`` and chunking."""
    with torch.inference_mode():
        out = net(torch.from_numpy(cats), torch.from_numpy(nums))
        return (out * TARGET_SCALE_S).clamp(min=MIN_SECONDS).numpy().astype(float)
