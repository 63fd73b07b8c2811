"""Data sets that come with object masks.

The embedded silhouette benchmark (:func:`make_silhouette_digits`,
:class:`SilhouetteDigits`) needs no download. The adapters wrap torchvision data
sets that ship segmentations (:class:`OxfordIIITPetSilhouettes`,
:class:`VOCSegmentationMasks`, :class:`ImageFolderWithMasks`) so that every sample
is ``(image, label, mask)`` and a DataLoader yields ``(images, labels, masks)``.
"""

from captum_robust.datasets._adapters import (
    VOC_CLASSES,
    ImageFolderWithMasks,
    OxfordIIITPetSilhouettes,
    VOCSegmentationMasks,
)
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
    "VOC_CLASSES",
    "ImageFolderWithMasks",
    "OxfordIIITPetSilhouettes",
    "SilhouetteDigits",
    "SilhouetteDigitsBatch",
    "VOCSegmentationMasks",
    "make_silhouette_digits",
]
