"""Every streaming metric equals its function over batches of different sizes.

In the manner of torchmetrics' MetricTester: each class exported by
``captum_robust.metrics`` that is a ``torchmetrics.Metric`` is fed batches of
different sizes (through ``forward`` and ``update``), and what it reports is
checked against the per-sample values of its functional counterpart on the same
batches: the mean, standard deviation, counts and Student-t interval over the
defined samples, with the NaN samples left out and counted in ``nan_count``, as
the package documents. A class added to ``__all__`` without a case here fails
by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.stats
import torch
from torchmetrics import Metric

import captum_robust.metrics as metrics

Tensor = torch.Tensor
SIZES = (4, 1, 3)


@dataclass
class Case:
    """How to build a metric and the batches it is fed.

    The metric is ``cls(*front, **options)``; batch ``i`` is ``update(*args,
    **kwargs)`` with ``batches[i] = (args, kwargs)``, and the function it
    streams gives that batch's per-sample values as ``function(*front, *args,
    **kwargs, **options)``. ``nan`` says whether some sample is built to be
    undefined (NaN), so that the NaN rule is exercised, not merely allowed.
    """

    front: tuple[Any, ...]
    options: dict[str, Any]
    batches: list[tuple[tuple[Any, ...], dict[str, Any]]]
    nan: bool


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def map_pairs(*, degenerate: str = "zero"):
    """Batches (attr_a, attr_b) of SIZES; the second sample of the first batch
    is undefined: a zero ``attr_a`` map, or for "same constant" both maps one
    constant (SSIM's only undefined case)."""
    generator = _generator()
    batches = []
    for size in SIZES:
        a = torch.rand(size, 3, 8, 8, generator=generator)
        b = a + 0.5 * torch.rand(size, 3, 8, 8, generator=generator)
        batches.append(((a, b), {}))
    (a, b), _ = batches[0]
    if degenerate == "zero":
        a[1] = 0.0
    else:
        a[1] = b[1] = 1.0
    return batches


def map_masks():
    """Batches (attributions, mask) of SIZES, one zero map among them."""
    generator = _generator()
    batches = []
    for size in SIZES:
        attr = torch.rand(size, 3, 8, 8, generator=generator)
        mask = torch.rand(size, 8, 8, generator=generator) > 0.5
        mask[:, 0, 0] = True  # at least one object pixel per sample
        batches.append(((attr, mask), {}))
    batches[0][0][0][1] = 0.0
    return batches


def vectors(width: int = 6, *, offset: float = 0.0, **kwargs: Any):
    generator = _generator()
    return [
        ((torch.rand(size, width, generator=generator) + offset,), dict(kwargs))
        for size in SIZES
    ]


def squared(x: Tensor, target: object = None) -> Tensor:
    return x.square()


def gated_square(x: Tensor, target: object = None) -> Tensor:
    """x**2 where the first feature is above 0.5, a zero map elsewhere."""
    return x.square() * (x[:, :1] > 0.5)


def rps_inputs():
    """Vectors in [0, 1]; one sample's first feature is 0: a zero map for
    ``gated_square`` under every small perturbation, so a NaN Pearson score."""
    batches = vectors()
    for (x,), _ in batches:
        x[:, 0] = 0.9
    batches[0][0][0][1, 0] = 0.0
    return batches


def boundary_model() -> torch.nn.Module:
    """Two logits ``x0 - x1`` and ``x1 - x0``: a sample with ``x0 == x1`` sits
    on the decision boundary, and its perturbations change the prediction."""
    linear = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, -1.0, 0, 0], [-1.0, 1.0, 0, 0]]))
    return torch.nn.Sequential(torch.nn.Identity(), linear)


def stability_inputs():
    """Inputs away from zero (relative changes), far from the boundary but one
    sample on it."""
    batches = vectors(4, offset=1.0, target=0)
    for (x,), _ in batches:
        x[:, 0] = x[:, 1] + 1.0
    x = batches[0][0][0]
    x[1, 0] = x[1, 1]
    return batches


def certified_inputs():
    """Maps led by one or two features (certified wholly or in part), and a
    zero map (nothing certified)."""
    generator = _generator()
    scale = torch.tensor([8.0, 4.0, 0, 0, 0, 0])
    batches = [
        ((torch.rand(size, 6, generator=generator) * scale,), {}) for size in SIZES
    ]
    batches[0][0][0][1] = 0.0
    return batches


def images_and_maps(**kwargs: Any):
    generator = _generator()
    return [
        (
            (
                torch.rand(size, 1, 2, 2, generator=generator),
                torch.rand(size, 2, 2, generator=generator),
            ),
            dict(kwargs),
        )
        for size in SIZES
    ]


def faithfulness_model() -> torch.nn.Module:
    linear = torch.nn.Linear(4, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(2, 4, generator=_generator()))
        linear.bias.zero_()
    return torch.nn.Sequential(torch.nn.Flatten(), linear)


STABILITY = dict(n_perturbations=6, on_prediction_change="nan")

CASES: dict[str, Callable[[], Case]] = {
    "TopKIntersection": lambda: Case((), {"k": 10}, map_pairs(), nan=True),
    "KendallTau": lambda: Case((), {}, map_pairs(), nan=True),
    "SpearmanCorrelation": lambda: Case((), {"abs": False}, map_pairs(), nan=True),
    "CenterOfMassShift": lambda: Case((), {}, map_pairs(), nan=True),
    "PearsonCorrelation": lambda: Case((), {}, map_pairs(), nan=True),
    "CosineSimilarity": lambda: Case(
        (), {"channel_reduction": "none"}, map_pairs(), nan=True
    ),
    "MeanSquaredError": lambda: Case(
        (), {"normalize": "max", "reduction": "sum"}, map_pairs(), nan=True
    ),
    "StructuralSimilarity": lambda: Case(
        (), {"sigma": 1.0}, map_pairs(degenerate="same constant"), nan=True
    ),
    "SilhouetteOverlap": lambda: Case((), {}, map_masks(), nan=True),
    "PointingGame": lambda: Case((), {}, map_masks(), nan=True),
    "RelevanceRankAccuracy": lambda: Case((), {}, map_masks(), nan=True),
    "MaskIoU": lambda: Case(
        (), {"threshold": 0.3, "threshold_mode": "max_fraction"}, map_masks(), nan=True
    ),
    "MaxSensitivity": lambda: Case(
        (squared,),
        {"n_perturbations": 4, "max_examples_per_batch": 5},
        vectors(),
        False,
    ),
    "AvgSensitivity": lambda: Case(
        (squared,), {"n_perturbations": 4, "radius": 0.1}, vectors(), False
    ),
    "LocalLipschitzEstimate": lambda: Case(
        (squared,), {"n_perturbations": 4}, vectors(), False
    ),
    "RandomPerturbationSimilarity": lambda: Case(
        (gated_square,), {"n_perturbations": 4}, rps_inputs(), nan=True
    ),
    "RelativeInputStability": lambda: Case(
        (squared, boundary_model()), STABILITY, stability_inputs(), nan=True
    ),
    "RelativeOutputStability": lambda: Case(
        (squared, boundary_model()), STABILITY, stability_inputs(), nan=True
    ),
    "RelativeRepresentationStability": lambda: Case(
        (squared, boundary_model()),
        dict(STABILITY, layer="0"),
        stability_inputs(),
        nan=True,
    ),
    "InsertionArea": lambda: Case(
        (faithfulness_model(),),
        {"n_steps": 4},
        images_and_maps(target=1),
        nan=False,
    ),
    "DeletionArea": lambda: Case(
        (faithfulness_model(),),
        {"n_steps": 3, "softmax": False},
        images_and_maps(target=0),
        nan=False,
    ),
    "CertifiedTopKOverlap": lambda: Case(
        (squared,),
        {"k": 2, "radius": 0.05, "sigma": 0.1, "sparsity": 1 / 3, "n_samples": 256},
        certified_inputs(),
        nan=False,
    ),
}

# Exported Metric subclasses that are not metrics of their own.
NOT_METRICS = {
    # The base class every streaming metric derives from: it has no score
    # function until a subclass sets one.
    "PerSampleMean",
}

EXPORTED = sorted(
    name
    for name in metrics.__all__
    if isinstance(getattr(metrics, name), type)
    and issubclass(getattr(metrics, name), Metric)
)


def test_every_exported_streaming_metric_has_a_case():
    missing = sorted(set(EXPORTED) - set(CASES) - NOT_METRICS)
    assert not missing, f"streaming metrics without a case here: {missing}"


def functional_counterpart(cls: type) -> Callable[..., Tensor]:
    """``score_fn`` of the map metrics, ``function`` of those that take an
    explanation function or a model first."""
    return getattr(cls, "score_fn", None) or cls.function


def statistics(values: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """What compute() documents, from the per-sample values, by numpy/scipy."""
    defined = values[~np.isnan(values)]
    count = len(defined)
    mean = defined.mean() if count else math.nan
    std = defined.std(ddof=1) if count > 1 else math.nan
    if count > 1 and std == 0:
        low = high = mean
    elif count > 1:
        low, high = scipy.stats.t.interval(
            confidence, df=count - 1, loc=mean, scale=std / math.sqrt(count)
        )
    else:
        low = high = math.nan
    return {
        "mean": mean,
        "std": std,
        "count": float(count),
        "nan_count": float(len(values) - count),
        "ci_low": low,
        "ci_high": high,
    }


def assert_reports(result: dict[str, Tensor], values: np.ndarray) -> None:
    expected = statistics(values)
    assert set(result) == set(expected)
    for key, value in result.items():
        assert value.dim() == 0 and value.dtype == torch.float64, key
        # Undefined (no defined sample; no spread for one): NaN both sides.
        np.testing.assert_allclose(
            value.item(), expected[key], rtol=1e-6, atol=1e-12, err_msg=key
        )


@pytest.mark.parametrize("name", sorted(set(EXPORTED) - NOT_METRICS))
def test_streaming_metric_equals_its_function_over_batches(name):
    if name not in CASES:
        pytest.fail(f"{name} has no case in CASES: add one")
    cls = getattr(metrics, name)
    case = CASES[name]()
    function = functional_counterpart(cls)
    per_batch = [
        function(*case.front, *args, **kwargs, **case.options).double().numpy()
        for args, kwargs in case.batches
    ]
    values = np.concatenate(per_batch)
    assert len(values) == sum(SIZES)
    assert np.isnan(values).any() == case.nan, "the case's NaN sample"

    metric = cls(*case.front, **case.options)
    for (args, kwargs), batch_values in zip(case.batches, per_batch):
        # forward: the batch's own statistics, and the batch joins the state.
        assert_reports(metric(*args, **kwargs), batch_values)
    assert_reports(metric.compute(), values)

    metric.reset()
    for args, kwargs in case.batches:
        metric.update(*args, **kwargs)
    assert_reports(metric.compute(), values)
