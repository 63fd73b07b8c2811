"""The shared argument checks of captum_robust._utils.validation, through the
public calls that used to carry their own copies: same errors, same messages."""

import re

import matplotlib
import pytest
import torch
from torch import nn

from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_confidence
from captum_robust._utils.validation import check_generator
from captum_robust._utils.validation import check_path
from captum_robust._utils.validation import check_seed
from captum_robust._utils.validation import check_str
from captum_robust._utils.validation import check_str_choice
from captum_robust._utils.validation import resolve_generator
from captum_robust.attr import SmoothGrad
from captum_robust.evaluation import summarize
from captum_robust.evaluation._summary import proportion_interval
from captum_robust.metrics import TopKIntersection
from captum_robust.metrics import certified_topk_overlap
from captum_robust.regularizers import LocalGradientAlignment
from captum_robust.visualization import save_figure

matplotlib.use("Agg")


def _raises(error: type[Exception], message: str):
    return pytest.raises(error, match=f"^{re.escape(message)}$")


def test_check_bool_and_str():
    assert check_bool(False, "flag") is False
    with _raises(TypeError, "`flag` must be a bool, got int."):
        check_bool(1, "flag")
    assert check_str(None, "name", optional=True) is None
    with _raises(TypeError, "`name` must be a str, got NoneType."):
        check_str(None, "name")
    with _raises(TypeError, "`name` must be a str or None, got int."):
        check_str(3, "name", optional=True)
    with _raises(TypeError, "`mode` must be a str (one of 'a', 'b'), got int."):
        check_str_choice(1, ("a", "b"), "mode")
    with _raises(ValueError, "`mode` must be one of 'a', 'b'; got 'c'."):
        check_str_choice("c", ("a", "b"), "mode")


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (1.0, ValueError, "`confidence` must be in (0, 1), got 1.0."),
        (1, ValueError, "`confidence` must be in (0, 1), got 1."),
        (0.0, ValueError, "`confidence` must be in (0, 1), got 0.0."),
        (-0.5, ValueError, "`confidence` must be >= 0.0, got -0.5."),
        (1.5, ValueError, "`confidence` must be <= 1.0, got 1.5."),
        ("0.9", TypeError, "`confidence` must be a number, got str."),
    ],
)
def test_confidence_everywhere(value, error, message):
    with _raises(error, message):
        check_confidence(value)
    with _raises(error, message):
        summarize([], ["topk"], confidence=value)
    with _raises(error, message):
        proportion_interval(3, 10, confidence=value)
    with _raises(error, message):
        TopKIntersection(k=2, confidence=value)
    assert check_confidence(0.9) == 0.9


def test_seed_and_generator():
    with _raises(TypeError, "`seed` must be an int or None, got bool."):
        check_seed(True)
    assert check_seed(-1) == -1
    with _raises(ValueError, "`seed` must be >= 0, got -1."):
        check_seed(-1, non_negative=True)
    message = "`generator` must be a torch.Generator or None, got int."
    with _raises(TypeError, message):
        check_generator(0)
    with _raises(TypeError, message):
        resolve_generator(0, 1, torch.device("cpu"))
    assert resolve_generator(None, None, torch.device("cpu")) is None
    given = torch.Generator()
    assert resolve_generator(given, 1, torch.device("cpu")) is given
    seeded = resolve_generator(None, 3, torch.device("cpu"))
    assert torch.equal(
        torch.rand(2, generator=seeded),
        torch.rand(2, generator=torch.Generator().manual_seed(3)),
    )


def test_seed_and_generator_at_their_call_sites():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = torch.rand(2, 1, 2, 2)
    with _raises(TypeError, "`seed` must be an int or None, got str."):
        SmoothGrad(model, seed="0")
    with _raises(TypeError, "`generator` must be a torch.Generator or None, got int."):
        SmoothGrad(model).attribute(x, target=0, generator=1)
    with _raises(TypeError, "`generator` must be a torch.Generator or None, got str."):
        LocalGradientAlignment(generator="g")
    with _raises(ValueError, "Give `seed` or `generator`, not both."):
        LocalGradientAlignment(seed=0, generator=torch.Generator())
    with _raises(ValueError, "`seed` must be >= 0, got -1."):
        LocalGradientAlignment(seed=-1)
    # certified_topk_overlap keeps its own seed contract (a non-negative int).
    options = dict(target=0, k=1, radius=0.1, sigma=0.5, n_samples=200)
    explain = SmoothGrad(model).attribute
    with _raises(TypeError, "`seed` must be an int, got str."):
        certified_topk_overlap(explain, x, seed="0", **options)
    with _raises(ValueError, "`seed` must be >= 0, got -1."):
        certified_topk_overlap(explain, x, seed=-1, **options)
    with _raises(TypeError, "`generator` must be a torch.Generator or None, got int."):
        certified_topk_overlap(explain, x, generator=1, seed="ignored", **options)


def test_check_path():
    assert check_path("a.png", "path") == "a.png"
    figure = matplotlib.figure.Figure()
    with _raises(TypeError, "`path` must be a str or a Path, got int."):
        save_figure(figure, 3)
