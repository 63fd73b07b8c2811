"""Bad targets, empty batches and bad flags are refused by name (issue 14)."""

import pytest
import torch
from captum.attr import GradientShap
from captum.attr import InputXGradient
from captum.attr import IntegratedGradients
from captum.attr import LayerGradCam
from captum.attr import NoiseTunnel
from captum.attr import Saliency

from captum_robust.attr import DifferentiableAttribution
from captum_robust.attr import SmoothGrad
from captum_robust.attr import differentiable

WRAPPERS = {
    "Saliency": lambda net: differentiable(Saliency(net)),
    "InputXGradient": lambda net: differentiable(InputXGradient(net)),
    "IG": lambda net: differentiable(IntegratedGradients(net)),
    "GradientShap": lambda net: differentiable(GradientShap(net), seed=0),
    "LayerGradCam": lambda net: differentiable(LayerGradCam(net, net.conv2)),
    "NoiseTunnel": lambda net: differentiable(NoiseTunnel(Saliency(net)), seed=0),
    "SmoothGrad": lambda net: SmoothGrad(net, seed=0),
}


def _wrappers(net):
    return {name: build(net) for name, build in WRAPPERS.items()}


def _call(name, wrapper, x, target):
    if name == "GradientShap":
        return wrapper.attribute(x, torch.zeros_like(x), target=target, n_samples=2)
    if name in ("NoiseTunnel", "SmoothGrad"):
        return wrapper.attribute(x, target=target, nt_samples=2, stdevs=0.1)
    if name == "IG":
        return wrapper.attribute(x, target=target, n_steps=2)
    return wrapper.attribute(x, target=target)


BAD_TARGETS = [
    (3, ValueError, r"\[0, 2\].*3 outputs, got 3"),  # out of range: 3 classes
    (torch.tensor([0, 5, 1]), ValueError, "got 5"),
    ([0, 1, 9], ValueError, "got 9"),
    (-1, ValueError, "non-negative"),
    (torch.tensor([0, -2, 1]), ValueError, "non-negative"),
    (torch.tensor([0.0, 1.0, 1.0]), TypeError, "integer"),
    (1.0, TypeError, "float"),
    (True, TypeError, "bool"),
    ([0, 1], ValueError, "3 ints"),
    (torch.tensor([0, 1]), ValueError, r"shape \(2,\)"),
    ([0, 1.5, 2], TypeError, "float"),
]


@pytest.mark.parametrize("name", WRAPPERS)
def test_bad_targets_are_refused_by_name(name, net, xb):
    wrapper = WRAPPERS[name](net)
    for target, error, detail in BAD_TARGETS:
        with pytest.raises(error, match="`target`") as info:
            _call(name, wrapper, xb, target)
        assert info.match(detail), (target, str(info.value))
    # Good forms still work and agree.
    ints = _call(name, wrapper, xb, [2, 0, 1])
    tensor = _call(name, wrapper, xb, torch.tensor([2, 0, 1]))
    torch.testing.assert_close(ints, tensor)
    assert _call(name, wrapper, xb, 2).shape == ints.shape


def test_range_checked_against_the_model_output(net, xb):
    # IG expands the target over its path: the range check sees the model's output.
    ig = differentiable(IntegratedGradients(net))
    with pytest.raises(ValueError, match="3 outputs"):
        ig.attribute(
            xb, target=torch.tensor([0, 3, 1]), n_steps=2, internal_batch_size=2
        )


def test_empty_batch(net):
    empty = torch.zeros(0, 2, 6, 6, dtype=torch.float64)
    for name, wrapper in _wrappers(net).items():
        with pytest.raises(ValueError, match="`inputs` is an empty batch"):
            _call(name, wrapper, empty, 0)
    with pytest.raises(ValueError, match="`inputs\\[1\\]`"):
        SmoothGrad(lambda a, b: net(a + b)).attribute(
            (torch.zeros(2, 2, 6, 6), torch.zeros(3, 2, 6, 6)), target=0
        )


def test_integrated_gradients_steps(net, xb):
    ig = differentiable(IntegratedGradients(net))
    with pytest.raises(ValueError, match="`n_steps`"):
        ig.attribute(xb, target=0, n_steps=0)
    with pytest.raises(TypeError, match="`n_steps`"):
        ig.attribute(xb, target=0, n_steps=2.5)
    with pytest.raises(TypeError, match="IntegratedGradients.attribute"):
        ig.attribute(xb, target=0, steps=4)


def test_non_callable_forward_func():
    with pytest.raises(TypeError, match="`forward_func` must be callable"):
        DifferentiableAttribution(42)
    assert DifferentiableAttribution(None).forward_func is None


def test_boolean_flags(net, xb):
    wrappers = _wrappers(net)
    cases = [
        (lambda: wrappers["Saliency"].attribute(xb, target=0, abs=1), "abs"),
        (
            lambda: wrappers["IG"].attribute(
                xb, target=0, n_steps=2, return_convergence_delta="no"
            ),
            "return_convergence_delta",
        ),
        (
            lambda: wrappers["GradientShap"].attribute(
                xb, torch.zeros_like(xb), target=0, return_convergence_delta=0
            ),
            "return_convergence_delta",
        ),
        (
            lambda: wrappers["LayerGradCam"].attribute(
                xb, target=0, relu_attributions=1
            ),
            "relu_attributions",
        ),
        (
            lambda: wrappers["LayerGradCam"].attribute(
                xb, target=0, attr_dim_summation=None
            ),
            "attr_dim_summation",
        ),
        (
            lambda: wrappers["LayerGradCam"].attribute(
                xb, target=0, attribute_to_layer_input="yes"
            ),
            "attribute_to_layer_input",
        ),
        (
            lambda: wrappers["LayerGradCam"].attribute(
                xb, target=0, upsample_to_input=1
            ),
            "upsample_to_input",
        ),
        (
            lambda: wrappers["NoiseTunnel"].attribute(
                xb, target=0, draw_baseline_from_distrib=1
            ),
            "draw_baseline_from_distrib",
        ),
        (lambda: wrappers["SmoothGrad"].attribute(xb, target=0, abs=0), "abs"),
    ]
    for call, flag in cases:
        with pytest.raises(TypeError, match=f"`{flag}` must be a bool"):
            call()
