"""Every example in the docstrings of captum_robust.attr runs and gives its output."""

import doctest
import importlib

import pytest

import captum_robust.attr as attr

MODULES = [
    "captum_robust.attr._base",
    "captum_robust.attr._differentiable",
    "captum_robust.attr._grad_cam",
    "captum_robust.attr._lrp",
    "captum_robust.attr._smoothgrad",
    "captum_robust.attr._surrogate",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), raise_on_error=False)
    assert result.failed == 0


@pytest.mark.parametrize("name", attr.__all__)
def test_every_public_name_has_an_example(name):
    doc = getattr(attr, name).__doc__ or ""
    assert ">>>" in doc, f"{name} has no runnable example"
