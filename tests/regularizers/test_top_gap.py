"""Top-GAP pooling: values, gradients, the optional L1 penalty, model conversion."""

import pytest
import torch
import torchvision.models as tv
from torch import nn
from torchvision.models import efficientnet_b0
from torchvision.models import mobilenet_v3_small
from torchvision.models import resnet18

from captum_robust.regularizers import TopGAP
from captum_robust.regularizers import global_pool_names
from captum_robust.regularizers import replace_global_pool
from captum_robust.regularizers import top_gap_penalty


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


def test_replace_global_pool_chosen_modules_nested_and_tuple_sizes():
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

    with pytest.raises(ValueError, match=r"several global pools.*heads\.0"):
        replace_global_pool(Net(), 3)  # ambiguous: which head feeds the output?
    net = replace_global_pool(Net(), 3, modules=["heads.0", "heads.1"])
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


@pytest.mark.parametrize(
    "build, squeeze_pools",
    [(efficientnet_b0, 16), (mobilenet_v3_small, 9)],
)
def test_only_the_classifier_pool_is_replaced_in_squeeze_excitation_nets(
    build, squeeze_pools
):
    torch.manual_seed(0)
    model = build(num_classes=5).eval()
    pools = [m for m in model.modules() if type(m) is nn.AdaptiveAvgPool2d]
    assert len(pools) == squeeze_pools + 1
    x = torch.rand(2, 3, 64, 64)  # a 2x2 last feature map
    with torch.no_grad():
        before = model(x)
    assert global_pool_names(model) == ["avgpool"]
    replace_global_pool(model, 1.0)  # k = every position: average pooling
    swapped = [name for name, m in model.named_modules() if isinstance(m, TopGAP)]
    assert swapped == ["avgpool"]
    assert sum(type(m) is nn.AdaptiveAvgPool2d for m in model.modules()) == (
        squeeze_pools
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    # The L1 penalty is the classifier pool's alone.
    model = build(num_classes=5).eval()  # no stochastic depth or dropout
    replace_global_pool(model, 0.5, l1_weight=1.0)
    model.avgpool.train()  # the penalty is recorded in training mode
    features = model.features(x)
    model(x)
    torch.testing.assert_close(top_gap_penalty(model), features.abs().mean())


FAMILIES = {
    "resnet18": ["avgpool"],
    "resnext50_32x4d": ["avgpool"],
    "googlenet": ["avgpool"],
    "inception_v3": ["avgpool"],
    "mobilenet_v3_small": ["avgpool"],
    "efficientnet_b0": ["avgpool"],
    "efficientnet_v2_s": ["avgpool"],
    "regnet_y_400mf": ["avgpool"],
    "convnext_tiny": ["avgpool"],
    "swin_t": ["avgpool"],
    "squeezenet1_1": ["classifier.3"],
    "maxvit_t": ["classifier.0"],
    "vgg11": "7, 7",
    "alexnet": "6, 6",
    "densenet121": "DenseNet pools with F.adaptive_avg_pool2d",
    "mobilenet_v2": "MobileNetV2 pools",
    "shufflenet_v2_x0_5": "ShuffleNetV2 pools",
    "mnasnet0_5": "MNASNet pools",
    "vit_b_16": "ViT classifies its class token",
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_documented_module_of_every_torchvision_family(family):
    kwargs = {"init_weights": False} if family in ("googlenet", "inception_v3") else {}
    # No weights are needed to find a module; RegNet's constructor reads tensor
    # values, so it is built on the CPU.
    device = "cpu" if family.startswith("regnet") else "meta"
    with torch.device(device):
        model = getattr(tv, family)(weights=None, **kwargs)
    expected = FAMILIES[family]
    if isinstance(expected, list):
        assert global_pool_names(model) == expected
        replace_global_pool(model, 0.25)
        assert isinstance(model.get_submodule(expected[0]), TopGAP)
        assert sum(isinstance(m, TopGAP) for m in model.modules()) == 1
    else:
        with pytest.raises(ValueError, match="`model`") as info:
            replace_global_pool(model, 0.25)
        assert expected in str(info.value)


def test_fixed_size_pool_is_refused_with_a_recipe_and_modules_are_checked():
    with torch.device("meta"):
        vgg = tv.vgg11(weights=None)
    with pytest.raises(ValueError, match="classifier"):
        replace_global_pool(vgg, 2, modules=["avgpool"])
    assert type(vgg.avgpool) is nn.AdaptiveAvgPool2d  # untouched
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for modules, error in [
        ("1", TypeError),
        ([], ValueError),
        (["9"], ValueError),
        (["0"], ValueError),  # a Conv2d
        (["1", "1"], ValueError),
        ([1], TypeError),
    ]:
        with pytest.raises(error, match="`modules`"):
            replace_global_pool(net, 2, modules=modules)
    assert type(net[1]) is nn.AdaptiveAvgPool2d


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_top_gap_refuses_non_floating_maps(dtype):
    with pytest.raises(TypeError, match="`input`"):
        TopGAP(2)(torch.ones(1, 2, 3, 3, dtype=dtype))
