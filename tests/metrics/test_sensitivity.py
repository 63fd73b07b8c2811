import inspect
import math

import numpy as np
import pytest
import quantus
import torch
from captum.attr import Saliency
from captum.metrics import sensitivity_max
from helpers.models import conv_net

from captum_robust.metrics import avg_sensitivity
from captum_robust.metrics import local_lipschitz_estimate
from captum_robust.metrics import max_sensitivity
from captum_robust.metrics import pearson_correlation
from captum_robust.metrics import random_perturbation_similarity
from captum_robust.metrics import relative_input_stability
from captum_robust.metrics import relative_output_stability
from captum_robust.metrics import relative_representation_stability
from captum_robust.metrics import structural_similarity

ROUNDS = 3


def small_model(dtype=torch.float32):
    return conv_net(1, 4, 6, 3).to(dtype).eval()


def fixed_noise(scale=0.02, batch=4, dtype=torch.float32):
    generator = torch.Generator().manual_seed(1)
    return scale * torch.randn(ROUNDS, batch, 1, 6, 6, generator=generator, dtype=dtype)


class RoundNoise:
    """perturb_func of this package: round p adds noise[p]."""

    def __init__(self, noise):
        self.noise, self.round = noise, 0

    def __call__(self, inputs, generator):
        out = inputs + self.noise[self.round]
        self.round += 1
        return out


class QuantusNoise(RoundNoise):
    """The same draws, in Quantus' perturb_func(arr, indices) form."""

    def __call__(self, arr, indices, **kwargs):
        out = arr + self.noise[self.round].reshape(arr.shape[0], -1).numpy()
        self.round += 1
        return out


def saliency_of(model):
    def saliency(inputs, target):
        inputs = inputs.detach().requires_grad_(True)
        out = model(inputs).gather(1, target[:, None]).sum()
        return torch.autograd.grad(out, inputs)[0]

    return saliency


def test_max_sensitivity_equals_captum_sensitivity_max_on_the_same_draws():
    model = small_model(torch.float64)
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    noise = fixed_noise(0.05, dtype=torch.float64)

    def captum_perturb(inputs):
        # Captum lays copies out sample-major (repeat_interleave).
        return inputs + noise.transpose(0, 1).reshape(-1, 1, 6, 6)

    reference = sensitivity_max(
        Saliency(model).attribute, x, captum_perturb, n_perturb_samples=ROUNDS, target=1
    )
    ours = max_sensitivity(
        Saliency(model),
        x,
        target=1,
        n_perturbations=ROUNDS,
        perturb_func=RoundNoise(noise),
    )
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-14)
    chunked = max_sensitivity(
        Saliency(model).attribute,
        x,
        target=1,
        n_perturbations=ROUNDS,
        perturb_func=RoundNoise(noise),
        max_examples_per_batch=3,
    )
    torch.testing.assert_close(chunked, reference, rtol=1e-12, atol=1e-14)


def quantus_scores(metric, model, x, y, explain):
    def q_explain(model, inputs, targets, **kwargs):
        inputs = torch.as_tensor(inputs, dtype=torch.float32)
        return explain(inputs, torch.as_tensor(targets).long()).numpy()

    return np.array(
        metric(
            model=model,
            x_batch=x.numpy(),
            y_batch=y.numpy(),
            a_batch=None,
            explain_func=q_explain,
            device="cpu",
        )
    )


# Quantus 0.6's default for the relative stabilities.
NAN_ON_CHANGE = {"on_prediction_change": "nan"}


@pytest.mark.parametrize(
    "quantus_name, ours, options",
    [
        ("MaxSensitivity", max_sensitivity, {}),
        ("AvgSensitivity", avg_sensitivity, {}),
        ("LocalLipschitzEstimate", local_lipschitz_estimate, {}),
        ("RelativeInputStability", relative_input_stability, NAN_ON_CHANGE),
        ("RelativeOutputStability", relative_output_stability, NAN_ON_CHANGE),
        (
            "RelativeRepresentationStability",
            relative_representation_stability,
            dict(NAN_ON_CHANGE, layer="1"),
        ),
    ],
)
def test_robustness_metrics_equal_quantus_on_the_same_draws(
    quantus_name, ours, options
):
    model = small_model()
    x = torch.rand(4, 1, 6, 6) + 0.2
    y = model(x).argmax(1)
    noise = fixed_noise()
    extra = {"layer_names": [options["layer"]]} if "layer" in options else {}
    metric = getattr(quantus, quantus_name)(
        nr_samples=ROUNDS,
        perturb_func=QuantusNoise(noise),
        abs=False,
        normalise=False,
        disable_warnings=True,
        **extra,
    )
    reference = quantus_scores(metric, model, x, y, saliency_of(model))
    # The relative stabilities also take the model, to read its predictions.
    stability = "on_prediction_change" in options
    front = (saliency_of(model), model) if stability else (saliency_of(model),)
    scores = ours(
        *front,
        x,
        target=y,
        n_perturbations=ROUNDS,
        perturb_func=RoundNoise(noise),
        **options,
    )
    rtol = 1e-4 if stability else 1e-5
    np.testing.assert_allclose(scores.numpy(), reference, rtol=rtol)


def brute_relative_input_stability(explain, model, x, y, copies, eps=1e-6):
    """One sample and one perturbation at a time, straight from the paper."""
    out = []
    for i in range(len(x)):
        e = explain(x[i : i + 1], y[i : i + 1]).flatten()
        pred = model(x[i : i + 1]).argmax(1)
        best = -math.inf
        for c in copies:
            xc = c[i : i + 1]
            if model(xc).argmax(1) != pred:
                continue
            ec = explain(xc, y[i : i + 1]).flatten()
            num = ((e - ec) / torch.where(e == 0, eps, e)).norm()
            xi = x[i].flatten()
            den = ((xi - xc.flatten()) / torch.where(xi == 0, eps, xi)).norm()
            best = max(best, (num / max(den, eps)).item())
        out.append(best if best > -math.inf else math.nan)
    return np.array(out)


def test_stability_skips_perturbations_that_change_the_prediction():
    model = small_model()
    x = torch.rand(6, 1, 6, 6)
    y = model(x).argmax(1)
    noise = fixed_noise(3.0, batch=6)  # large: some predictions flip
    copies = [x + n for n in noise]
    flipped = torch.stack([model(c).argmax(1) != model(x).argmax(1) for c in copies])
    assert flipped.any() and not flipped.all(0).all()

    def ris(**options):
        return relative_input_stability(
            saliency_of(model),
            model,
            x,
            target=y,
            n_perturbations=ROUNDS,
            perturb_func=RoundNoise(noise),
            **options,
        )

    reference = brute_relative_input_stability(saliency_of(model), model, x, y, copies)
    np.testing.assert_allclose(ris().numpy(), reference, rtol=1e-5)
    as_quantus = ris(on_prediction_change="nan")
    assert torch.equal(as_quantus.isnan(), flipped.any(0))


def test_draws_are_seeded_in_the_ball_and_chunk_independent():
    model = small_model()
    x = torch.rand(5, 1, 6, 6)
    seen = []

    def recording(inputs, target):
        seen.append(inputs.detach().clone())
        return saliency_of(model)(inputs, target)

    first = max_sensitivity(recording, x, target=0, radius=0.1, seed=3)
    copies = torch.cat(seen[1:])
    assert copies.shape == (50, 1, 6, 6)
    delta = copies - x.repeat(10, 1, 1, 1)
    assert delta.abs().max() <= 0.1 and delta.abs().max() > 0.09
    seen.clear()
    chunked = max_sensitivity(
        recording, x, target=0, radius=0.1, seed=3, max_examples_per_batch=7
    )
    torch.testing.assert_close(chunked, first)
    assert torch.equal(torch.cat(seen[1:]), copies)
    assert max(len(s) for s in seen[1:]) <= 7
    other = max_sensitivity(saliency_of(model), x, target=0, radius=0.1, seed=4)
    assert not torch.equal(other, first)

    seen.clear()
    max_sensitivity(recording, x, target=0, radius=0.1, norm="l2")
    l2 = (torch.cat(seen[1:]) - x.repeat(10, 1, 1, 1)).flatten(1).norm(dim=1)
    assert l2.max() <= 0.1 + 1e-6


def test_bounds_clamp_and_rps_matches_a_loop():
    model = small_model()
    x = torch.rand(3, 1, 8, 8)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 8),
        torch.nn.Softplus(),
        torch.nn.Linear(8, 2),
    ).eval()
    explain = saliency_of(model)
    y = torch.tensor([0, 1, 0])
    generator = torch.Generator().manual_seed(5)
    noise = 0.3 * (2 * torch.rand(ROUNDS, 3, 1, 8, 8, generator=generator) - 1)
    ours = random_perturbation_similarity(
        explain, x, target=y, n_perturbations=ROUNDS, perturb_func=RoundNoise(noise)
    )
    ssim = random_perturbation_similarity(
        explain,
        x,
        target=y,
        n_perturbations=ROUNDS,
        perturb_func=RoundNoise(noise),
        similarity="ssim",
    )
    custom = random_perturbation_similarity(
        explain,
        x,
        target=y,
        n_perturbations=ROUNDS,
        perturb_func=RoundNoise(noise),
        similarity=pearson_correlation,
    )
    for i in range(3):
        e = explain(x[i : i + 1], y[i : i + 1])
        pcc, ssims = [], []
        for p in range(ROUNDS):
            xp = (x[i : i + 1] + noise[p, i : i + 1]).clamp(0, 1)
            ep = explain(xp, y[i : i + 1])
            pcc.append(pearson_correlation(e, ep).item())
            ssims.append(structural_similarity(e, ep).item())
        assert ours[i].item() == pytest.approx(np.mean(pcc), rel=1e-5)
        assert custom[i].item() == pytest.approx(np.mean(pcc), rel=1e-5)
        assert ssim[i].item() == pytest.approx(np.mean(ssims), rel=1e-5)


def seeded_uniform(radius):
    """perturb_func(inputs, generator): uniform in the L-inf ball of ``radius``."""

    def perturb(inputs, generator):
        noise = torch.empty_like(inputs).uniform_(-radius, radius, generator=generator)
        return inputs + noise

    return perturb


def captum_uniform(inputs, perturb_radius=0.02):
    """The draws of Captum's default_perturb_func, from torch's global generator."""
    return inputs + torch.empty_like(inputs).uniform_(-perturb_radius, perturb_radius)


SENSITIVITY_CALLS = {
    "max_sensitivity": lambda explain, model, x, **kw: max_sensitivity(
        explain, x, **kw
    ),
    "avg_sensitivity": lambda explain, model, x, **kw: avg_sensitivity(
        explain, x, **kw
    ),
    "local_lipschitz_estimate": lambda explain, model, x, **kw: (
        local_lipschitz_estimate(explain, x, **kw)
    ),
    "relative_input_stability": lambda explain, model, x, **kw: (
        relative_input_stability(explain, model, x, on_prediction_change="keep", **kw)
    ),
    "relative_representation_stability": lambda explain, model, x, **kw: (
        relative_representation_stability(
            explain, model, x, layer="1", on_prediction_change="keep", **kw
        )
    ),
    "random_perturbation_similarity": lambda explain, model, x, **kw: (
        random_perturbation_similarity(explain, x, **kw)
    ),
}


@pytest.mark.parametrize("name", sorted(SENSITIVITY_CALLS))
def test_captum_perturb_func_gives_the_seeded_values_on_the_same_draws(name):
    # Captum calls perturb_func(inputs, perturb_radius): it must get the metric's
    # radius (not its own default of 0.02), and `seed` must seed its draws from
    # torch's global generator as it seeds the generator of the seeded form.
    model = small_model()
    x = torch.rand(4, 1, 6, 6) + 0.2
    call = SENSITIVITY_CALLS[name]
    options = dict(target=1, n_perturbations=ROUNDS, radius=0.05, seed=3)
    seeded = call(
        saliency_of(model), model, x, perturb_func=seeded_uniform(0.05), **options
    )
    state = torch.get_rng_state()
    captum_form = call(
        saliency_of(model), model, x, perturb_func=captum_uniform, **options
    )
    torch.testing.assert_close(captum_form, seeded, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream
    again = call(saliency_of(model), model, x, perturb_func=captum_uniform, **options)
    torch.testing.assert_close(again, captum_form, rtol=0, atol=0, equal_nan=True)


def test_captums_default_perturb_func_is_accepted():
    from captum.metrics._core.sensitivity import default_perturb_func

    model = small_model()
    x = torch.rand(4, 1, 6, 6)
    options = dict(target=1, n_perturbations=ROUNDS, radius=0.05, seed=0)
    # It returns a tuple of one tensor, drawn on the CPU from the global generator.
    ours = max_sensitivity(
        Saliency(model), x, perturb_func=default_perturb_func, **options
    )
    seeded = max_sensitivity(
        Saliency(model), x, perturb_func=seeded_uniform(0.05), **options
    )
    torch.testing.assert_close(ours, seeded, rtol=0, atol=0)
    assert (ours > 0).all()


def _seen(second):
    """The type of what a perturb_func received after the inputs."""
    return type(second).__name__


def _generator_named(inputs, generator):
    return inputs, _seen(generator)


def _generator_annotated(inputs, g: torch.Generator):
    return inputs, _seen(g)


def _radius_named(inputs, radius):
    return inputs, _seen(radius)


def _eps_named(inputs, eps):
    return inputs, _seen(eps)


def _perturb_radius_named(inputs, perturb_radius):
    return inputs, _seen(perturb_radius)


def _float_annotated(inputs, r: float):
    return inputs, _seen(r)


def _float_default(inputs, r=0.1):
    return inputs, _seen(r)


def _inputs_only(inputs):  # Captum calls a one-parameter perturb_func this way
    return inputs, "nothing"


@pytest.mark.parametrize(
    "func, expected",
    [
        (_generator_named, "Generator"),
        (_generator_annotated, "Generator"),
        (_radius_named, "float"),
        (_eps_named, "float"),
        (_perturb_radius_named, "float"),
        (_float_annotated, "float"),
        (_float_default, "float"),
        (_inputs_only, "nothing"),
    ],
)
def test_the_form_of_perturb_func_is_read_from_its_signature(func, expected):
    received = []

    def perturb(*args):
        inputs, kind = func(*args)
        received.append(kind)
        return inputs + 0.01

    perturb.__signature__ = inspect.signature(func)
    max_sensitivity(lambda v: v**2, torch.rand(2, 5), perturb_func=perturb)
    assert received == [expected] * 10


@pytest.mark.parametrize(
    "func",
    [
        lambda a, b: a + b,  # undecided: called with a generator, which it adds
        lambda a, b, c: a,  # a third argument that nobody passes
        lambda: None,
    ],
)
def test_perturb_func_of_neither_form_is_named_with_both_signatures(func):
    with pytest.raises(TypeError, match="`perturb_func`") as info:
        max_sensitivity(lambda v: v**2, torch.rand(2, 5), perturb_func=func)
    message = str(info.value)
    assert "perturb_func(inputs, generator)" in message
    assert "perturb_func(inputs, perturb_radius)" in message


def test_degenerate_explanations_follow_the_nan_rule():
    x = torch.rand(2, 8)

    def zero(inputs):
        return torch.zeros_like(inputs)

    # A dead explanation does not move: Captum's convention gives 0.
    assert torch.equal(max_sensitivity(zero, x), torch.zeros(2))
    assert random_perturbation_similarity(zero, x).isnan().all()
    mse = random_perturbation_similarity(zero, x, similarity="mse")
    assert torch.equal(mse, torch.zeros(2))


def test_user_objects_are_left_as_found():
    model = small_model().train()
    model[0].eval()
    x = torch.rand(2, 1, 6, 6)
    relative_output_stability(saliency_of(model), model, x, target=0)
    assert model.training and not model[0].training and model[1].training
    assert not x.requires_grad
    relative_representation_stability(Saliency(model), model, x, target=0, layer="1")
    assert not model[1]._forward_hooks


def test_bad_arguments_are_named():
    model = small_model()
    x = torch.rand(2, 1, 6, 6)
    sal = Saliency(model)
    cases = [
        (TypeError, "explanation_func", lambda: max_sensitivity(3, x)),
        (TypeError, "inputs", lambda: max_sensitivity(sal, [x])),
        (ValueError, "inputs", lambda: max_sensitivity(sal, x * math.nan)),
        (
            ValueError,
            "n_perturbations",
            lambda: max_sensitivity(sal, x, n_perturbations=0),
        ),
        (ValueError, "radius", lambda: avg_sensitivity(sal, x, radius=-1.0)),
        (ValueError, "norm", lambda: max_sensitivity(sal, x, norm="l1")),
        (ValueError, "distribution", lambda: max_sensitivity(sal, x, distribution="x")),
        (TypeError, "perturb_func", lambda: max_sensitivity(sal, x, perturb_func=1)),
        (
            ValueError,
            "perturb_func",
            lambda: max_sensitivity(sal, x, target=0, perturb_func=lambda i, g: i[:1]),
        ),
        (
            ValueError,
            "upper_bound",
            lambda: max_sensitivity(sal, x, lower_bound=1.0, upper_bound=0.0),
        ),
        (ValueError, "seed", lambda: max_sensitivity(sal, x, seed=-1)),
        (
            ValueError,
            "max_examples_per_batch",
            lambda: max_sensitivity(sal, x, max_examples_per_batch=0),
        ),
        (ValueError, "target", lambda: max_sensitivity(sal, x, target=[0, 1, 2])),
        (TypeError, "target", lambda: max_sensitivity(sal, x, target=0.5)),
        (
            ValueError,
            "explanation_kwargs",
            lambda: max_sensitivity(sal, x, explanation_kwargs={"target": 0}),
        ),
        (
            ValueError,
            "norm_ord",
            lambda: max_sensitivity(sal, x, target=0, norm_ord=0.5),
        ),
        (
            TypeError,
            "normalize",
            lambda: max_sensitivity(sal, x, target=0, normalize=1),
        ),
        (TypeError, "abs", lambda: local_lipschitz_estimate(sal, x, abs=None)),
        (TypeError, "model", lambda: relative_input_stability(sal, "m", x, target=0)),
        (
            ValueError,
            "eps_min",
            lambda: relative_output_stability(sal, model, x, target=0, eps_min=0.0),
        ),
        (
            ValueError,
            "on_prediction_change",
            lambda: relative_input_stability(
                sal, model, x, target=0, on_prediction_change="drop"
            ),
        ),
        (
            ValueError,
            "layer",
            lambda: relative_representation_stability(
                sal, model, x, target=0, layer="nope"
            ),
        ),
        (
            TypeError,
            "layer",
            lambda: relative_representation_stability(sal, model, x, target=0, layer=1),
        ),
        (
            ValueError,
            "similarity",
            lambda: random_perturbation_similarity(
                sal, x, target=0, similarity="kendall"
            ),
        ),
        (
            ValueError,
            "attributions",
            lambda: max_sensitivity(sal, x, target=0, attributions=torch.zeros(3, 36)),
        ),
    ]
    for error, name, call in cases:
        with pytest.raises(error, match=f"`{name}`"):
            call()


def test_streaming_classes_average_the_functional_scores():
    from captum_robust.metrics import DeletionArea
    from captum_robust.metrics import InsertionArea
    from captum_robust.metrics import MaxSensitivity
    from captum_robust.metrics import RelativeRepresentationStability
    from captum_robust.metrics import deletion_area
    from captum_robust.metrics import insertion_area

    model = small_model()
    x = torch.rand(4, 1, 6, 6)
    explain = saliency_of(model)
    metric = MaxSensitivity(explain, radius=0.05, n_perturbations=3)
    metric.update(x, target=1)
    expected = max_sensitivity(explain, x, target=1, radius=0.05, n_perturbations=3)
    assert metric.compute()["mean"].item() == pytest.approx(expected.mean().item())
    rrs = RelativeRepresentationStability(explain, model, layer="1")
    rrs.update(x, target=1)
    expected = relative_representation_stability(explain, model, x, target=1, layer="1")
    assert rrs.compute()["mean"].item() == pytest.approx(expected.nanmean().item())
    # The model is not a submodule of the metric: no weights in its state.
    assert not any("weight" in key for key in rrs.state_dict())
    attr = explain(x, torch.ones(4, dtype=torch.long))
    for cls, fn in [(InsertionArea, insertion_area), (DeletionArea, deletion_area)]:
        area = cls(model, n_steps=5)
        area.update(x, attr, target=1)
        reference = fn(model, x, attr, target=1, n_steps=5).mean().item()
        assert area.compute()["mean"].item() == pytest.approx(reference)
