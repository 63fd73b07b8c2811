"""Fixtures of the regularizer tests: a tiny seeded CNN and a batch for it."""

import pytest
from helpers.models import batch
from helpers.models import tiny_conv


@pytest.fixture
def conv_net():
    return tiny_conv()


@pytest.fixture
def xy():
    return batch()
