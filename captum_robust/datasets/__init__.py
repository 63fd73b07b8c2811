"""Data sets that come with object masks.

The embedded silhouette benchmark (:func:`make_silhouette_digits`,
:class:`SilhouetteDigits`) needs no download; the adapters wrap torchvision data
sets that ship segmentations so that every sample is ``(image, label, mask)``.
"""

from captum_robust.datasets._silhouette import (
    CLASS_NAMES,
    TEXTURE_NAMES,
    SilhouetteDigits,
    SilhouetteDigitsBatch,
    make_silhouette_digits,
)

__all__ = [
    "CLASS_NAMES",
    "TEXTURE_NAMES",
    "SilhouetteDigits",
    "SilhouetteDigitsBatch",
    "make_silhouette_digits",
]
