"""Top-GAP pooling: values, gradients, the optional L1 penalty, model conversion."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from captum_robust.regularizers import TopGAP, replace_global_pool, top_gap_penalty


def test_mean_of_top_k_per_channel():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, 6, generator=g, dtype=torch.float64)
    for k, kk in [(1, 1), (7, 7), (24, 24), (0.25, 6), (1.0, 24), (0.01, 1)]:
        expected = x.flatten(2).sort(dim=2, descending=True).values[..., :kk].mean(-1)
        out = TopGAP(k)(x)
        assert out.shape == (3, 5, 1, 1)
        torch.testing.assert_close(out[..., 0, 0], expected)
    torch.testing.assert_close(TopGAP(1.0)(x), nn.AdaptiveAvgPool2d(1)(x))
    torch.testing.assert_close(TopGAP(1)(x), nn.AdaptiveMaxPool2d(1)(x))
    assert TopGAP(3)(x[0]).shape == (5, 1, 1)  # unbatched, like AdaptiveAvgPool2d


def test_gradient_reaches_only_the_top_k_positions():
    x = torch.arange(16.0).view(1, 1, 4, 4).requires_grad_(True)
    TopGAP(3)(x).sum().backward()
    expected = torch.zeros(16)
    expected[-3:] = 1 / 3
    torch.testing.assert_close(x.grad.flatten(), expected)
    x64 = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(TopGAP(4), (x64,))


def test_l1_penalty_in_training_mode_only():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    pool = TopGAP(2, l1_weight=0.5)
    pool(x)
    torch.testing.assert_close(pool.penalty, 0.5 * x.abs().mean())
    assert pool.penalty.requires_grad
    pool.eval()(x)
    assert pool.penalty is None
    assert TopGAP(2).train()(x) is not None and TopGAP(2).penalty is None


def test_replace_global_pool_on_resnet18():
    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    params = list(model.parameters())
    out = replace_global_pool(model, 0.25, l1_weight=1e-3)
    assert out is model and isinstance(model.avgpool, TopGAP)
    assert list(model.parameters()) == params  # same parameters: optimizers stay valid
    model.train()
    x = torch.rand(2, 3, 32, 32)  # 1x1 feature map: k = 0.25 of 1 position
    logits = model(x)
    assert logits.shape == (2, 10)
    loss = logits.logsumexp(1).mean() + top_gap_penalty(model)
    loss.backward()
    assert model.fc.weight.grad is not None
    penalty = top_gap_penalty(model)
    assert penalty is model.avgpool.penalty


def test_replace_global_pool_finds_nested_and_tuple_sizes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
            self.heads = nn.ModuleList(
                [nn.AdaptiveAvgPool2d((1, 1)), nn.AdaptiveAvgPool2d(1)]
            )
            self.keep = nn.AdaptiveAvgPool2d(2)  # not global: left alone

        def forward(self, x):
            h = self.body(x)
            return sum(head(h).flatten(1) for head in self.heads)

    net = replace_global_pool(Net(), 3)
    assert all(isinstance(h, TopGAP) for h in net.heads)
    assert net.heads[0] is not net.heads[1]
    assert type(net.keep) is nn.AdaptiveAvgPool2d
    assert net(torch.rand(2, 3, 6, 6)).shape == (2, 4)
    assert top_gap_penalty(net).item() == 0.0


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: TopGAP(0), ValueError, "k"),
        (lambda: TopGAP(1.5), ValueError, "k"),
        (lambda: TopGAP(0.0), ValueError, "k"),
        (lambda: TopGAP("3"), TypeError, "k"),
        (lambda: TopGAP(True), TypeError, "k"),
        (lambda: TopGAP(2, l1_weight=-1.0), ValueError, "l1_weight"),
        (lambda: TopGAP(17)(torch.rand(1, 2, 4, 4)), ValueError, "k"),
        (lambda: TopGAP(2)(torch.rand(2, 8)), ValueError, "TopGAP"),
        (lambda: replace_global_pool(nn.Linear(2, 2), 2), ValueError, "model"),
        (lambda: replace_global_pool("net", 2), TypeError, "model"),
        (lambda: replace_global_pool(nn.AdaptiveAvgPool2d(1), 2), ValueError, "model"),
        (lambda: replace_global_pool(nn.Sequential(nn.Flatten()), -2), ValueError, "k"),
        (lambda: top_gap_penalty(3), TypeError, "model"),
    ],
)
def test_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()
