"""The attribution and the attacks that ``captum-robust evaluate`` builds from
its options."""

from __future__ import annotations

import argparse
import math
from typing import Any

from torch import Tensor
from torch import nn

from captum_robust.cli._common import CommandError
from captum_robust.cli._models import default_layer
from captum_robust.cli._models import warn_if_single_cell

ATTRIBUTIONS = (
    "saliency",
    "integrated-gradients",
    "input-x-gradient",
    "smoothgrad",
    "grad-cam",
)
ATTACKS = ("topk", "mass-center", "random")


ATTACK_NAMES = {
    "topk": "TopKAttack",
    "mass-center": "MassCenterAttack",
    "random": "RandomAttack",
}


def default_k(height: int, width: int) -> int:
    """The default k of top-k metrics and attacks for ``height x width`` images.

    100 up to 32 px per side, 1000 from 128 px, linear in the side (the square
    root of the pixel count) in between, and never more than a quarter of the
    pixels.

    Examples
    --------
    >>> from captum_robust.cli import default_k
    >>> default_k(28, 28), default_k(32, 32), default_k(64, 64), default_k(224, 224)
    (100, 100, 400, 1000)
    >>> default_k(16, 16)
    64
    """
    side = math.sqrt(height * width)
    fraction = min(max((side - 32) / (128 - 32), 0.0), 1.0)
    k = round(100 + 900 * fraction)
    return max(1, min(k, height * width // 4))


def build_attribution(
    args: argparse.Namespace, model: nn.Module, inner: nn.Module, example: Tensor
) -> tuple[Any, dict[str, Any], str]:
    from captum.attr import InputXGradient
    from captum.attr import IntegratedGradients
    from captum.attr import LayerGradCam
    from captum.attr import Saliency

    from captum_robust.attr import SmoothGrad
    from captum_robust.attr import differentiable

    for option, value, method in (
        ("--ig-steps", args.ig_steps, "integrated-gradients"),
        ("--nt-samples", args.nt_samples, "smoothgrad"),
        ("--noise", args.noise, "smoothgrad"),
        ("--layer", args.layer, "grad-cam"),
    ):
        if value is not None and args.attribution != method:
            raise CommandError(f"{option} applies to {method}, not {args.attribution}")
    if args.attribution == "saliency":
        return Saliency(model), {}, "saliency"
    if args.attribution == "input-x-gradient":
        return InputXGradient(model), {}, "input-x-gradient"
    if args.attribution == "integrated-gradients":
        steps = args.ig_steps or 50
        return IntegratedGradients(model), {"n_steps": steps}, "integrated-gradients"
    if args.attribution == "smoothgrad":
        kwargs = {
            "nt_samples": args.nt_samples or 10,
            "stdevs": 0.15 if args.noise is None else args.noise,
        }
        return SmoothGrad(model, seed=args.seed), kwargs, "smoothgrad"
    name = args.layer if args.layer is not None else default_layer(inner, example)
    try:
        layer = inner.get_submodule(name)
    except AttributeError as exc:
        children = ", ".join(n for n, _ in inner.named_children())
        raise CommandError(
            f"--layer {name!r} is not a module of the model (its top-level modules: "
            f"{children}; nested ones are written like layer4.1)"
        ) from exc
    warn_if_single_cell(inner, layer, name, example)
    # Grad-CAM's layer map is upsampled to the image so that the metrics and the
    # masks compare it pixel by pixel; the ReLU is part of Grad-CAM's definition.
    gradcam = differentiable(LayerGradCam(model, layer), upsample_to_input=True)
    return gradcam, {"relu_attributions": True}, f"grad-cam ({name})"


def build_attack(
    args: argparse.Namespace,
    kind: str,
    model: nn.Module,
    attribution: Any,
    kwargs: dict,
    k: int,
) -> Any:
    from captum_robust.attacks import MassCenterAttack
    from captum_robust.attacks import RandomAttack
    from captum_robust.attacks import TopKAttack

    criterion = args.criterion or (
        "center_shift" if args.attack == "mass-center" else "topk"
    )
    common = dict(
        epsilon=args.epsilon,
        step_size=args.step_size,
        n_steps=args.steps,
        restarts=args.restarts,
        lower_bound=args.lower_bound,
        upper_bound=args.upper_bound,
        attribution_kwargs=kwargs or None,
        seed=args.seed,
    )
    if kind == "random":
        return RandomAttack(
            model, attribution, criterion=criterion, criterion_k=k, **common
        )
    beta = 10.0 if args.surrogate_beta is None else args.surrogate_beta
    surrogate = {"surrogate_beta": None if beta == 0 else beta}
    if kind == "topk":
        return TopKAttack(
            model, attribution, k=k, criterion=criterion, **surrogate, **common
        )
    return MassCenterAttack(
        model, attribution, criterion=criterion, criterion_k=k, **surrogate, **common
    )
