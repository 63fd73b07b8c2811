"""Smooth versions of piecewise-linear activations, for second-order gradients.

With ``sp(x) = softplus(beta * x) / beta``, each is ``relu(x) -> sp(x)`` applied to
the identities ``hardtanh(x) = lo + relu(x - lo) - relu(x - hi)``,
``relu6(x) = hardtanh(x, 0, 6)``, ``hardsigmoid(x) = relu6(x + 3) / 6`` and
``hardswish(x) = x hardsigmoid(x)`` (a leaky ReLU keeps its linear part), so it
tends to the original as ``beta -> inf`` and is twice differentiable everywhere.
:func:`~captum_robust.attr.softplus_surrogate` puts them in place of the originals.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torch import nn

from captum_robust._utils.validation import check_number

__all__ = ["LeakySoftplus", "SmoothHardsigmoid", "SmoothHardswish", "SmoothHardtanh"]


def softplus(x: Tensor, beta: float, threshold: float) -> Tensor:
    return F.softplus(x, beta=beta, threshold=threshold)


class LeakySoftplus(nn.Module):
    r"""Smooth version of ``nn.LeakyReLU``.

    .. math::
        f(x) = a\,x + (1 - a)\,\frac{\operatorname{softplus}(\beta x)}{\beta}

    with ``a = negative_slope``. For ``x -> -inf`` the slope tends to ``a``, for
    ``x -> +inf`` to 1, and ``f`` tends to ``LeakyReLU(a)`` as ``beta -> inf``.
    With ``negative_slope=0.1, beta=1`` this is ``0.1 x + 0.9 softplus(x)``, the
    surrogate used by Chen et al. (GTSRB) and Sarkar et al.

    Parameters
    ----------
    negative_slope : float, default 0.01
        Slope ``a`` for negative inputs, as in ``nn.LeakyReLU``.
    beta : float, default 10.0
        Sharpness of the softplus; must be > 0.
    threshold : float, default 20.0
        Above ``beta * x > threshold`` the softplus is computed as the identity, as
        in ``nn.Softplus``.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attr import LeakySoftplus
    >>> act = LeakySoftplus(0.1, beta=1.0)
    >>> x = torch.tensor([-2.0, 0.0, 3.0])
    >>> torch.allclose(act(x), 0.1 * x + 0.9 * torch.nn.functional.softplus(x))
    True
    """

    def __init__(
        self, negative_slope: float = 0.01, beta: float = 10.0, threshold: float = 20.0
    ) -> None:
        super().__init__()
        self.negative_slope = check_number(negative_slope, "negative_slope")
        self.beta = check_number(beta, "beta", minimum=0.0, strict_minimum=True)
        self.threshold = check_number(threshold, "threshold")

    def forward(self, input: Tensor) -> Tensor:
        a = self.negative_slope
        return a * input + (1.0 - a) * softplus(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return (
            f"negative_slope={self.negative_slope}, beta={self.beta}, "
            f"threshold={self.threshold}"
        )


class SmoothHardtanh(nn.Module):
    r"""Smooth version of ``nn.Hardtanh`` (and of ``nn.ReLU6``).

    .. math::
        f(x) = l + \mathrm{sp}(x - l) - \mathrm{sp}(x - h),
        \qquad \mathrm{sp}(x) = \operatorname{softplus}(\beta x) / \beta,

    with ``l = min_val`` and ``h = max_val``: the identity
    ``hardtanh(x) = l + relu(x - l) - relu(x - h)`` with each ReLU replaced by a
    softplus. It tends to ``l`` for ``x -> -inf`` and to ``h`` for ``x -> +inf``,
    and to ``Hardtanh(l, h)`` as ``beta -> inf``.
    ``SmoothHardtanh(0, 6)`` replaces ``nn.ReLU6``.

    Parameters
    ----------
    min_val, max_val : float, default -1.0, 1.0
        The bounds ``l < h``, as in ``nn.Hardtanh``.
    beta : float, default 10.0
        Sharpness of the softplus; must be > 0.
    threshold : float, default 20.0
        As in ``nn.Softplus``.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attr import SmoothHardtanh
    >>> relu6 = SmoothHardtanh(0.0, 6.0, beta=100.0)
    >>> x = torch.tensor([-3.0, 2.0, 9.0])
    >>> torch.allclose(relu6(x), torch.nn.functional.relu6(x), atol=1e-6)
    True
    """

    def __init__(
        self,
        min_val: float = -1.0,
        max_val: float = 1.0,
        beta: float = 10.0,
        threshold: float = 20.0,
    ) -> None:
        super().__init__()
        self.min_val = check_number(min_val, "min_val")
        self.max_val = check_number(max_val, "max_val")
        if not self.max_val > self.min_val:
            raise ValueError(
                f"`max_val` must be > `min_val`, got {self.max_val} <= {self.min_val}."
            )
        self.beta = check_number(beta, "beta", minimum=0.0, strict_minimum=True)
        self.threshold = check_number(threshold, "threshold")

    def forward(self, input: Tensor) -> Tensor:
        return smooth_hardtanh(
            input, self.min_val, self.max_val, self.beta, self.threshold
        )

    def extra_repr(self) -> str:
        return (
            f"min_val={self.min_val}, max_val={self.max_val}, beta={self.beta}, "
            f"threshold={self.threshold}"
        )


def smooth_hardtanh(
    x: Tensor, lo: float, hi: float, beta: float, threshold: float = 20.0
) -> Tensor:
    return lo + softplus(x - lo, beta, threshold) - softplus(x - hi, beta, threshold)


def smooth_hardsigmoid(x: Tensor, beta: float, threshold: float = 20.0) -> Tensor:
    return smooth_hardtanh(x, -3.0, 3.0, beta, threshold).add(3.0).div(6.0)


class SmoothHardsigmoid(nn.Module):
    r"""Smooth version of ``nn.Hardsigmoid``.

    .. math::
        f(x) = \frac{\mathrm{sp}(x + 3) - \mathrm{sp}(x - 3)}{6},
        \qquad \mathrm{sp}(x) = \operatorname{softplus}(\beta x) / \beta,

    i.e. ``hardsigmoid(x) = relu6(x + 3) / 6`` with :class:`SmoothHardtanh` for
    the ``relu6``. MobileNetV3's squeeze-excitation gates use it; unlike
    ``nn.Hardsigmoid`` it has a double backward.

    Parameters
    ----------
    beta : float, default 10.0
        Sharpness of the softplus; must be > 0.
    threshold : float, default 20.0
        As in ``nn.Softplus``.

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attr import SmoothHardsigmoid
    >>> x = torch.tensor([-5.0, 0.0, 1.5, 5.0])
    >>> torch.allclose(SmoothHardsigmoid(beta=100.0)(x), torch.nn.Hardsigmoid()(x))
    True
    """

    def __init__(self, beta: float = 10.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = check_number(beta, "beta", minimum=0.0, strict_minimum=True)
        self.threshold = check_number(threshold, "threshold")

    def forward(self, input: Tensor) -> Tensor:
        return smooth_hardsigmoid(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class SmoothHardswish(SmoothHardsigmoid):
    r"""Smooth version of ``nn.Hardswish``: ``x`` times :class:`SmoothHardsigmoid`.

    .. math::
        f(x) = x\,\frac{\mathrm{sp}(x + 3) - \mathrm{sp}(x - 3)}{6}

    Examples
    --------
    >>> import torch
    >>> from captum_robust.attr import SmoothHardswish
    >>> x = torch.tensor([-5.0, -1.0, 0.5, 5.0])
    >>> torch.allclose(SmoothHardswish(beta=100.0)(x), torch.nn.Hardswish()(x))
    True
    """

    def forward(self, input: Tensor) -> Tensor:
        return input * smooth_hardsigmoid(input, self.beta, self.threshold)
