"""What one ``perturb`` call runs on: the samples and the checked settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import torch
from torch import Tensor

from captum_robust.attacks._utils import prepare_map_like
from captum_robust.attacks._utils import take


@dataclass(frozen=True)
class CallSettings:
    """The settings of one ``perturb`` call, checked, as the loop runs them.

    ``step_size`` is the effective one (an attack's default derived from
    ``epsilon`` and ``n_steps`` already applied).
    """

    epsilon: float
    step_size: float
    n_steps: int
    restarts: int
    generator: torch.Generator | None
    return_results: bool


@dataclass
class Batch:
    """Per-call tensors of the samples being attacked, all with the same rows."""

    x0: tuple[Tensor, ...]
    is_tuple: bool
    masks: tuple[Tensor, ...] | None
    target: Any
    additional_forward_args: Any
    attribution_kwargs: dict[str, Any]
    label: Tensor
    map0: Tensor
    shape: tuple[int, int] | None
    state: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def of_call(
        cls,
        x0: tuple[Tensor, ...],
        is_tuple: bool,
        masks: tuple[Tensor, ...] | None,
        target: Tensor | None,
        additional_forward_args: Any,
        attribution_kwargs: dict[str, Any],
    ) -> Batch:
        """The samples of a call, before the original attribution: ``label``,
        ``map0`` and ``shape`` are placeholders until the loop sets them."""
        label = torch.zeros(int(x0[0].shape[0]), dtype=torch.long, device=x0[0].device)
        return cls(
            x0=x0,
            is_tuple=is_tuple,
            masks=masks,
            target=target,
            additional_forward_args=additional_forward_args,
            attribution_kwargs=attribution_kwargs,
            label=label,
            map0=torch.empty(0),
            shape=None,
        )

    @property
    def size(self) -> int:
        return int(self.x0[0].shape[0])

    def call(self, model: Callable[..., Any], x: tuple[Tensor, ...]) -> Any:
        """``model`` on ``x`` and the additional forward arguments, as Captum
        calls a model."""
        args = self.additional_forward_args
        if args is None:
            args = ()
        elif not isinstance(args, tuple):
            args = (args,)
        return model(*x, *args)

    def map_like(self, value: object, name: str) -> Tensor:
        """A per-sample map argument (target region or target map) as (B, N),
        shaped like ``map0``."""
        return prepare_map_like(
            value,
            name,
            batch=self.size,
            n_features=int(self.map0.shape[1]),
            shape=self.shape,
            device=self.map0.device,
            dtype=self.map0.dtype,
        )

    def select(self, index: Tensor, host_index: list[int]) -> Batch:
        n = self.size
        return Batch(
            x0=tuple(t.index_select(0, index) for t in self.x0),
            is_tuple=self.is_tuple,
            masks=None
            if self.masks is None
            else tuple(take(m, index, host_index, n) for m in self.masks),
            target=take(self.target, index, host_index, n),
            additional_forward_args=take(
                self.additional_forward_args, index, host_index, n
            ),
            attribution_kwargs={
                key: take(v, index, host_index, n)
                for key, v in self.attribution_kwargs.items()
            },
            label=self.label.index_select(0, index),
            # Before the original attribution is known, map0 is an empty
            # placeholder, which take() leaves as it is.
            map0=take(self.map0, index, host_index, n),
            shape=self.shape,
            state={key: v.index_select(0, index) for key, v in self.state.items()},
        )
