"""Every public name of captum_robust.regularizers documents a runnable example.

The examples themselves run as doctests (pytest --doctest-modules on the package).
"""

import pytest

import captum_robust.regularizers as regularizers


@pytest.mark.parametrize("name", regularizers.__all__)
def test_every_public_name_has_an_example(name):
    doc = getattr(regularizers, name).__doc__ or ""
    assert ">>>" in doc, f"{name} has no runnable example"
    assert "Parameters" in doc or "Examples" in doc
