"""Data sets that come with object masks.

The embedded silhouette benchmark (:func:`make_silhouette_digits`,
:class:`SilhouetteDigits`) needs no download. The adapters wrap torchvision data
sets that ship segmentations (:class:`OxfordIIITPetSilhouettes`,
:class:`VOCSegmentationMasks`, :class:`ImageFolderWithMasks`) so that every sample
is ``(image, label, mask)`` and a DataLoader yields ``(images, labels, masks)``.
"""

from captum_robust.datasets._adapters import VOC_CLASSES
from captum_robust.datasets._adapters import ImageFolderWithMasks
from captum_robust.datasets._adapters import OxfordIIITPetSilhouettes
from captum_robust.datasets._adapters import VOCSegmentationMasks
from captum_robust.datasets._silhouette import CLASS_NAMES
from captum_robust.datasets._silhouette import TEXTURE_NAMES
from captum_robust.datasets._silhouette import SilhouetteDigits
from captum_robust.datasets._silhouette import SilhouetteDigitsBatch
from captum_robust.datasets._silhouette import make_silhouette_digits

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
