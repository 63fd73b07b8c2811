"""Does an autograd graph have curvature on its way to the inputs?

A propagation rule (Guided Backprop, Deconvolution) is applied in a second pass of
the model. Its map is differentiated again; through a nonlinearity the rule does
not replace, that second derivative must follow the true network, which costs a
backward through the second pass as well. Networks whose other operations are
linear or piecewise linear in the data have no such term, so the cost is skipped
for them: this module tells the two apart from the first pass's graph.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

# Backward nodes of operations that are linear in their data argument(s) or
# piecewise linear (their second derivative is zero almost everywhere).
_FLAT = frozenset(
    {
        "AccumulateGrad",
        "AdaptiveAvgPool1DBackward0",
        "AdaptiveAvgPool2DBackward0",
        "AdaptiveAvgPool3DBackward0",
        "AdaptiveMaxPool1DBackward0",
        "AdaptiveMaxPool2DBackward0",
        "AdaptiveMaxPool3DBackward0",
        "AddBackward0",
        "AddBackward1",
        "AliasBackward0",
        "AsStridedBackward0",
        "AvgPool2DBackward0",
        "AvgPool3DBackward0",
        "CatBackward0",
        "ClampBackward1",
        "ClampMaxBackward0",
        "ClampMinBackward0",
        "CloneBackward0",
        "ConstantPadNdBackward0",
        "ConvolutionBackward0",
        "DivBackward1",
        "ExpandBackward0",
        "FlipBackward0",
        "GatherBackward0",
        "HardtanhBackward0",
        "IndexBackward0",
        "IndexSelectBackward0",
        "LeakyReluBackward0",
        "MaxBackward0",
        "MaxBackward1",
        "MaximumBackward0",
        "MaxPool2DWithIndicesBackward0",
        "MaxPool3DWithIndicesBackward0",
        "MeanBackward0",
        "MeanBackward1",
        "MinBackward0",
        "MinBackward1",
        "MinimumBackward0",
        "MulBackward1",
        "NativeDropoutBackward0",
        "NegBackward0",
        "PermuteBackward0",
        "ReflectionPad2DBackward0",
        "ReluBackward0",
        "RepeatBackward0",
        "ReplicationPad2DBackward0",
        "ReshapeAliasBackward0",
        "RollBackward0",
        "SelectBackward0",
        "SliceBackward0",
        "SplitBackward0",
        "SplitWithSizesBackward0",
        "SqueezeBackward0",
        "SqueezeBackward1",
        "SqueezeBackward2",
        "StackBackward0",
        "SubBackward0",
        "SubBackward1",
        "SumBackward0",
        "SumBackward1",
        "TBackward0",
        "ThresholdBackward0",
        "ToCopyBackward0",
        "TransposeBackward0",
        "UnbindBackward0",
        "UnsafeViewBackward0",
        "UnsqueezeBackward0",
        "UpsampleBilinear2DBackward0",
        "UpsampleNearest2DBackward0",
        "ViewBackward0",
        "WhereBackward0",
    }
)
# Products: linear when at most one factor depends on the inputs.
_PRODUCTS = frozenset(
    {
        "AddmmBackward0",
        "BaddbmmBackward0",
        "BmmBackward0",
        "MmBackward0",
        "MulBackward0",
    }
)
# Linear in the numerator only.
_QUOTIENTS = frozenset({"DivBackward0"})
# Linear in eval mode (fixed statistics); the caller says which mode applies.
_NORMS = frozenset({"NativeBatchNormBackward0", "CudnnBatchNormBackward0"})


def has_curvature(
    outputs: Tensor,
    inputs: Iterable[Tensor],
    skip: Iterable[object] = (),
    fixed_norms: bool = True,
) -> bool:
    """Whether some node between ``outputs`` and ``inputs`` has a non-zero second
    derivative in the data (sigmoid, SiLU, softmax, layer norm, a product of two
    data-dependent factors, any operation not known to be flat).

    ``skip`` are nodes treated as flat (the activations a rule replaces);
    ``fixed_norms`` says whether batch norm uses fixed statistics (eval mode).
    """
    targets = {id(t) for t in inputs}
    stops = {id(t.grad_fn) for t in inputs if t.grad_fn is not None}
    skipped = {id(n) for n in skip}
    root = outputs.grad_fn
    if root is None:
        return False
    # Iterative post-order: which nodes reach the inputs.
    reaches: dict[int, bool] = {}
    children: dict[int, list[object]] = {}
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if expanded:
            reaches[key] = any(
                c is not None and reaches.get(id(c), False) for c in children[key]
            )
            continue
        if key in reaches or key in children:
            continue
        if key in stops:
            reaches[key] = True
            continue
        if type(node).__name__ == "AccumulateGrad":
            reaches[key] = id(node.variable) in targets  # type: ignore[attr-defined]
            continue
        # Positions are kept (None for an argument without a graph): a quotient
        # is told apart by which argument reaches the inputs.
        kids = [c for c, _ in node.next_functions]  # type: ignore[attr-defined]
        children[key] = kids
        stack.append((node, True))
        stack.extend((c, False) for c in kids if c is not None and id(c) not in reaches)
    nodes = {id(c): c for kids in children.values() for c in kids if c is not None}
    nodes[id(root)] = root
    for key, kids in children.items():
        if not reaches.get(key, False) or key in skipped or key in stops:
            continue
        name = type(nodes[key]).__name__
        if name in _FLAT or (fixed_norms and name in _NORMS):
            continue
        data = [c is not None and reaches.get(id(c), False) for c in kids]
        if name in _PRODUCTS and sum(data) <= 1:
            continue
        if name in _QUOTIENTS and not any(data[1:]):
            continue
        return True
    return False
