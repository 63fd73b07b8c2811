"""Fixtures of the attack tests: a digit CNN trained on the spot (seconds) and an
untrained tiny network for the contract tests."""

import pytest
import torch
from helpers.digits import HELD_OUT
from helpers.digits import Digits
from helpers.digits import train_on_digits
from helpers.models import TinyBNNet
from helpers.models import digit_cnn
from helpers.models import tiny_bn_inputs
from helpers.models import tiny_bn_net


@pytest.fixture(scope="session")
def digits() -> Digits:
    torch.manual_seed(0)
    model, images, labels = train_on_digits(digit_cnn(), epochs=2)
    test_x, test_y = images[HELD_OUT:], labels[HELD_OUT:]
    with torch.no_grad():
        correct = model(test_x).argmax(dim=1) == test_y
    assert correct.float().mean() > 0.8
    return Digits(model, test_x[correct][:64], test_y[correct][:64])


@pytest.fixture
def tiny() -> TinyBNNet:
    return tiny_bn_net()


@pytest.fixture
def tiny_x() -> torch.Tensor:
    return tiny_bn_inputs()
