"""User objects are left as found; unsupported methods and bad input are refused."""

import warnings

import pytest
import torch
from captum._utils.gradient import compute_gradients
from captum.attr import LRP
from captum.attr import DeepLift
from captum.attr import DeepLiftShap
from captum.attr import FeatureAblation
from captum.attr import GradientShap
from captum.attr import GuidedGradCam
from captum.attr import InputXGradient
from captum.attr import IntegratedGradients
from captum.attr import KernelShap
from captum.attr import LayerConductance
from captum.attr import LayerGradCam
from captum.attr import LayerIntegratedGradients
from captum.attr import Lime
from captum.attr import NoiseTunnel
from captum.attr import Occlusion
from captum.attr import Saliency
from captum.attr import ShapleyValueSampling
from torch import nn

from captum_robust.attr import DifferentiableAttribution
from captum_robust.attr import SmoothGrad
from captum_robust.attr import differentiable
from captum_robust.attr import is_differentiable
from captum_robust.attr import softplus_surrogate


def _call(wrapper, x):
    name = wrapper.method
    if name == "GradientShap":
        return wrapper.attribute(x, torch.zeros_like(x), target=1, n_samples=2)
    if name.startswith("NoiseTunnel") or name == "SmoothGrad":
        return wrapper.attribute(x, target=1, nt_samples=2, stdevs=0.1)
    if name == "IntegratedGradients":
        return wrapper.attribute(x, target=1, n_steps=4)
    return wrapper.attribute(x, target=1)


def _captum_objects(model):
    return [
        Saliency(model),
        InputXGradient(model),
        IntegratedGradients(model),
        GradientShap(model),
        LayerGradCam(model, model.conv2),
        NoiseTunnel(Saliency(model)),
    ]


@pytest.mark.parametrize("index", range(6))
@pytest.mark.parametrize("training", [False, True])
def test_user_objects_left_as_found(index, training, net, xb):
    net.train(training)
    net.conv1.weight.requires_grad_(False)
    obj = _captum_objects(net)[index]
    before = dict(vars(obj))
    inner = getattr(obj, "attribution_method", None)
    inner_before = dict(vars(inner)) if inner is not None else None
    params_before = {n: p.detach().clone() for n, p in net.named_parameters()}

    wrapper = differentiable(obj, seed=0)
    with warnings.catch_warnings():
        # Captum must not be asked to flip requires_grad on the user's input.
        warnings.simplefilter("error")
        attr = _call(wrapper, xb)
    assert attr.requires_grad
    # A backward pass to the parameters must not write into the user's input.
    attr.square().sum().backward()

    assert vars(obj).keys() == before.keys()
    assert all(vars(obj)[k] is v for k, v in before.items())
    if inner is not None:
        assert all(vars(inner)[k] is v for k, v in inner_before.items())
    if hasattr(obj, "gradient_func"):
        assert obj.gradient_func is compute_gradients
    assert net.training is training
    assert all(m.training is training for m in net.modules())
    assert net.conv1.weight.requires_grad is False and net.conv1.weight.grad is None
    assert xb.requires_grad is False and xb.grad is None
    for n, p in net.named_parameters():
        assert torch.equal(p, params_before[n])
    net.zero_grad(set_to_none=True)


def test_input_that_requires_grad_gets_the_graph(net, xb):
    x = xb.clone().requires_grad_()
    for obj in _captum_objects(net):
        wrapper = differentiable(obj, seed=0)
        (g,) = torch.autograd.grad(_call(wrapper, x).square().sum(), x)
        assert g.abs().sum() > 0, wrapper.method
        assert x.requires_grad and x.grad is None


def test_result_has_graph_under_no_grad(net, xb):
    with torch.no_grad():
        attr = differentiable(InputXGradient(net)).attribute(xb, target=0)
    assert attr.requires_grad


def test_relu_network_has_zero_second_derivative_but_surrogate_does_not(relu_net, xb):
    x = xb.clone().requires_grad_()
    sal = differentiable(Saliency(relu_net))
    attr = sal.attribute(x, target=0, abs=False)
    (g,) = torch.autograd.grad(attr.sum(), x, materialize_grads=True, allow_unused=True)
    assert torch.count_nonzero(g) == 0
    smooth = sal.with_forward_func(softplus_surrogate(relu_net, beta=10.0))
    (g,) = torch.autograd.grad(smooth.attribute(x, target=0, abs=False).sum(), x)
    assert torch.count_nonzero(g) > 0


def test_grad_cam_layer_found_by_name(relu_net, xb):
    for name in ("conv2", "act2"):
        layer = getattr(relu_net, name)
        wrapper = differentiable(LayerGradCam(relu_net, layer), upsample_to_input=True)
        smooth = softplus_surrogate(relu_net)
        rebound = wrapper.with_forward_func(smooth)
        assert rebound.layer is getattr(smooth, name)
        assert wrapper.layer is layer
        assert rebound.upsample_to_input is True
        assert rebound.attribute(xb, target=0).shape == (3, 1, 6, 6)
    # A lambda hides the module: the layer must then be given.
    cam = differentiable(LayerGradCam(lambda t: relu_net(t), relu_net.conv2))
    with pytest.raises(TypeError, match="`layer` is needed"):
        cam.with_forward_func(smooth)
    rebound = cam.with_forward_func(smooth, layer=smooth.conv2)
    assert rebound.layer is smooth.conv2
    with pytest.raises(ValueError, match="no submodule named 'conv2'"):
        differentiable(LayerGradCam(relu_net, relu_net.conv2)).with_forward_func(
            nn.Sequential(nn.Flatten())
        )


def test_with_forward_func_keeps_settings(net, xb):
    sg = SmoothGrad(net, seed=5)
    other = softplus_surrogate(net)
    assert sg.with_forward_func(other).seed == 5
    nt = differentiable(NoiseTunnel(IntegratedGradients(net)), seed=3)
    assert nt.with_forward_func(other).forward_func is other
    assert nt.with_forward_func(other).seed == 3
    gs = differentiable(GradientShap(net, multiply_by_inputs=False), seed=2)
    rebound = gs.with_forward_func(other)
    assert rebound.multiplies_by_inputs is False and rebound.seed == 2
    with pytest.raises(TypeError, match="forward_func"):
        differentiable(Saliency(net)).with_forward_func(3)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_plain_callable(net, xb):
    def my_saliency(inputs, target=None, additional_forward_args=None):
        x = inputs.detach().requires_grad_()
        out = net(x)[:, target].sum()
        return torch.autograd.grad(out, x, create_graph=True)[0]

    wrapper = differentiable(my_saliency, forward_func=net)
    assert is_differentiable(my_saliency)
    assert wrapper.forward_func is net and wrapper.method == "my_saliency"
    torch.testing.assert_close(
        wrapper.attribute(xb, target=1),
        Saliency(net).attribute(xb, target=1, abs=False),
    )
    with pytest.raises(TypeError, match="plain callable"):
        wrapper.with_forward_func(net)
    # A callable whose result has no graph is reported, not silently accepted.
    detached = differentiable(lambda inputs, target=None, **_: inputs.detach() * 0)
    with pytest.warns(RuntimeWarning, match="without an autograd graph"):
        detached.attribute(xb, target=0)
    assert differentiable(wrapper) is wrapper
    sg = SmoothGrad(net)
    assert differentiable(sg) is sg and is_differentiable(sg)
    assert isinstance(wrapper, DifferentiableAttribution)


def _refused(model):
    baselines = torch.zeros(1, 2, 6, 6, dtype=torch.float64)
    return [
        (Occlusion(model), "Occlusion", "perturbation"),
        (FeatureAblation(model), "FeatureAblation", "perturbation"),
        (Lime(model), "Lime", "perturbation"),
        (KernelShap(model), "KernelShap", "perturbation"),
        (ShapleyValueSampling(model), "ShapleyValueSampling", "perturbation"),
        (DeepLiftShap(model), "DeepLiftShap", "average"),
        (type("DLSub", (DeepLift,), {})(model), "DLSub", "DeepLift itself"),
        (
            type("GGCSub", (GuidedGradCam,), {})(model, model.conv2),
            "GGCSub",
            "GuidedGradCam itself",
        ),
        (type("LRPSub", (LRP,), {})(model), "LRPSub", "LRP itself"),
        (NoiseTunnel(DeepLift(model)), "NoiseTunnel over DeepLift", "only"),
        (NoiseTunnel(Occlusion(model)), "NoiseTunnel over Occlusion", "perturbation"),
        (NoiseTunnel(GradientShap(model)), "NoiseTunnel over GradientShap", "only"),
        (
            LayerIntegratedGradients(model, model.conv1),
            "LayerIntegratedGradients",
            "not supported",
        ),
        (LayerConductance(model, model.conv1), "LayerConductance", "not supported"),
        (baselines, "Tensor", "neither a Captum attribution nor a callable"),
        (None, "NoneType", "neither"),
        (Saliency, "the class Saliency", "instance"),
        (model, "TinyNet", "not an attribution"),
        (Saliency(model).attribute, "Saliency.attribute", "object itself"),
        (
            differentiable(Saliency(model)).attribute,
            "CaptumGradientAttribution.attribute",
            "object itself",
        ),
    ]


@pytest.mark.parametrize("index", range(20))
def test_unsupported_methods_are_refused(index, net):
    obj, name, reason = _refused(net)[index]
    assert is_differentiable(obj) is False
    with pytest.raises(TypeError) as info:
        differentiable(obj)
    message = str(info.value)
    assert message.startswith("`attribution`")
    assert name in message and reason in message
    assert "Supported:" in message


def test_bad_arguments(net, xb):
    sal = Saliency(net)
    with pytest.raises(ValueError, match="`upsample_to_input`"):
        differentiable(sal, upsample_to_input=True)
    with pytest.raises(ValueError, match="`interpolate_mode`"):
        differentiable(sal, interpolate_mode="bilinear")
    with pytest.raises(TypeError, match="`seed`"):
        differentiable(GradientShap(net), seed="0")
    with pytest.raises(TypeError, match="`upsample_to_input`"):
        differentiable(LayerGradCam(net, net.conv2), upsample_to_input=1)
    with pytest.raises(ValueError, match="`interpolate_mode`"):
        differentiable(LayerGradCam(net, net.conv2), interpolate_mode="cubic")
    with pytest.raises(ValueError, match="`forward_func`"):
        differentiable(sal, forward_func=net)
    with pytest.raises(TypeError, match="`inputs`"):
        differentiable(sal).attribute([1.0, 2.0], target=0)
    with pytest.raises(TypeError, match="`forward_func`"):
        SmoothGrad("model")
    sg = SmoothGrad(net)
    with pytest.raises(ValueError, match="`nt_type`"):
        sg.attribute(xb, target=0, nt_type="smooth")
    with pytest.raises(ValueError, match="`nt_samples`"):
        sg.attribute(xb, target=0, nt_samples=0)
    with pytest.raises(ValueError, match="`stdevs`"):
        sg.attribute(xb, target=0, stdevs=-1.0)
    with pytest.raises(ValueError, match="`stdevs`"):
        sg.attribute(xb, target=0, stdevs=(0.1, 0.2))
    with pytest.raises(TypeError, match="`generator`"):
        sg.attribute(xb, target=0, generator=0)
    with pytest.raises(TypeError, match="`abs`"):
        sg.attribute(xb, target=0, abs="yes")
    with pytest.raises(ValueError, match="`target`"):
        sg.attribute(xb)  # three outputs per example and no target
    gs = differentiable(GradientShap(net))
    with pytest.raises(TypeError, match="`baselines`"):
        gs.attribute(xb, 0.0, target=0)
    with pytest.raises(ValueError, match="`baselines\\[0\\]`"):
        gs.attribute(xb, torch.zeros(2, 2, 5, 5, dtype=xb.dtype), target=0)
    with pytest.raises(ValueError, match="`n_samples`"):
        gs.attribute(xb, torch.zeros_like(xb), target=0, n_samples=0)
    cam = differentiable(LayerGradCam(net, net.fc))
    with pytest.raises(ValueError, match="`upsample_to_input`"):
        cam.attribute(xb, target=0, upsample_to_input=True)
    with pytest.raises(TypeError, match="`grad_kwargs`"):
        cam.attribute(xb, target=0, grad_kwargs=[1])


def test_multi_input_smoothgrad_and_forward_args(net, xb):
    def two(a, b, scale):
        return net(a * b) * scale

    b = torch.ones_like(xb) * 0.5
    scale = torch.tensor([[1.0], [2.0], [3.0]], dtype=xb.dtype)
    sg = SmoothGrad(two, seed=0)
    attr = sg.attribute(
        (xb, b), target=1, additional_forward_args=(scale,), stdevs=(0.1, 0.0)
    )
    assert isinstance(attr, tuple) and attr[0].shape == xb.shape
    # Per-example scaling of the output scales each example's gradients.
    unit = sg.attribute(
        (xb, b),
        target=1,
        additional_forward_args=(torch.ones_like(scale),),
        stdevs=(0.1, 0.0),
    )
    torch.testing.assert_close(attr[1], unit[1] * scale.view(3, 1, 1, 1))


def test_batchnorm_buffers_untouched_in_eval_mode(xb):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3),
        nn.Softplus(),
        nn.Flatten(),
        nn.Linear(48, 3),
    ).double()
    model.train()
    model(xb)  # non-trivial running statistics
    model.eval()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    for obj in (Saliency(model), GradientShap(model), NoiseTunnel(Saliency(model))):
        _call(differentiable(obj, seed=0), xb).sum().backward()
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    assert not model.training
