"""The progress bar class used by the library's long-running calls."""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(*args: Any, **kwargs: Any) -> Any:
    """A ``tqdm`` bar: the notebook widget when ipywidgets is installed, else text.

    ``tqdm.auto`` picks the widget in every Jupyter kernel and, without
    ipywidgets, warns "IProgress not found" on each bar; a text bar shows the same
    progress without the warning.
    """
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(*args, **kwargs)
