"""Integrated gradients along straight paths, in passes of bounded memory.

The path points go through the model in passes; with more than one pass, an
autograd function keeps no graph in the forward computation and recomputes one
pass at a time, with its double-backward graph, in the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from contextlib import AbstractContextManager
from contextlib import nullcontext
from dataclasses import dataclass
from dataclasses import field

import torch
from torch import Tensor
from torch import nn

from captum_robust._utils.memory import HostMemoryGuard
from captum_robust.regularizers._checks import check_class_scores

PathFn = Callable[[Tensor, Tensor], "Tensor | tuple[Tensor, ...]"]
ContextFactory = Callable[[], AbstractContextManager]


def path_alphas(n_steps: int, every: int, like: Tensor) -> Tensor:
    """Right Riemann points k / n_steps for k = every, 2 every, ..., n_steps."""
    k = torch.arange(every, n_steps + 1, every, dtype=torch.float64)
    return (k / n_steps).to(device=like.device, dtype=like.dtype)


@dataclass(eq=False)
class _PathSpec:
    """What a chunked path pass needs besides its tensor inputs."""

    model: nn.Module
    alphas: Tensor
    target: Tensor
    scalar_fn: PathFn
    rows: int
    check: bool
    want_last: bool
    recompute: ContextFactory | None
    min_block: int = 1
    n_sums: int = field(default=0, init=False)  # known after the first pass

    def __post_init__(self) -> None:
        if self.recompute is None:
            self.recompute = nullcontext

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


def _path_chunk(
    spec: _PathSpec,
    start: Tensor,
    end: Tensor,
    alphas: Tensor,
    target: Tensor,
    create_graph: bool,
    check: bool,
    want_last: bool,
    leaf_check: Callable[[Tensor, Tensor], None] | None = None,
) -> tuple[Tensor, ...]:
    """Gradient sums over ``alphas`` of each output of ``spec.scalar_fn``, one pass.

    ``start``, ``end`` and ``target`` are the pass's samples, ``alphas`` its
    points. Returns one (b, ...) sum per output of ``spec.scalar_fn`` and, with
    ``want_last``, the first output's per-sample values at the last point (b,).
    """
    p, b = alphas.shape[0], start.shape[0]
    shape = tuple(start.shape[1:])
    view = (p,) + (1,) * start.dim()
    z = start.unsqueeze(0) + alphas.view(view) * (end - start).unsqueeze(0)
    z = z.reshape((p * b,) + shape)
    if not z.requires_grad:
        z = z.detach().requires_grad_(True)
    logits = spec.model(z)
    targets = target.repeat(p)
    if check:
        check_class_scores(logits, targets)
    if leaf_check is not None:
        leaf_check(logits, z)
    values = spec.scalar_fn(logits, targets)
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
                    spec, start[s0:s1].detach(), end[s0:s1].detach(),
                    spec.alphas[i0:i1], spec.target[s0:s1], False,
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
                    spec, s, e, spec.alphas[i0:i1], spec.target[rows], True, False,
                    spec.holds_last(i1),
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

    The points ``z = start + alpha (end - start)`` go through ``model`` in passes
    of at most ``internal_batch_size`` rows (None: all ``P * B`` rows in one
    pass): whole path points per pass when it holds at least ``B`` rows, else
    blocks of samples of one point; with a batch norm in training mode, blocks of
    at least two samples (a last, shorter block joins the one before), since it
    refuses to normalise one sample alone. With ``create_graph`` and more than one
    pass, the forward computation keeps no graph; the backward pass recomputes one
    pass at a time with its double-backward graph (under ``recompute()``: the
    contexts the forward ran in) and frees it before the next, so memory is that
    of one pass. Values and gradients are those of the single pass up to rounding
    (batch normalisation in training mode excepted: it normalises each pass with
    its own statistics). ``param_grads=False`` leaves the parameters out of the
    chunked graph (an inner maximisation that needs gradients for ``end`` only).

    Returns one (B, ...) attribution per output of ``scalar_fn`` (a per-row Tensor
    or a tuple of them) and, with ``want_last``, the first output's values at the
    last point, (B,). If neither ``start`` nor ``end`` requires gradients,
    gradients are taken with respect to the path points themselves.
    """
    p, b = alphas.shape[0], start.shape[0]
    rows = p * b if internal_batch_size is None else internal_batch_size
    spec = _PathSpec(
        model, alphas, target, scalar_fn, rows, check, want_last, recompute
    )
    if rows >= p * b:
        sums = _path_chunk(
            spec, start, end, alphas, target, create_graph, check, want_last
        )
    else:
        # A batch norm in training mode refuses a pass of one sample (and would
        # normalise it by itself): its passes hold at least two.
        if any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
            for m in model.modules()
        ):
            spec.min_block = 2
        params = (
            [q for q in model.parameters() if q.requires_grad] if param_grads else []
        )
        sums = _ChunkedPath.apply(spec, start, end, *params)
    n = len(sums) - (1 if want_last else 0)
    scale = (end - start) / p
    return tuple(scale * g for g in sums[:n]) + sums[n:]
