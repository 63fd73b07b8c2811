"""Every public name of the subpackages below documents a runnable example.

The examples themselves run once, as doctests (pytest's --doctest-modules over
captum_robust, set in pyproject.toml); this only checks that they are there.
"""

import importlib

import pytest

SUBPACKAGES = ["captum_robust.attr", "captum_robust.regularizers"]
NAMES = [
    (package, name)
    for package in SUBPACKAGES
    for name in importlib.import_module(package).__all__
]


@pytest.mark.parametrize(
    ("package", "name"), NAMES, ids=[f"{p.rsplit('.', 1)[1]}.{n}" for p, n in NAMES]
)
def test_every_public_name_has_an_example(package, name):
    doc = getattr(importlib.import_module(package), name).__doc__ or ""
    assert "Examples" in doc and ">>>" in doc, f"{name} has no runnable example"
