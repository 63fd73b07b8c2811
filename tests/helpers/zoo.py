"""One small representative of every torchvision classification family.

Each model is built with ``weights=None`` at the smallest input size its family
accepts, its BatchNorm statistics re-estimated on real photographs bundled with
scikit-image, and heads that torchvision initialises to zero (ViT) re-initialised,
so that its gradients are those of a plausible network rather than of a fresh one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import Tensor
from torch import nn

from captum_robust.datasets._silhouette import _load_texture
from helpers.models import small_vit

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "camera")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 10


class Normalized(nn.Module):
    """ImageNet normalisation in front of the network, so inputs stay in [0, 1]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[], nn.Module]
    size: int
    # Path (inside the torchvision network) of the layer Grad-CAM explains.
    cam_layer: str
    # Path of the pool that feeds the classifier, or None where there is none.
    classifier_pool: str | None


FAMILIES = (
    Family(
        "resnet", lambda: tvm.resnet18(num_classes=NUM_CLASSES), 32, "layer4", "avgpool"
    ),
    Family(
        "vgg_bn",
        lambda: tvm.vgg11_bn(num_classes=NUM_CLASSES),
        32,
        "features.27",
        # A fixed 7x7 grid that the classifier reads cell by cell: refused.
        None,
    ),
    Family(
        "squeezenet",
        lambda: tvm.squeezenet1_1(num_classes=NUM_CLASSES),
        64,
        "features.12",
        "classifier.3",
    ),
    Family(
        "densenet",
        lambda: tvm.densenet121(num_classes=NUM_CLASSES),
        32,
        "features.denseblock3",
        None,
    ),
    Family(
        "googlenet",
        lambda: tvm.googlenet(
            num_classes=NUM_CLASSES, aux_logits=False, init_weights=True
        ),
        32,
        "inception4e",
        "avgpool",
    ),
    Family(
        "inception_v3",
        lambda: tvm.inception_v3(
            num_classes=NUM_CLASSES, aux_logits=False, init_weights=True
        ),
        75,
        "Mixed_6e",
        "avgpool",
    ),
    Family(
        "mobilenet_v2",
        lambda: tvm.mobilenet_v2(num_classes=NUM_CLASSES),
        32,
        "features.14",
        None,
    ),
    Family(
        "mobilenet_v3",
        lambda: tvm.mobilenet_v3_small(num_classes=NUM_CLASSES),
        32,
        "features.8",
        "avgpool",
    ),
    Family(
        "efficientnet",
        lambda: tvm.efficientnet_b0(num_classes=NUM_CLASSES),
        32,
        "features.5",
        "avgpool",
    ),
    Family(
        "regnet",
        lambda: tvm.regnet_y_400mf(num_classes=NUM_CLASSES),
        32,
        "trunk_output.block3",
        "avgpool",
    ),
    Family(
        "shufflenet_v2",
        lambda: tvm.shufflenet_v2_x0_5(num_classes=NUM_CLASSES),
        32,
        "stage3",
        None,
    ),
    Family(
        "convnext",
        lambda: tvm.convnext_tiny(num_classes=NUM_CLASSES),
        32,
        "features.5",
        "avgpool",
    ),
    # The last block's patch outputs never reach the class token; its attention input
    # does (as pytorch-grad-cam explains ViTs through the last block's first norm).
    Family(
        "vit",
        lambda: small_vit(NUM_CLASSES),
        32,
        "encoder.layers.encoder_layer_1.ln_1",
        None,
    ),
    Family(
        "swin", lambda: tvm.swin_t(num_classes=NUM_CLASSES), 32, "features.5", "avgpool"
    ),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)


def photos(size: int, n: int = len(PHOTOS)) -> Tensor:
    """(n, 3, size, size) crops of bundled photographs, in [0, 1]."""
    images = []
    for name in PHOTOS[:n]:
        img = _load_texture(name)
        side = min(img.shape[1:])
        img = img[:, :side, :side]
        images.append(F.interpolate(img[None], size=(size, size), mode="area")[0])
    return torch.stack(images)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, images: Tensor) -> None:
    """Re-estimate BatchNorm running statistics on ``images`` (cumulative average)."""
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    # Augmented views make the statistics less specific to six images.
    model(images)
    model(images.flip(-1))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


_CACHE: dict[str, nn.Module] = {}


def build(family: Family) -> nn.Module:
    """The family's model (normalising wrapper included), in eval mode; a fresh copy."""
    if family.name not in _CACHE:
        torch.manual_seed(0)
        net = family.build()
        model = Normalized(net)
        recalibrate_batch_norm(model, photos(family.size))
        _CACHE[family.name] = model.eval()
    return copy.deepcopy(_CACHE[family.name])


def submodule(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(f"net.{path}")


def snapshot(model: nn.Module) -> dict[str, object]:
    """Everything about a model that library calls must leave as it was."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "types": [type(m) for m in model.modules()],
    }


_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def assert_untouched(
    model: nn.Module, before: dict[str, object], *, training_step: bool = False
) -> None:
    """``training_step``: the running statistics of normalisation layers may move,
    as in any training step in train mode; everything else must stay."""
    after = snapshot(model)
    assert after["modes"] == before["modes"], "module modes changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad changed"
    assert after["grads"] == before["grads"], ".grad fields changed"
    assert after["types"] == before["types"], "modules were replaced"
    for key, value in before["state"].items():
        if training_step and key.rsplit(".", 1)[-1] in _RUNNING_STATS:
            continue
        assert torch.equal(after["state"][key], value), f"{key} changed"
