import numpy as np
import pytest
import torch
from helpers.models import conv_net

from captum_robust.metrics import deletion_area
from captum_robust.metrics import deletion_curve
from captum_robust.metrics import insertion_area
from captum_robust.metrics import insertion_curve


def model_and_data(seed=0):
    model = conv_net(3, 4, 5, 5, act=torch.nn.ReLU, batch_norm=True, seed=seed)
    inputs = torch.rand(3, 3, 5, 5)
    # Few distinct values: ties must be broken by pixel order.
    attributions = torch.randint(-2, 3, (3, 3, 5, 5)).float()
    return model, inputs, attributions


def brute_force(model, inputs, attributions, target, n_steps, mode, baseline=0.0):
    """One sample and one step at a time, pixels sorted by a Python key."""
    model.eval()
    curves = []
    with torch.no_grad():
        for i in range(len(inputs)):
            saliency = attributions[i].abs().sum(0).flatten().tolist()
            order = sorted(range(len(saliency)), key=lambda p: (-saliency[p], p))
            curve = []
            for step in range(n_steps):
                top = set(order[: step * len(order) // n_steps])
                keep = torch.tensor(
                    [(p in top) == (mode == "insertion") for p in range(len(order))]
                ).view(1, 1, 5, 5)
                image = torch.where(keep, inputs[i : i + 1], baseline)
                probability = model(image).softmax(1)[0, target[i]].item()
                curve.append(probability)
            curves.append(curve)
    return np.array(curves)


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
def test_curves_match_a_per_sample_loop(mode):
    model, inputs, attributions = model_and_data()
    target = torch.tensor([0, 3, 4])
    fn = insertion_curve if mode == "insertion" else deletion_curve
    reference = brute_force(model.train(), inputs, attributions, target, 7, mode)
    model.train()
    ours = fn(model, inputs, attributions, target=target, n_steps=7)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-5, atol=1e-7)
    chunked = fn(
        model, inputs, attributions, target=target, n_steps=7, max_examples_per_batch=4
    )
    torch.testing.assert_close(chunked, ours)
    assert model.training  # modes restored after the eval-mode forwards
    area = (insertion_area if mode == "insertion" else deletion_area)(
        model, inputs, attributions, target=target, n_steps=7
    )
    torch.testing.assert_close(area, ours.mean(1))


def test_curve_end_points_and_baseline():
    model, inputs, attributions = model_and_data(1)
    target = 2
    model.eval()
    with torch.no_grad():
        full = model(inputs).softmax(1)[:, target]
        blank = model(torch.full_like(inputs, 0.5)).softmax(1)[:, target]
    deletion = deletion_curve(model, inputs, attributions, target=target, n_steps=4)
    insertion = insertion_curve(
        model, inputs, attributions, target=target, n_steps=4, baseline=0.5
    )
    torch.testing.assert_close(deletion[:, 0], full)
    torch.testing.assert_close(insertion[:, 0], blank)
    logits = insertion_curve(
        model, inputs, attributions, target=target, n_steps=4, softmax=False
    )
    assert not torch.allclose(logits, insertion)


def test_faithful_map_beats_a_reversed_one():
    # A linear model whose evidence for class 0 sits in the left column.
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[0] = (
            torch.zeros(5, 5).index_fill_(1, torch.tensor([0]), 3.0).flatten()
        )
    inputs = torch.ones(1, 1, 5, 5)
    good = torch.zeros(1, 5, 5).index_fill_(2, torch.tensor([0]), 1.0)
    bad = 1.0 - good
    assert insertion_area(model, inputs, good, target=0) > insertion_area(
        model, inputs, bad, target=0
    )
    assert deletion_area(model, inputs, good, target=0) < deletion_area(
        model, inputs, bad, target=0
    )


def test_bad_inputs_are_named():
    model, inputs, attributions = model_and_data()
    cases = [
        (
            TypeError,
            "model",
            lambda: insertion_curve(3, inputs, attributions, target=0),
        ),
        (
            TypeError,
            "inputs",
            lambda: insertion_curve(model, [inputs], attributions, target=0),
        ),
        (
            ValueError,
            "inputs",
            lambda: insertion_curve(model, inputs[0], attributions, target=0),
        ),
        (
            ValueError,
            "attributions",
            lambda: insertion_curve(model, inputs, attributions[:, :, :4], target=0),
        ),
        (
            ValueError,
            "attributions",
            lambda: deletion_curve(
                model, inputs, attributions * float("nan"), target=0
            ),
        ),
        (
            ValueError,
            "n_steps",
            lambda: insertion_curve(model, inputs, attributions, target=0, n_steps=0),
        ),
        (
            TypeError,
            "baseline",
            lambda: insertion_curve(
                model, inputs, attributions, target=0, baseline="0"
            ),
        ),
        (
            TypeError,
            "softmax",
            lambda: insertion_curve(model, inputs, attributions, target=0, softmax=1),
        ),
        (
            ValueError,
            "target",
            lambda: insertion_curve(model, inputs, attributions, target=5),
        ),
        (
            ValueError,
            "target",
            lambda: insertion_curve(model, inputs, attributions, target=[0, 1]),
        ),
        (
            ValueError,
            "max_examples_per_batch",
            lambda: insertion_curve(
                model, inputs, attributions, target=0, max_examples_per_batch=0
            ),
        ),
    ]
    for error, name, call in cases:
        with pytest.raises(error, match=f"`{name}`"):
            call()
