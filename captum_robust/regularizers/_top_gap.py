"""Top-GAP pooling (Nieradzik et al., 2024): mean of the k largest activations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from captum_robust._utils.validation import check_number

__all__ = ["TopGAP", "replace_global_pool", "top_gap_penalty"]


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


def replace_global_pool(
    model: nn.Module, k: int | float, *, l1_weight: float = 0.0
) -> nn.Module:
    """Replace every global average pooling module of ``model`` by :class:`TopGAP`.

    Every ``nn.AdaptiveAvgPool2d`` with output size 1 or (1, 1) (torchvision's
    ResNets, ResNeXts, RegNets, MobileNets, EfficientNets, ...: ``model.avgpool``)
    becomes ``TopGAP(k, l1_weight=l1_weight)``, one instance per replaced module.
    The change is made **in place** (like ``model.to``), and the same model is
    returned for chaining; deep-copy it first to keep the original. The model has
    no new parameters, so an optimizer built before stays valid.

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

    Returns
    -------
    nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        If ``model`` has no such module: models that pool with
        ``torch.nn.functional.adaptive_avg_pool2d`` in ``forward`` (torchvision's
        DenseNet) or with ``torch.mean`` cannot be converted by a module swap.

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
    if _is_global_avg_pool(model):
        raise ValueError(
            "`model` is itself an AdaptiveAvgPool2d; use TopGAP(k) in its place."
        )
    replaced = 0
    for parent in list(model.modules()):
        # _modules, not named_children(): the latter skips repeated instances.
        for name, child in list(parent._modules.items()):
            if child is not None and _is_global_avg_pool(child):
                setattr(parent, name, TopGAP(k, l1_weight=l1_weight))
                replaced += 1
    if not replaced:
        raise ValueError(
            f"`model` ({type(model).__name__}) has no nn.AdaptiveAvgPool2d module "
            "with output size 1; models that pool in forward() with "
            "F.adaptive_avg_pool2d or torch.mean cannot be converted. Insert "
            "TopGAP(k) into the model by hand."
        )
    return model


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
