"""Figures of attributions before and after an attack."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from captum.attr import visualization
from matplotlib.figure import Figure
from torch import Tensor

from captum_robust._utils.validation import check_path
from captum_robust._utils.validation import check_positive_int


def _image_hwc(image: Tensor) -> np.ndarray:
    array = image.detach().float().cpu().numpy()
    if array.ndim == 2:
        array = array[None]
    array = np.transpose(array, (1, 2, 0))
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    low, high = array.min(), array.max()
    # Images outside [0, 1] (normalised inputs) are rescaled for display only.
    if low < 0 or high > 1:
        array = (array - low) / max(high - low, 1e-12)
    return array


def plot_attack_examples(
    images: Tensor,
    before: Tensor,
    after: Tensor,
    *,
    perturbed: Tensor | None = None,
    masks: Tensor | None = None,
    titles: Sequence[str] | None = None,
    max_samples: int = 8,
) -> Figure:
    """One row per sample: the image, its attribution, and the attacked versions.

    Attribution panels use :func:`captum.attr.visualization.visualize_image_attr`
    (absolute-value heat maps). The object mask, if given, is outlined on the
    image.

    Parameters
    ----------
    images : Tensor
        (B, C, H, W) inputs.
    before, after : Tensor
        (B, C, H, W) attributions of the original and of the perturbed inputs.
    perturbed : Tensor, optional
        (B, C, H, W) perturbed inputs, shown beside the originals.
    masks : Tensor, optional
        (B, H, W) or (B, 1, H, W) object masks, H and W those of ``images``.
    titles : sequence of str, optional
        One caption per image (``len(titles) == B``), shown beside its row.
    max_samples : int, default 8
        At most this many rows.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import torch
    >>> from captum_robust.visualization import plot_attack_examples
    >>> x = torch.rand(2, 3, 16, 16)
    >>> a, b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    >>> figure = plot_attack_examples(x, a, b)
    >>> len(figure.axes)
    6
    """
    for name, value in (("images", images), ("before", before), ("after", after)):
        if not isinstance(value, Tensor) or value.dim() != 4:
            raise ValueError(f"`{name}` must be a (B, C, H, W) Tensor.")
    if before.shape != after.shape or before.shape[0] != images.shape[0]:
        raise ValueError(
            "`before` and `after` must have one shape and the batch size of "
            f"`images`; got {tuple(before.shape)}, {tuple(after.shape)} and "
            f"{tuple(images.shape)}."
        )
    batch, spatial = images.shape[0], tuple(images.shape[-2:])
    if perturbed is not None and (
        not isinstance(perturbed, Tensor) or perturbed.shape != images.shape
    ):
        got = (
            tuple(perturbed.shape)
            if isinstance(perturbed, Tensor)
            else type(perturbed).__name__
        )
        raise ValueError(
            f"`perturbed` must be a Tensor shaped like `images` "
            f"{tuple(images.shape)}, got {got}."
        )
    if masks is not None:
        if not isinstance(masks, Tensor):
            raise TypeError(f"`masks` must be a Tensor, got {type(masks).__name__}.")
        allowed = ((batch, *spatial), (batch, 1, *spatial))
        if tuple(masks.shape) not in allowed:
            raise ValueError(
                f"`masks` must have shape {allowed[0]} or {allowed[1]} (one mask per "
                f"image), got {tuple(masks.shape)}."
            )
    if titles is not None:
        if isinstance(titles, str) or not isinstance(titles, Sequence):
            raise TypeError(
                f"`titles` must be a sequence of str, got {type(titles).__name__}."
            )
        if len(titles) != batch:
            raise ValueError(
                f"`titles` must hold one caption per image ({batch}), got "
                f"{len(titles)}."
            )
        if not all(isinstance(title, str) for title in titles):
            raise TypeError("`titles` must hold str captions.")
    check_positive_int(max_samples, "max_samples")
    rows = min(batch, max_samples)
    columns = ["input", "attribution"]
    if perturbed is not None:
        columns.insert(1, "perturbed input")
    columns.append("attribution after attack")
    figure = Figure(figsize=(2.2 * len(columns), 2.3 * rows))
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for row in range(rows):
        panels: list[tuple[str, Tensor | None, Tensor]] = [("image", None, images[row])]
        if perturbed is not None:
            panels.append(("image", None, perturbed[row]))
        panels.append(("attr", before[row], images[row]))
        panels.append(("attr", after[row], images[row]))
        for column, (kind, attr, image) in enumerate(panels):
            axis = axes[row, column]
            if kind == "image":
                axis.imshow(_image_hwc(image))
                if masks is not None:
                    mask = masks[row].reshape(masks.shape[-2:]).float().cpu().numpy()
                    axis.contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
            else:
                array = attr.detach().float().cpu().numpy().transpose(1, 2, 0)
                if np.abs(array).max() == 0:
                    axis.imshow(np.zeros(array.shape[:2]), cmap="gray")
                else:
                    visualization.visualize_image_attr(
                        array,
                        method="heat_map",
                        sign="absolute_value",
                        plt_fig_axis=(figure, axis),
                        use_pyplot=False,
                    )
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[column], fontsize=9)
        if titles is not None:
            axes[row, 0].set_ylabel(titles[row], fontsize=8)
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, path: str | Path) -> None:
    """Write a figure to PNG without touching pyplot's global state.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from matplotlib.figure import Figure
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty.png"
    >>> save_figure(Figure(), path)
    >>> path.read_bytes()[:4]
    b'\\x89PNG'
    """
    if not isinstance(figure, Figure):
        raise TypeError(
            f"`figure` must be a matplotlib Figure, got {type(figure).__name__}."
        )
    check_path(path, "path")
    figure.savefig(path, dpi=100, format="png")
