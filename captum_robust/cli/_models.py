"""The model of ``captum-robust evaluate``: import it, load its weights, wrap
its input normalisation, and find its Grad-CAM layer."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch import nn

from captum_robust.cli._common import CommandError
from captum_robust.cli._common import one_line

# torchvision's ImageNet weights expect inputs normalised with these statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NormalizedModel(nn.Module):
    """``model((x - mean) / std)``: the model seen from pixel space.

    Attacks, their L-inf budget and the [0, 1] bounds, and the attributions all
    work on the pixels; the normalisation a torchvision model expects happens
    inside.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.cli import NormalizedModel
    >>> wrapped = NormalizedModel(nn.Identity(), mean=(0.5,), std=(0.25,))
    >>> wrapped(torch.ones(1, 1, 1, 1)).item()
    2.0
    """

    def __init__(
        self, model: nn.Module, *, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.model = model
        # Buffers follow the model to its device; non-persistent keeps them out of
        # any state dict saved from the wrapper.
        self.register_buffer(
            "mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, inputs: Tensor) -> Tensor:
        return self.model((inputs - self.mean) / self.std)


def default_layer(model: nn.Module, example: Tensor) -> str:
    """Name of the Grad-CAM layer chosen when ``--layer`` is not given.

    The module whose forward pass ends last among those returning a 4-D
    ``(B, C, H, W)`` map, pooling layers left out, before the model's last
    adaptive pooling module (its global pool) runs. A container ends after its
    children, so this is ``layer4`` of a torchvision ResNet and ``features`` of
    VGG, DenseNet, MobileNet, EfficientNet and ConvNeXt: the last convolutional
    block. ``example`` is one batch of inputs, run once without gradients.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.cli import default_layer
    >>> from captum_robust.experiments import demo_model
    >>> default_layer(demo_model(), torch.rand(1, 3, 32, 32))
    '13'
    """
    from torch.nn.modules import pooling

    from captum_robust._utils.modes import eval_mode

    global_pools = (
        pooling.AdaptiveAvgPool1d,
        pooling.AdaptiveAvgPool2d,
        pooling.AdaptiveAvgPool3d,
        pooling.AdaptiveMaxPool1d,
        pooling.AdaptiveMaxPool2d,
        pooling.AdaptiveMaxPool3d,
    )
    pools = tuple(
        cls
        for cls in vars(pooling).values()
        if isinstance(cls, type)
        and issubclass(cls, nn.Module)
        and "Pool" in cls.__name__
    )
    # (name, is a feature map) in the order the forward passes end.
    events: list[tuple[str, bool]] = []
    handles = []

    def hook(name: str, is_map: bool) -> Any:
        def record(module: nn.Module, args: Any, output: Any) -> None:
            if not is_map or (isinstance(output, Tensor) and output.dim() == 4):
                events.append((name, is_map))

        return record

    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, global_pools):
            handles.append(module.register_forward_hook(hook(name, False)))
        elif not isinstance(module, pools):
            handles.append(module.register_forward_hook(hook(name, True)))
    try:
        with torch.no_grad(), eval_mode(model):
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    # Squeeze-excitation blocks pool inside the features: only the last adaptive
    # pool is the global one.
    end = max((i for i, (_, is_map) in enumerate(events) if not is_map), default=None)
    maps = [name for name, is_map in events[:end] if is_map]
    if not maps:
        raise CommandError(
            "--attribution grad-cam: the model has no module with a (B, C, H, W) "
            "output before its global pooling; name the layer with --layer"
        )
    return maps[-1]


def _import_module(module_name: str) -> Any:
    # `python -m` and the interpreter put the current directory first on the path;
    # a console script does not, so `--model mypkg.models:f` would not find mypkg.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        hint = (
            f"; --model is imported like `python -m`: run from the folder that "
            f"holds {module_name.split('.')[0]!r} or add that folder to PYTHONPATH"
        )
        raise CommandError(
            f"cannot import module {module_name!r} ({exc}){hint}"
        ) from exc


def load_model(spec: str, weights: str | None, device: str) -> nn.Module:
    """Build ``package.module:factory`` (called with no arguments), load a state
    dict into it, move it to ``device`` and put it in eval mode.

    The module is imported with the current directory on ``sys.path``, as
    ``python -m`` does. A torchvision factory such as
    ``torchvision.models:resnet18`` builds the model with ``weights=None``
    (random weights) unless ``weights`` names a state dict file.

    Examples
    --------
    >>> from captum_robust.cli import load_model
    >>> model = load_model("captum_robust.experiments:demo_model", None, "cpu")
    >>> type(model).__name__, model.training
    ('Sequential', False)
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(
            f"--model must look like package.module:factory, got {spec!r}"
        )
    module = _import_module(module_name)
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise CommandError(f"{module_name!r} has no callable named {attribute!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise CommandError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise CommandError(f"weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CommandError(
                f"cannot read weights {path}: not a PyTorch state dict file"
            ) from exc
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CommandError(
                f"weights {path} do not fit {spec}: {one_line(exc)}"
            ) from exc
    return model.to(device).eval()


def input_normalization(args: argparse.Namespace, channels: int) -> tuple | None:
    if args.normalize == "imagenet":
        if args.mean is not None or args.std is not None:
            raise CommandError(
                "--normalize imagenet and --mean/--std exclude each other"
            )
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif args.mean is None and args.std is None:
        return None
    elif args.mean is None or args.std is None:
        raise CommandError("--mean and --std go together")
    else:
        mean, std = tuple(args.mean), tuple(args.std)
    for name, values in (("--mean", mean), ("--std", std)):
        if len(values) not in (1, channels):
            raise CommandError(
                f"{name} needs 1 or {channels} values (one per image channel), "
                f"got {len(values)}"
            )
    if not all(s > 0 for s in std):
        raise CommandError(f"--std values must be > 0, got {list(std)}")
    return mean, std


def warn_if_single_cell(
    model: nn.Module, layer: nn.Module, name: str, example: Tensor
) -> None:
    """A 1x1 layer map (ResNet's layer4 on 32 px images) upsamples to a constant
    map, whose rank metrics are undefined."""
    from captum_robust._utils.modes import eval_mode

    shapes = []
    handle = layer.register_forward_hook(
        lambda module, args, output: shapes.append(getattr(output, "shape", None))
    )
    try:
        with torch.no_grad(), eval_mode(model):
            model(example)
    finally:
        handle.remove()
    shape = shapes[-1] if shapes else None
    if shape is not None and len(shape) == 4 and shape[2] * shape[3] == 1:
        print(
            f"captum-robust: warning: Grad-CAM layer {name!r} gives a 1x1 map at "
            f"{example.shape[2]}x{example.shape[3]} px, so every map is constant; "
            "pass an earlier --layer or a larger --image-size",
            file=sys.stderr,
        )
