"""Small seeded models: each builder seeds torch itself, so a test gets the same
weights wherever it builds one."""

import torch
from torch import nn
from torchvision.models import VisionTransformer


class TinyNet(nn.Module):
    """conv -> act -> conv -> act -> linear on (B, 2, 6, 6) inputs, 3 classes.

    Small enough for float64 gradcheck; the attr tests expect its class name in
    some error messages.
    """

    def __init__(self, act: type[nn.Module] = nn.Softplus) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.act1 = act()
        self.conv2 = nn.Conv2d(3, 4, 3)
        self.act2 = act()
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(h.flatten(1))


def make_net(act: type[nn.Module] = nn.Softplus, dtype=torch.float64) -> TinyNet:
    """A :class:`TinyNet` in eval mode."""
    torch.manual_seed(0)
    return TinyNet(act).to(dtype).eval()


class TinyBNNet(nn.Module):
    """conv -> BatchNorm -> ReLU -> linear on (B, 1, 8, 8) inputs, 3 classes.

    Untrained, for fast contract tests of the attacks; the batch norm is there so
    that buffers left as found are checked too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.bn(self.conv(x))).flatten(1))


def tiny_bn_net() -> TinyBNNet:
    """A :class:`TinyBNNet` in eval mode."""
    torch.manual_seed(0)
    return TinyBNNet().eval()


def tiny_bn_inputs() -> torch.Tensor:
    """Four (1, 8, 8) inputs for :class:`TinyBNNet`, uniform in [0, 1)."""
    return torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def digit_cnn() -> nn.Module:
    """1x16x16 -> 10 classes, for the scikit-learn digits (untrained, not seeded).

    BatchNorm so that buffer preservation is tested.
    """
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


def conv_net(
    in_channels: int,
    width: int,
    side: int,
    classes: int,
    *,
    act: type[nn.Module] = nn.Softplus,
    batch_norm: bool = False,
    seed: int = 0,
) -> nn.Sequential:
    """conv 3x3 (same size) [-> batch norm] -> act -> flatten -> linear, on
    (B, in_channels, side, side) inputs; seeded, float32, in training mode as built.
    """
    torch.manual_seed(seed)
    layers = [nn.Conv2d(in_channels, width, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(width))
    layers += [act(), nn.Flatten(), nn.Linear(width * side * side, classes)]
    return nn.Sequential(*layers)


def bn_cnn(*, conv_before_pool: bool = False) -> nn.Sequential:
    """(B, 2, 6, 6) -> 3 classes, float64, eval mode: conv, batch norm (with
    non-trivial running statistics), in-place ReLU, max pool, conv, ReLU, linear.

    ``conv_before_pool`` puts a 3 -> 3 conv between the first ReLU and the pool.
    """
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(inplace=True)]
    if conv_before_pool:
        layers.append(nn.Conv2d(3, 3, 3, padding=1))
    layers += [nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()]
    m = nn.Sequential(*layers, nn.Linear(4, 3))
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 2.0)
    return m.double().eval()


class TinyConv(nn.Module):
    """conv -> act -> linear on (B, 2, 4, 4) inputs, 3 classes."""

    def __init__(self, act: type[nn.Module] = nn.Softplus) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.act = act()
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def tiny_conv(dtype=torch.float64, act: type[nn.Module] = nn.Softplus) -> nn.Module:
    """A :class:`TinyConv` (in training mode, as built)."""
    torch.manual_seed(0)
    return TinyConv(act).to(dtype)


def tiny_mlp(dtype=torch.float64, act: type[nn.Module] = nn.Softplus) -> nn.Module:
    """Flatten -> Linear(8, 5) -> act -> Linear(5, 3): few parameters, for gradcheck."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 5), act(), nn.Linear(5, 3)).to(
        dtype
    )


def batch(shape=(3, 2, 4, 4), dtype=torch.float64, seed=1):
    """Inputs uniform in [0, 1) of ``shape`` and labels in {0, 1, 2}."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (shape[0],), generator=g)
    return x, y


def tiny_vit() -> VisionTransformer:
    """8x8 inputs, patches of 4, one layer of width 8, 3 classes (float32)."""
    return _vit(8, patch_size=4, num_layers=1, width=8, num_classes=3, head_std=1.0)


def small_vit(num_classes: int = 3) -> VisionTransformer:
    """32x32 inputs, patches of 8, two layers of width 32 (float32)."""
    return _vit(32, patch_size=8, num_layers=2, width=32, num_classes=num_classes)


def _vit(image_size, *, patch_size, num_layers, width, num_classes, head_std=0.1):
    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=width,
        mlp_dim=2 * width,
        num_classes=num_classes,
    )
    # torchvision zero-initialises the head, which would make every gradient zero.
    nn.init.normal_(vit.heads.head.weight, std=head_std)
    return vit


class FunctionalNet(nn.Module):
    """linear 4 -> 4, then ``fn`` (a functional activation the surrogate must
    find) on ``scale`` times its output."""

    def __init__(self, fn, scale: float = 1.0) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.fn = fn
        self.scale = scale

    def forward(self, x):
        return self.fn(self.lin(x) * self.scale)


class TwoInputNet(nn.Module):
    """Two inputs (B, a) and (B, b) summed after their own linear layer, ReLU,
    linear to ``classes``, times the additional argument ``scale``."""

    def __init__(self, a: int, b: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.a = nn.Linear(a, hidden)
        self.b = nn.Linear(b, hidden)
        self.act = nn.ReLU()
        self.out = nn.Linear(hidden, classes)

    def forward(self, x1, x2, scale):
        return self.out(self.act(self.a(x1) + self.b(x2))) * scale


class PooledCNN(nn.Module):
    """conv -> ReLU -> 2x2 average pool -> conv -> ReLU -> linear, on
    (B, 1, side, side) inputs; ``widths`` are the two convolutions' channels.

    Average pools, not max pools: under LRP and its smooth surrogate every unit
    keeps a share of the relevance, which the manipulation tests rely on.
    """

    def __init__(self, widths: tuple[int, int], side: int, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, widths[0], 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(widths[1] * (side // 2) ** 2, classes)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(x)))
        return self.fc(self.relu2(self.conv2(x)).flatten(1))
