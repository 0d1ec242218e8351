"""The network's one forward pass (functional calls on its layers' weights) behaves as its layers do."""

import torch
from torch import nn

from components.learn.model import NetConfig, ServiceTimeNet


def _by_modules(net: ServiceTimeNet, cats: torch.Tensor, nums: torch.Tensor) -> torch.Tensor:
    """The same network evaluated layer by layer through each module's own call."""
    rest = nums.index_select(1, net.rest_index)
    h = net.mlp(torch.cat([emb(cats[:, j]) for j, emb in enumerate(net.embeddings)] + [rest], dim=1))
    mono = nums.index_select(1, net.monotone_index)
    return net.head(h).squeeze(1) + (nn.functional.softplus(net.slope(h)) * mono).sum(1)


def test_forward_equals_the_layers_drops_out_only_in_training_and_stays_monotone():
    torch.manual_seed(0)
    net = ServiceTimeNet(NetConfig([5, 4], 3, embedding_dim=2, hidden=(16, 8), dropout=0.5, monotone=(1,)))
    cats, nums = torch.tensor([[1, 2], [3, 0], [4, 3]]), torch.randn(3, 3)
    net.train()
    assert not torch.equal(net(cats, nums), net(cats, nums))  # dropout is on while training
    net.eval()
    with torch.no_grad():
        out = net(cats, nums)
        assert torch.equal(out, net(cats, nums))
        torch.testing.assert_close(out, _by_modules(net, cats, nums))
        more = nums.clone()
        more[:, 1] += 1.0
        assert (net(cats, more) >= out).all()  # more boxes never lower a prediction
