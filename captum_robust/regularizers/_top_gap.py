"""Top-GAP pooling (Nieradzik et al., 2024): mean of the k largest activations."""

from __future__ import annotations

import torch
from torch import Tensor
from torch import nn
from torchvision.ops import SqueezeExcitation

from captum_robust._utils.validation import check_number

__all__ = ["TopGAP", "global_pool_names", "replace_global_pool", "top_gap_penalty"]


def _check_k(k: object) -> int | float:
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise TypeError(
            "`k` must be an int (number of positions) or a float in (0, 1] "
            f"(share of the spatial positions), got {type(k).__name__}."
        )
    if isinstance(k, int):
        if k < 1:
            raise ValueError(f"`k` must be >= 1, got {k}.")
        return k
    return check_number(k, "k", minimum=0.0, maximum=1.0, strict_minimum=True)


class TopGAP(nn.Module):
    r"""Global pooling by the mean of the ``k`` largest activations of each channel.

    A drop-in replacement for ``nn.AdaptiveAvgPool2d(1)`` (same output shape,
    (B, C, 1, 1) for (B, C, H, W) inputs, (C, 1, 1) for (C, H, W)): Top-GAP
    (Nieradzik et al., 2024) pools each channel of the last feature map by the
    mean of its ``k`` largest values, ``k`` a fixed prior on the object size, so
    that only the ``k`` strongest positions carry the class evidence (and the
    gradients). ``k`` equal to the number of positions is average pooling, ``k=1``
    max pooling.

    Parameters
    ----------
    k : int or float
        An int >= 1 is a number of positions (it must not exceed H * W); a float in
        (0, 1] a share of the H * W positions, rounded, at least 1.
    l1_weight : float, default 0.0
        If > 0, every forward pass in training mode stores
        ``l1_weight * mean(|feature map|)`` in :attr:`penalty`, a sparsity penalty
        on the pooled feature map to add to the loss (see :func:`top_gap_penalty`).
        The paper's description suggests such a penalty without confirming it, so it
        is off by default; the mean over all elements (not the sum) keeps its
        size independent of the feature-map size.

    Attributes
    ----------
    penalty : Tensor or None
        The L1 penalty of the last training-mode forward pass (with its graph), or
        None (``l1_weight == 0``, eval mode, or before the first pass).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.regularizers import TopGAP
    >>> x = torch.arange(8.0).view(1, 2, 2, 2)  # channel 0: 0..3, channel 1: 4..7
    >>> TopGAP(2)(x).flatten().tolist()  # mean of the 2 largest per channel
    [2.5, 6.5]
    >>> TopGAP(1.0)(x).flatten().tolist()  # all positions: average pooling
    [1.5, 5.5]
    >>> pool = TopGAP(0.25, l1_weight=0.5)  # 0.25 * 4 positions: max pooling
    >>> pool(x).flatten().tolist(), float(pool.penalty)  # 0.5 * mean(|x|)
    ([3.0, 7.0], 1.75)
    """

    def __init__(self, k: int | float, *, l1_weight: float = 0.0) -> None:
        super().__init__()
        self.k = _check_k(k)
        self.l1_weight = check_number(l1_weight, "l1_weight", minimum=0.0)
        self.penalty: Tensor | None = None

    def positions(self, num_positions: int) -> int:
        """The number of pooled positions for a map with ``num_positions``.

        Examples
        --------
        >>> from captum_robust.regularizers import TopGAP
        >>> TopGAP(0.1).positions(49), TopGAP(5).positions(49)
        (5, 5)
        """
        if isinstance(self.k, int):
            if self.k > num_positions:
                raise ValueError(
                    f"`k` ({self.k}) exceeds the {num_positions} spatial positions "
                    "of the feature map; use a smaller k or a share in (0, 1]."
                )
            return self.k
        return max(1, min(num_positions, round(self.k * num_positions)))

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor):
            raise TypeError(f"`input` must be a Tensor, got {type(input).__name__}.")
        if not input.is_floating_point():
            raise TypeError(
                f"`input` must be a floating feature map, got {input.dtype}; "
                "the mean of the top k of an integer map is not an integer."
            )
        if input.dim() not in (3, 4):
            raise ValueError(
                "TopGAP expects a (B, C, H, W) or (C, H, W) feature map, got shape "
                f"{tuple(input.shape)}."
            )
        flat = input.flatten(-2)
        n = flat.shape[-1]
        k = self.positions(n)
        if k == n:
            pooled = flat.mean(dim=-1)
        else:
            pooled = flat.topk(k, dim=-1, sorted=False).values.mean(dim=-1)
        if self.l1_weight > 0 and self.training:
            self.penalty = self.l1_weight * input.abs().mean()
        else:
            # A stale penalty would hold the last feature map and its graph.
            self.penalty = None
        return pooled.unsqueeze(-1).unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"k={self.k}, l1_weight={self.l1_weight}"


def _is_global_avg_pool(module: nn.Module) -> bool:
    if type(module) is not nn.AdaptiveAvgPool2d:
        return False
    size = module.output_size
    if isinstance(size, int):
        return size == 1
    return tuple(size) == (1, 1)


def _is_squeeze_excitation(module: nn.Module) -> bool:
    # torchvision's blocks (EfficientNet, MobileNetV3, RegNet, MaxViT) are
    # torchvision.ops.SqueezeExcitation; the name test covers SE blocks written
    # by hand (SELayer, SEModule, SqueezeExcite, ...).
    name = type(module).__name__.lower()
    return (
        isinstance(module, SqueezeExcitation)
        or "squeezeexcit" in name
        or name in ("se", "selayer", "semodule", "seblock")
    )


def _fixed_size_message(name: str, module: nn.Module) -> str:
    return (
        f"`model`.{name} is AdaptiveAvgPool2d(output_size={module.output_size}), "
        "which pools to a fixed grid that the classifier reads cell by cell (VGG "
        "7x7, AlexNet 6x6); it is not a global pool, and at the standard input "
        "size every cell is a single position, so top-k pooling within a cell "
        "would change nothing. Top-GAP needs a classifier on globally pooled "
        "channels: replace both, e.g. `model.avgpool = TopGAP(k)` and "
        "`model.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, "
        "num_classes))` for VGG, and train the new head."
    )


_HINTS = {
    "VisionTransformer": " ViT classifies its class token; it has no pool.",
    "DenseNet": " DenseNet pools with F.adaptive_avg_pool2d in forward().",
    "MobileNetV2": " MobileNetV2 pools with F.adaptive_avg_pool2d in "
    "forward(): use nn.Sequential(model.features, TopGAP(k), "
    "nn.Flatten(1), model.classifier).",
    "ShuffleNetV2": " ShuffleNetV2 pools with x.mean([2, 3]) in forward().",
    "MNASNet": " MNASNet pools with x.mean([2, 3]) in forward(): use "
    "nn.Sequential(model.layers, TopGAP(k), nn.Flatten(1), "
    "model.classifier).",
}


def global_pool_names(model: nn.Module) -> list[str]:
    """Names of the modules :func:`replace_global_pool` replaces by default.

    The classifier's global pool, found without running the model:

    1. ``model.avgpool`` when it is an ``nn.AdaptiveAvgPool2d`` (torchvision's
       convention: ResNet, ResNeXt, Wide ResNet, GoogLeNet, Inception-v3,
       MobileNetV3, EfficientNet, RegNet, ConvNeXt, Swin);
    2. otherwise the only ``nn.AdaptiveAvgPool2d`` with output size 1 outside
       squeeze-excitation blocks (SqueezeNet's ``classifier.3``, MaxViT's
       ``classifier.0``, a model written as one ``nn.Sequential``).

    Raises
    ------
    ValueError
        If there is no such pool (a pool written in ``forward``, a fixed-size
        pool such as VGG's), or several candidates: name them with
        ``replace_global_pool(..., modules=[...])``.

    Examples
    --------
    >>> from torchvision.models import efficientnet_b0
    >>> from captum_robust.regularizers import global_pool_names
    >>> global_pool_names(efficientnet_b0())  # not the 16 squeeze-excitation pools
    ['avgpool']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}."
        )
    if isinstance(model, nn.AdaptiveAvgPool2d):
        raise ValueError(
            "`model` is itself an AdaptiveAvgPool2d; use TopGAP(k) in its place."
        )
    pool = getattr(model, "avgpool", None)
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        if not _is_global_avg_pool(pool):
            raise ValueError(_fixed_size_message("avgpool", pool))
        return ["avgpool"]
    candidates = []
    fixed: list[tuple[str, nn.Module]] = []
    excluded: list[str] = []
    # remove_duplicate=False: a pool instance registered twice is reported twice.
    for name, module in model.named_modules(remove_duplicate=False):
        if any(name == e or name.startswith(e + ".") for e in excluded):
            continue
        if name and _is_squeeze_excitation(module):
            excluded.append(name)
        elif _is_global_avg_pool(module):
            candidates.append(name)
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            fixed.append((name, module))
    if len(candidates) == 1:
        return candidates
    # A wrapper (a normalising module around a torchvision network) names the
    # family of the network inside it.
    family = next(
        (type(m).__name__ for m in model.modules() if type(m).__name__ in _HINTS),
        type(model).__name__,
    )
    if not candidates and len(fixed) == 1:
        raise ValueError(_fixed_size_message(*fixed[0]))
    if not candidates:
        hint = _HINTS.get(family, "")
        raise ValueError(
            f"`model` ({family}) has no nn.AdaptiveAvgPool2d module with output "
            "size 1 outside squeeze-excitation blocks; a pool written in forward() "
            "(F.adaptive_avg_pool2d, torch.mean) cannot be swapped." + hint + " "
            "Insert TopGAP(k) into the model by hand."
        )
    raise ValueError(
        f"`model` ({family}) has several global pools that could feed the "
        f"classifier: {candidates}; choose with replace_global_pool(model, k, "
        "modules=[...])."
    )


def replace_global_pool(
    model: nn.Module,
    k: int | float,
    *,
    l1_weight: float = 0.0,
    modules: list[str] | tuple[str, ...] | None = None,
) -> nn.Module:
    """Replace the global average pool that feeds the classifier by :class:`TopGAP`.

    By default exactly one module is replaced, the one named by
    :func:`global_pool_names`; the global pools inside squeeze-excitation blocks
    (16 in EfficientNet-B0, 9 in MobileNetV3-Small) gate channels, not classes,
    and are left alone. Which module that is, per torchvision family:

    ==============================================  ==============================
    family                                          replaced module
    ==============================================  ==============================
    ResNet, ResNeXt, Wide ResNet, GoogLeNet,         ``avgpool``
    Inception-v3, MobileNetV3, EfficientNet (V1,
    V2), RegNet, ConvNeXt, Swin
    SqueezeNet                                      ``classifier.3`` (it pools the
                                                    class score maps)
    MaxViT                                          ``classifier.0``
    VGG, AlexNet                                    refused: ``avgpool`` pools to
                                                    a 7x7 / 6x6 grid that the
                                                    classifier reads (see below)
    DenseNet, MobileNetV2, ShuffleNetV2, MNASNet    refused: they pool in
                                                    ``forward()``, no module
    ViT                                             refused: no pool (class token)
    ==============================================  ==============================

    For the refused families, build the pooled model by hand, e.g.
    ``nn.Sequential(model.features, TopGAP(k), nn.Flatten(1), model.classifier)``
    for MobileNetV2; for VGG replace ``avgpool`` by ``TopGAP(k)`` and the
    classifier by a ``nn.Linear(512, num_classes)`` head to train.

    The change is made **in place** (like ``model.to``), and the same model is
    returned for chaining; deep-copy it first to keep the original. The model has
    no new parameters, so an optimizer built before stays valid. The replaced
    modules are those that :func:`global_pool_names` lists (or ``modules``).

    Parameters
    ----------
    model : nn.Module
        The network to convert.
    k : int or float
        Positions per channel (int) or share of the positions (float in (0, 1]);
        see :class:`TopGAP`.
    l1_weight : float, default 0.0
        Optional L1 penalty weight; see :class:`TopGAP` and
        :func:`top_gap_penalty`.
    modules : list of str or None, default None
        Names (as in ``model.named_modules()``) of the ``nn.AdaptiveAvgPool2d``
        modules with output size 1 to replace, instead of the default one.

    Returns
    -------
    nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        If the default rule finds no pool or several (see
        :func:`global_pool_names`), or a name in ``modules`` is not a global
        average pool of ``model``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.regularizers import TopGAP, replace_global_pool
    >>> net = nn.Sequential(
    ...     nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...     nn.Linear(8, 2),
    ... )
    >>> replace_global_pool(net, k=4) is net
    True
    >>> net[2]
    TopGAP(k=4, l1_weight=0.0)
    >>> net(torch.rand(2, 3, 6, 6)).shape
    torch.Size([2, 2])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}."
        )
    _check_k(k)
    check_number(l1_weight, "l1_weight", minimum=0.0)
    if modules is None:
        names = global_pool_names(model)
    else:
        names = _check_module_names(model, modules)
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, TopGAP(k, l1_weight=l1_weight))
    return model


def _check_module_names(model: nn.Module, modules: object) -> list[str]:
    if isinstance(modules, str) or not isinstance(modules, (list, tuple)):
        raise TypeError(
            "`modules` must be a list of module names (as in "
            f"model.named_modules()), got {type(modules).__name__}."
        )
    if not modules:
        raise ValueError("`modules` must name at least one module.")
    found = dict(model.named_modules(remove_duplicate=False))
    for name in modules:
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"`modules` must hold non-empty module names, got {name!r}."
            )
        module = found.get(name)
        if module is None:
            raise ValueError(f"`modules`: `model` has no submodule {name!r}.")
        if isinstance(module, nn.AdaptiveAvgPool2d) and not _is_global_avg_pool(module):
            raise ValueError(_fixed_size_message(name, module))
        if not _is_global_avg_pool(module):
            raise ValueError(
                f"`modules`: {name!r} is a {type(module).__name__}, not an "
                "nn.AdaptiveAvgPool2d with output size 1."
            )
    if len(set(modules)) != len(modules):
        raise ValueError(f"`modules` names a module twice: {list(modules)}.")
    return list(modules)


def top_gap_penalty(model: nn.Module) -> Tensor:
    """Sum of the L1 penalties stored by the model's :class:`TopGAP` modules.

    Call it after the forward pass and add it to the loss; it is a zero tensor
    when no module holds a penalty (``l1_weight=0`` or eval mode).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from captum_robust.regularizers import replace_global_pool, top_gap_penalty
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> net = replace_global_pool(net, k=0.5, l1_weight=1e-3)
    >>> out = net(torch.rand(2, 3, 5, 5))
    >>> loss = out.pow(2).mean() + top_gap_penalty(net)
    >>> loss.backward()
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}."
        )
    penalties = [
        m.penalty
        for m in model.modules()
        if isinstance(m, TopGAP) and m.penalty is not None
    ]
    if not penalties:
        param = next(model.parameters(), None)
        device = param.device if param is not None else None
        return torch.zeros((), device=device)
    return torch.stack(penalties).sum() if len(penalties) > 1 else penalties[0]
