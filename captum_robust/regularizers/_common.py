"""Machinery shared by the regularizers: checks, random draws, state, gradients."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_robust._utils.memory import HostMemoryGuard
from captum_robust._utils.targets import check_class_indices
from captum_robust._utils.validation import (
    FLOAT_DTYPES,
    check_finite,
    check_number,
    check_positive_int,
)
from captum_robust.attr import softplus_activations

LossFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- checks


def check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}."
        )
    _check_no_synchronised_batch_norm(model)
    return model


def _check_no_synchronised_batch_norm(model: nn.Module) -> None:
    # Every regularizer trains through an input gradient (a double backward).
    # SyncBatchNorm's backward is a hand-written kernel with collective calls,
    # not twice differentiable; fail before the user's backward pass does.
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for name, module in model.named_modules():
        if not (isinstance(module, nn.SyncBatchNorm) and module.training):
            continue
        group = module.process_group or torch.distributed.group.WORLD
        if torch.distributed.get_world_size(group) > 1:
            raise ValueError(
                f"`model` has a SyncBatchNorm layer in training mode ({name}); the "
                "regularizers back-propagate through input gradients, which "
                "SyncBatchNorm does not support. Keep per-rank nn.BatchNorm2d "
                "layers (each rank normalises its own batch), put the layer in "
                "eval mode, or use GroupNorm / LayerNorm."
            )


def check_inputs(inputs: object, name: str = "inputs") -> Tensor:
    if not isinstance(inputs, Tensor):
        raise TypeError(
            f"`{name}` must be a single Tensor of shape (B, ...), got "
            f"{type(inputs).__name__}; the regularizers take models with one input."
        )
    if inputs.dtype not in FLOAT_DTYPES:
        raise TypeError(f"`{name}` must have a floating dtype, got {inputs.dtype}.")
    if inputs.dim() < 2 or inputs.numel() == 0:
        raise ValueError(
            f"`{name}` must have shape (B, ...) with a batch dimension and at least "
            f"one feature, got {tuple(inputs.shape)}."
        )
    check_finite((inputs,), name)
    # The regularizers differentiate with respect to their own copies of the inputs;
    # a graph the caller built up to `inputs` is not extended.
    return inputs.detach()


def check_target(target: object, inputs: Tensor) -> Tensor:
    """``target`` as a LongTensor (B,) on the inputs' device (the shared check)."""
    return check_class_indices(target, inputs.shape[0], inputs.device, name="target")


def check_logits(logits: object, target: Tensor) -> Tensor:
    """The model must return (B, num_classes) scores; `target` must index them."""
    if not isinstance(logits, Tensor):
        raise TypeError(
            "`model` must return a Tensor of class scores, got "
            f"{type(logits).__name__}."
        )
    if logits.dim() != 2 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            "`model` must return class scores of shape (B, num_classes) = "
            f"({target.shape[0]}, C), got {tuple(logits.shape)}."
        )
    num_classes = logits.shape[1]
    if bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(
            f"`target` must hold class indices in [0, {num_classes - 1}] for a model "
            f"with {num_classes} outputs, got values from {int(target.min())} to "
            f"{int(target.max())}."
        )
    return logits


def check_loss_fn(loss_fn: object) -> LossFn:
    if loss_fn is None:
        return F.cross_entropy
    if not callable(loss_fn):
        raise TypeError(
            "`loss_fn` must be callable as loss_fn(logits, target), got "
            f"{type(loss_fn).__name__}."
        )
    return loss_fn  # type: ignore[return-value]


def check_weight(value: object, name: str) -> float:
    return check_number(value, name, minimum=0.0)


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}.")
    return value


def check_softplus_beta(value: object) -> float | None:
    if value is None:
        return None
    return check_number(value, "softplus_beta", minimum=0.0, strict_minimum=True)


def check_mask(mask: object, inputs: Tensor, name: str = "mask") -> Tensor:
    """An object mask (B, H, W), (B, 1, H, W) or shaped like `inputs`, as bool.

    Returned with a shape that broadcasts against `inputs`.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"`{name}` must be a Tensor, got {type(mask).__name__}.")
    if mask.is_complex():
        raise TypeError(f"`{name}` must be bool or real, got {mask.dtype}.")
    if mask.device != inputs.device:
        raise ValueError(
            f"`{name}` is on {mask.device} but `inputs` is on {inputs.device}; move "
            "them to one device."
        )
    shape = tuple(inputs.shape)
    if tuple(mask.shape) == shape:
        out = mask
    elif inputs.dim() >= 3 and tuple(mask.shape) == (shape[0],) + shape[2:]:
        out = mask.unsqueeze(1)
    elif inputs.dim() >= 3 and tuple(mask.shape) == (shape[0], 1) + shape[2:]:
        out = mask
    else:
        spatial = "(B, H, W), (B, 1, H, W) or " if inputs.dim() >= 3 else ""
        raise ValueError(
            f"`{name}` must have shape {spatial}the shape of `inputs` "
            f"{shape}, got {tuple(mask.shape)}."
        )
    if out.dtype != torch.bool:
        if not bool(((out == 0) | (out == 1)).all()):
            raise ValueError(f"`{name}` must be binary (bool or only 0 and 1 values).")
        out = out != 0
    return out


# ------------------------------------------------------------------- random draws


class SeededMixin:
    """Owns one generator per device, so successive calls differ but runs repeat."""

    def _init_random(self, seed: object, generator: object) -> None:
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(
                    "`generator` must be a torch.Generator or None, got "
                    f"{type(generator).__name__}."
                )
            if seed is not None:
                raise ValueError("Give `seed` or `generator`, not both.")
        if seed is None:
            # Drawn from torch's global generator, so torch.manual_seed(...) before
            # construction makes the run reproducible.
            seed = int(torch.randint(0, 2**62, (1,)).item())
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(
                f"`seed` must be an int or None, got {type(seed).__name__}."
            )
        elif seed < 0:
            raise ValueError(f"`seed` must be >= 0, got {seed}.")
        self._seed: int = seed
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


# ------------------------------------------------------------------- model state


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


# ------------------------------------------------------------------- gradients


def target_logit(logits: Tensor, target: Tensor) -> Tensor:
    return logits.gather(1, target.unsqueeze(1)).squeeze(1)


def target_log_prob(logits: Tensor, target: Tensor) -> Tensor:
    return target_logit(logits.log_softmax(dim=1), target)


def target_prob(logits: Tensor, target: Tensor) -> Tensor:
    return target_logit(logits.softmax(dim=1), target)


def per_sample_ce(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits, target, reduction="none")


def flat_sq_norm(t: Tensor) -> Tensor:
    return t.flatten(1).pow(2).sum(dim=1)


def path_alphas(n_steps: int, every: int, like: Tensor) -> Tensor:
    """Right Riemann points k / n_steps for k = every, 2 every, ..., n_steps."""
    k = torch.arange(every, n_steps + 1, every, dtype=torch.float64)
    return (k / n_steps).to(device=like.device, dtype=like.dtype)


PathFn = Callable[[Tensor, Tensor], "Tensor | tuple[Tensor, ...]"]
ContextFactory = Callable[[], AbstractContextManager]


def check_internal_batch_size(value: object) -> int | None:
    if value is None:
        return None
    return check_positive_int(value, "internal_batch_size")


def _path_chunk(
    model: nn.Module,
    start: Tensor,
    end: Tensor,
    alphas: Tensor,
    target: Tensor,
    scalar_fn: PathFn,
    create_graph: bool,
    check: bool,
    want_last: bool,
    leaf_check: Callable[[Tensor, Tensor], None] | None = None,
) -> tuple[Tensor, ...]:
    """Gradient sums over ``alphas`` of each output of ``scalar_fn``, one pass.

    Returns one (b, ...) sum per output of ``scalar_fn`` and, with ``want_last``,
    the first output's per-sample values at the last point (b,).
    """
    p, b = alphas.shape[0], start.shape[0]
    shape = tuple(start.shape[1:])
    view = (p,) + (1,) * start.dim()
    z = start.unsqueeze(0) + alphas.view(view) * (end - start).unsqueeze(0)
    z = z.reshape((p * b,) + shape)
    if not z.requires_grad:
        z = z.detach().requires_grad_(True)
    logits = model(z)
    targets = target.repeat(p)
    if check:
        check_logits(logits, targets)
    if leaf_check is not None:
        leaf_check(logits, z)
    values = scalar_fn(logits, targets)
    outputs = values if isinstance(values, tuple) else (values,)
    sums = []
    for i, out in enumerate(outputs):
        (grad,) = torch.autograd.grad(
            out.sum(),
            z,
            create_graph=create_graph,
            retain_graph=create_graph or want_last or i + 1 < len(outputs),
        )
        sums.append(grad.view((p, b) + shape).sum(dim=0))
    if want_last:
        sums.append(outputs[0].view(p, b)[-1])
    return tuple(sums)


class _PathSpec:
    """What a chunked path pass needs besides its tensor inputs."""

    def __init__(self, model, alphas, target, scalar_fn, rows, check, want_last,
                 recompute, min_block=1):  # fmt: skip
        self.model = model
        self.min_block = min_block
        self.alphas = alphas
        self.target = target
        self.scalar_fn = scalar_fn
        self.rows = rows
        self.check = check
        self.want_last = want_last
        self.recompute = recompute or nullcontext
        self.n_sums = 0  # outputs of scalar_fn, known after the first pass

    def holds_last(self, i1: int) -> bool:
        """Whether a pass ending at point ``i1`` returns the last point's values."""
        return self.want_last and i1 == self.alphas.shape[0]

    def chunks(self, b: int) -> Iterator[tuple[int, int, int, int]]:
        """(s0, s1, i0, i1): samples [s0, s1) at points [i0, i1), sample blocks
        outermost, none of fewer than ``min_block`` samples (unless the batch is)."""
        p = self.alphas.shape[0]
        points = max(1, self.rows // b)
        samples = b if self.rows >= b else max(self.rows, min(b, self.min_block))
        starts = list(range(0, b, samples))
        # A short last block joins the one before it.
        if len(starts) > 1 and b - starts[-1] < self.min_block:
            starts.pop()
        ends = starts[1:] + [b]
        for s0, s1 in zip(starts, ends):
            for i0 in range(0, p, points):
                yield s0, s1, i0, min(p, i0 + points)


def _leaf_check(params: tuple[Tensor, ...]) -> Callable[[Tensor, Tensor], None]:
    """Refuse a model whose output depends on a tensor that requires gradients
    but is not one of its parameters (a closure, torch.func.functional_call):
    the passes would not return its gradient."""
    known = {id(q) for q in params}

    def check(logits: Tensor, points: Tensor) -> None:
        seen = set()
        stack = [logits.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            variable = getattr(node, "variable", None)
            if variable is not None:
                if id(variable) not in known and variable is not points:
                    raise ValueError(
                        "`model` depends on a tensor that requires gradients but "
                        f"is not one of its parameters (shape "
                        f"{tuple(variable.shape)}); the path is processed in "
                        "passes that return parameter gradients only. Register "
                        "it as an nn.Parameter, or pass internal_batch_size >= "
                        "n_steps * batch size (one pass)."
                    )
                continue
            stack.extend(n for n, _ in node.next_functions)

    return check


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


class _ChunkedPath(torch.autograd.Function):
    """Path gradient sums whose double-backward graph is held one pass at a time.

    Forward: every pass computes its gradient sums without a graph. Backward: every
    pass is recomputed with a graph (same random state, under the forward's
    contexts) and back-propagated at once, so its memory is freed before the next.
    Parameters are explicit inputs, so each one's gradient arrives in a single
    accumulation (one DistributedDataParallel hook call per step).
    """

    @staticmethod
    def forward(ctx, spec: _PathSpec, start, end, *params):
        ctx.set_materialize_grads(False)
        ctx.spec = spec
        ctx.n_params = len(params)
        b = start.shape[0]
        device = start.device
        rng: list[tuple[Tensor, Tensor | None]] = []
        blocks: list[list[Tensor]] = []
        current: list[Tensor] | None = None
        block_start = -1
        guard = HostMemoryGuard(device)
        with torch.enable_grad():
            for s0, s1, i0, i1 in spec.chunks(b):
                rng.append(_rng_state(device))
                first = len(rng) == 1
                out = _path_chunk(
                    spec.model, start[s0:s1].detach(), end[s0:s1].detach(),
                    spec.alphas[i0:i1], spec.target[s0:s1], spec.scalar_fn, False,
                    spec.check and first, spec.holds_last(i1),
                    _leaf_check(params) if first and params else None,
                )  # fmt: skip
                spec.n_sums = len(out) - spec.holds_last(i1)
                out = [o.detach() for o in out]
                guard.after_pass()
                if s0 != block_start:
                    block_start, current = s0, out
                    blocks.append(current)
                else:
                    # Only the pass that ends the path carries the last values.
                    sums = [a + o for a, o in zip(current, out[: spec.n_sums])]
                    current[:] = sums + out[spec.n_sums :]
        ctx.rng = rng
        ctx.save_for_backward(start, end, *params)
        if len(blocks) == 1:
            return tuple(blocks[0])
        return tuple(torch.cat(parts, dim=0) for parts in zip(*blocks))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_outputs):
        spec: _PathSpec = ctx.spec
        start, end, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:]
        b = start.shape[0]
        device = start.device
        n = len(grad_outputs)
        param_grads: list[Tensor | None] = [None] * len(params)
        start_parts: list[Tensor] = []
        end_parts: list[Tensor] = []
        block_start = -1
        devices = [device] if device.type == "cuda" else []
        guard = HostMemoryGuard(device)
        for (s0, s1, i0, i1), (cpu_rng, cuda_rng) in zip(spec.chunks(b), ctx.rng):
            rows = slice(s0, s1)
            outs = [None if g is None else g[rows] for g in grad_outputs]
            if spec.want_last and not spec.holds_last(i1):
                outs[-1] = None
            with (
                torch.random.fork_rng(devices=devices),
                torch.enable_grad(),
                spec.recompute(),
            ):
                torch.set_rng_state(cpu_rng)
                if cuda_rng is not None:
                    torch.cuda.set_rng_state(cuda_rng, device)
                s = start[rows].detach().requires_grad_(needs[0])
                e = end[rows].detach().requires_grad_(needs[1])
                result = _path_chunk(
                    spec.model, s, e, spec.alphas[i0:i1], spec.target[rows],
                    spec.scalar_fn, True, False, spec.holds_last(i1),
                )  # fmt: skip
                pairs = [(r, g) for r, g in zip(result[:n], outs) if g is not None]
                wanted = [t for t, need in zip([s, e, *params], needs) if need]
                grads = iter(
                    torch.autograd.grad(
                        [r for r, _ in pairs],
                        wanted,
                        [g for _, g in pairs],
                        allow_unused=True,
                    )
                    if pairs and wanted
                    else [None] * len(wanted)
                )
            full = [next(grads) if need else None for need in needs]
            for j, t in enumerate((s, e)):
                if needs[j] and full[j] is None:  # no path to this input
                    full[j] = torch.zeros_like(t)
            if s0 != block_start:
                block_start = s0
                start_parts.append(full[0])
                end_parts.append(full[1])
            else:
                start_parts[-1] = _add(start_parts[-1], full[0])
                end_parts[-1] = _add(end_parts[-1], full[1])
            for j, g in enumerate(full[2:]):
                param_grads[j] = _add(param_grads[j], g)
            # The pass's graph is gone: fragmentation must not make the peak
            # grow with the number of passes (see the guard).
            del result, pairs
            guard.after_pass()
        return (
            None,
            _cat(start_parts) if needs[0] else None,
            _cat(end_parts) if needs[1] else None,
            *param_grads,
        )


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def path_gradient_sums(
    model: nn.Module,
    start: Tensor,
    end: Tensor,
    alphas: Tensor,
    target: Tensor,
    scalar_fn: PathFn,
    *,
    create_graph: bool,
    internal_batch_size: int | None = None,
    check: bool = False,
    want_last: bool = False,
    recompute: ContextFactory | None = None,
    param_grads: bool = True,
) -> tuple[Tensor, ...]:
    """Sums over the straight path of the input gradients of ``scalar_fn``.

    The points ``z = start + alpha (end - start)`` go through ``model`` in passes
    of at most ``internal_batch_size`` rows (None: all ``P * B`` rows in one
    pass): whole path points per pass when it holds at least ``B`` rows, else
    blocks of samples of one point; with a batch norm in training mode, blocks of
    at least two samples (a last, shorter block joins the one before), since it
    refuses to normalise one sample alone. With ``create_graph`` and more than one pass,
    the forward computation keeps no graph; the backward pass recomputes one pass
    at a time with its double-backward graph (under ``recompute()``: the contexts
    the forward ran in) and frees it before the next, so memory is that of one
    pass. Values and gradients are those of the single pass up to rounding
    (batch normalisation in training mode excepted: it normalises each pass with
    its own statistics). ``param_grads=False`` leaves the parameters out of the
    chunked graph (an inner maximisation that needs gradients for ``end`` only).

    Returns one (B, ...) sum per output of ``scalar_fn`` (a per-row Tensor or a
    tuple of them) and, with ``want_last``, the first output's values at the last
    point, (B,). If neither ``start`` nor ``end`` requires gradients, gradients
    are taken with respect to the path points themselves.
    """
    p, b = alphas.shape[0], start.shape[0]
    rows = p * b if internal_batch_size is None else internal_batch_size
    if rows >= p * b:
        return _path_chunk(
            model, start, end, alphas, target, scalar_fn, create_graph, check,
            want_last,
        )  # fmt: skip
    # A batch norm in training mode refuses a pass of one sample (and would
    # normalise it by itself): its passes hold at least two.
    training_norm = any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
        for m in model.modules()
    )
    spec = _PathSpec(
        model, alphas, target, scalar_fn, rows, check, want_last, recompute,
        min_block=2 if training_norm else 1,
    )  # fmt: skip
    params = [q for q in model.parameters() if q.requires_grad] if param_grads else []
    return _ChunkedPath.apply(spec, start, end, *params)


def integrated_gradients(
    model: nn.Module,
    start: Tensor,
    end: Tensor,
    alphas: Tensor,
    target: Tensor,
    scalar_fn: PathFn,
    *,
    create_graph: bool,
    internal_batch_size: int | None = None,
    check: bool = False,
    want_last: bool = False,
    recompute: ContextFactory | None = None,
    param_grads: bool = True,
) -> tuple[Tensor, ...]:
    """Riemann-sum IG of each output of ``scalar_fn`` from ``start`` to ``end``.

    One (B, ...) attribution per output, then (with ``want_last``) the first
    output's values at the last point; see :func:`path_gradient_sums`.
    """
    out = path_gradient_sums(
        model,
        start,
        end,
        alphas,
        target,
        scalar_fn,
        create_graph=create_graph,
        internal_batch_size=internal_batch_size,
        check=check,
        want_last=want_last,
        recompute=recompute,
        param_grads=param_grads,
    )
    n = len(out) - (1 if want_last else 0)
    scale = (end - start) / alphas.shape[0]
    return tuple(scale * g for g in out[:n]) + out[n:]


def input_gradient(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    scalar_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    create_graph: bool,
    retain_graph: bool | None = None,
    check: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient of ``sum scalar_fn(model(x), target)`` with respect to x.

    An ``x`` that does not require gradients is replaced by a leaf copy; one that
    does (an iterate of an inner maximisation) is used as it is, so the result
    keeps its graph to it. Returns (gradient, logits, leaf); ``check`` validates
    the logits and target.
    """
    leaf = x if x.requires_grad else x.detach().requires_grad_(True)
    logits = model(leaf)
    if check:
        check_logits(logits, target)
    (grad,) = torch.autograd.grad(
        scalar_fn(logits, target).sum(),
        leaf,
        create_graph=create_graph,
        retain_graph=retain_graph,
    )
    return grad, logits, leaf


def run_checked(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    return check_logits(model(x), target)


def describe(obj: Any, **fields: Any) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{type(obj).__name__}({args})"
