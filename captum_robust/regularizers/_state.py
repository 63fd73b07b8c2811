"""What the regularizers draw, and what they touch and put back: one seeded
generator per device, norm-layer statistics, surrogate activations, the module
inside a data-parallel wrapper."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextlib import nullcontext

import torch
from torch import Tensor
from torch import nn

from captum_robust._utils.validation import check_generator
from captum_robust._utils.validation import check_seed
from captum_robust.attr import softplus_activations
from captum_robust.regularizers._checks import check_softplus_beta


class SeededMixin:
    """Owns one generator per device, so successive calls differ but runs repeat."""

    def _init_random(self, seed: object, generator: object) -> None:
        if check_generator(generator) is not None and seed is not None:
            raise ValueError("Give `seed` or `generator`, not both.")
        if seed is None:
            # Drawn from torch's global generator, so torch.manual_seed(...) before
            # construction makes the run reproducible.
            seed = int(torch.randint(0, 2**62, (1,)).item())
        check_seed(seed, non_negative=True)
        self._seed: int = seed  # type: ignore[assignment]
        self._user_generator: torch.Generator | None = generator
        self._generators: dict[torch.device, torch.Generator] = {}

    def manual_seed(self, seed: int) -> None:
        """Restart the random draws from ``seed`` (on every device)."""
        self._init_random(seed, None)

    def _generator_for(self, device: torch.device) -> torch.Generator:
        if self._user_generator is not None:
            return self._user_generator
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self._seed)
            self._generators[device] = gen
        return gen

    def _draw(self, kind: str, like: Tensor, shape: tuple[int, ...] | None = None):
        """Uniform [0, 1) ("rand") or standard normal ("randn") draws like `like`."""
        gen = self._generator_for(like.device)
        shape = tuple(like.shape) if shape is None else shape
        fn = torch.rand if kind == "rand" else torch.randn
        dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else None
        out = fn(shape, generator=gen, device=gen.device, dtype=dtype)
        # A user's generator on another device draws there; the result moves.
        return out.to(device=like.device, dtype=like.dtype)


@contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave the running statistics of norm layers unchanged.

    Only normalisation layers in training mode that track running statistics are
    affected; they still normalise with the batch statistics, as training does.
    Their buffers are swapped for copies for the duration, and the original tensors
    put back: restoring them in place instead would bump their version counters and
    break the backward pass of graphs recorded before (the task loss's).
    """
    swapped = []
    for module in model.modules():
        if (
            isinstance(module, nn.modules.batchnorm._NormBase)
            and module.training
            and module.track_running_stats
        ):
            for name, buf in list(module._buffers.items()):
                if buf is not None:
                    module._buffers[name] = buf.clone()
                    swapped.append((module, name, buf))
    try:
        yield
    finally:
        for module, name, buf in swapped:
            module._buffers[name] = buf


class SmoothMixin:
    """Optional softplus surrogate for the computations that need second derivatives."""

    def _init_smooth(self, softplus_beta: object) -> None:
        self.softplus_beta = check_softplus_beta(softplus_beta)
        self._checked: weakref.WeakSet[nn.Module] = weakref.WeakSet()

    def _smooth(self, model: nn.Module):
        if self.softplus_beta is None:
            return nullcontext(model)
        return self._swapped(model)

    @contextmanager
    def _swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        # The functional-ReLU check wraps one forward pass in a TorchFunctionMode;
        # once per model is enough.
        check = model not in self._checked
        with softplus_activations(
            model, self.softplus_beta, check_functional=check
        ) as smooth:
            yield smooth
        self._checked.add(model)


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The wrapped module of DataParallel / DistributedDataParallel, else the model.

    Inner maximisations involve only local data, so they run on the wrapped module
    and never trigger the wrapper's gradient synchronisation.
    """
    if isinstance(
        model, (nn.DataParallel, nn.parallel.DistributedDataParallel)
    ):  # pragma: no cover - needs a process group
        return model.module
    return model
