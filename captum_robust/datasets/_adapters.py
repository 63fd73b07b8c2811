"""Adapters from torchvision data sets with segmentations to (image, label, mask).

The torchvision classes do the reading (file lists, splits, label parsing, image
decoding); these wrappers only turn the segmentation into one boolean object mask
and resize image and mask together so that samples batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from captum_robust._utils.validation import check_choice
from captum_robust._utils.validation import check_positive_int

__all__ = [
    "VOC_CLASSES",
    "ImageFolderWithMasks",
    "OxfordIIITPetSilhouettes",
    "VOCSegmentationMasks",
]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 20 Pascal VOC object classes; label ``i`` is VOC class value ``i + 1``."""

_VOC_YEARS = tuple(str(y) for y in range(2007, 2013))


def _check_root(root: object) -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(
            f"`root` must be a str or os.PathLike, got {type(root).__name__}."
        )
    return Path(root)


def _check_image_size(image_size: object) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            raise ValueError(
                f"`image_size` must be an int, a (height, width) pair or None, "
                f"got {image_size!r}."
            )
        return (
            check_positive_int(image_size[0], "image_size[0]"),
            check_positive_int(image_size[1], "image_size[1]"),
        )
    side = check_positive_int(image_size, "image_size")
    return side, side


def _require(paths: dict[str, Path], layout: str, hint: str) -> None:
    missing = [
        f"  {what}: {path}"
        for what, path in paths.items()
        if not (path.is_dir() if what.endswith("directory") else path.is_file())
    ]
    if missing:
        raise FileNotFoundError(
            "The data set is not where `root` says. Missing:\n"
            + "\n".join(missing)
            + f"\nExpected layout:\n{layout}\n{hint}"
        )


class _MaskedDataset(Dataset):
    """Shared tail of every adapter: tensors, joint resizing, image transform."""

    classes: list[str]

    def __init__(
        self, image_size: object, transform: Callable[[Tensor], Tensor] | None
    ) -> None:
        self.image_size = _check_image_size(image_size)
        if transform is not None and not callable(transform):
            raise TypeError(
                f"`transform` must be callable or None, got {type(transform).__name__}."
            )
        self.transform = transform

    def _load(self, index: int) -> tuple[Image.Image, np.ndarray, int, str]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        pil_image, mask_array, label, mask_path = self._load(index)
        image = TF.pil_to_tensor(pil_image)
        mask = torch.from_numpy(np.ascontiguousarray(mask_array))
        if tuple(mask.shape) != tuple(image.shape[1:]):
            raise ValueError(
                f"The mask {mask_path} has size {tuple(mask.shape)} (H, W) but its "
                f"image has {tuple(image.shape[1:])}; they must match."
            )
        if self.image_size is not None:
            size = list(self.image_size)
            image = TF.resize(image, size, antialias=True)
            # Nearest keeps the mask binary and never invents object pixels.
            mask = TF.resize(
                mask[None].to(torch.uint8),
                size,
                interpolation=InterpolationMode.NEAREST_EXACT,
            )[0].bool()
        image = image.float() / 255.0
        if self.transform is not None:
            image = self.transform(image)
        return image, label, mask


class OxfordIIITPetSilhouettes(_MaskedDataset):
    """Oxford-IIIT Pet images with the pet's silhouette as mask.

    Wraps :class:`torchvision.datasets.OxfordIIITPet` with
    ``target_types=(label_type, "segmentation")``. The trimap of each image marks
    pet pixels 1, background 2 and the uncertain band along the pet's outline 3;
    the mask is the pet, with the band included or not as ``border`` says.

    Parameters
    ----------
    root : str or os.PathLike
        Directory that holds ``oxford-iiit-pet/`` (torchvision's layout)::

            root/oxford-iiit-pet/images/<Breed_name>_<n>.jpg
            root/oxford-iiit-pet/annotations/trimaps/<Breed_name>_<n>.png
            root/oxford-iiit-pet/annotations/trainval.txt  (and test.txt)

        with split files of lines ``<image id> <class 1-37> <species 1-2> <breed id>``.
    split : {"trainval", "test"}, default "trainval"
    image_size : int, (int, int) or None, default 224
        Image and mask are resized together to this (height, width) without
        keeping the aspect ratio, the image with antialiased bilinear, the mask
        with nearest-neighbour interpolation, so that samples batch. ``None``
        keeps each image's own size (use ``batch_size=1``).
    border : {"object", "background"}, default "object"
        Whether the trimap's border band (value 3) counts as pet. The band
        straddles the outline (fur, edges), so "object" gives the generous
        silhouette and "background" the strict interior.
    label_type : {"category", "binary-category"}, default "category"
        The 37 breeds (0-36, torchvision's order) or cat/dog (0 = cat, 1 = dog).
    transform : callable, optional
        Applied to the (3, H, W) float image tensor only, after resizing; the mask
        is not transformed, so use value transforms such as normalisation, not
        geometric ones.
    download : bool, default False
        Let torchvision download the data set (about 800 MB) into ``root``. Nothing
        is downloaded otherwise.

    Attributes
    ----------
    dataset : torchvision.datasets.OxfordIIITPet
        The wrapped data set.
    classes : list of str
        Class names in label order.

    Raises
    ------
    FileNotFoundError
        When ``download=False`` and files of the layout above are missing; the
        message lists them.

    Examples
    --------
    >>> import tempfile
    >>> try:
    ...     OxfordIIITPetSilhouettes(tempfile.mkdtemp())
    ... except FileNotFoundError as error:
    ...     print(str(error).splitlines()[0])
    The data set is not where `root` says. Missing:
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        *,
        image_size: int | tuple[int, int] | None = 224,
        border: str = "object",
        label_type: str = "category",
        transform: Callable[[Tensor], Tensor] | None = None,
        download: bool = False,
    ) -> None:
        super().__init__(image_size, transform)
        root_path = _check_root(root)
        check_choice(split, ("trainval", "test"), "split")
        check_choice(border, ("object", "background"), "border")
        check_choice(label_type, ("category", "binary-category"), "label_type")
        if not download:
            base = root_path / "oxford-iiit-pet"
            _require(
                {
                    "images directory": base / "images",
                    "trimaps directory": base / "annotations" / "trimaps",
                    "split file": base / "annotations" / f"{split}.txt",
                },
                "  root/oxford-iiit-pet/images/<id>.jpg\n"
                "  root/oxford-iiit-pet/annotations/trimaps/<id>.png\n"
                "  root/oxford-iiit-pet/annotations/{trainval,test}.txt",
                "Pass download=True to fetch it with torchvision.",
            )
        self.dataset = torchvision.datasets.OxfordIIITPet(
            root_path,
            split=split,
            target_types=(label_type, "segmentation"),
            download=download,
        )
        self.border = border
        self.classes = (
            list(self.dataset.classes)
            if label_type == "category"
            else list(self.dataset.bin_classes)
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, index: int) -> tuple[Image.Image, np.ndarray, int, str]:
        image, (label, trimap) = self.dataset[index]
        values = np.asarray(trimap)
        mask = values == 1
        if self.border == "object":
            mask |= values == 3
        # torchvision keeps the trimap paths private; they only name a bad file.
        segs = getattr(self.dataset, "_segs", None)
        where = str(segs[index]) if segs is not None else f"trimap of sample {index}"
        return image, mask, int(label), where


class VOCSegmentationMasks(_MaskedDataset):
    """Pascal VOC segmentation images labelled by their largest object class.

    Wraps :class:`torchvision.datasets.VOCSegmentation`. Of the object classes in
    an image's ``SegmentationClass`` map (values 1 to 20), the one covering the most
    pixels is the label, as a 0-based index into :data:`VOC_CLASSES` (value ``v``
    gives label ``v - 1``; a tie goes to the lower value), and the mask is every
    pixel of that class, all its instances together. Background (0) and the
    "void" outline pixels (255) are never object.

    Parameters
    ----------
    root : str or os.PathLike
        Directory that holds ``VOCdevkit/`` (torchvision's layout)::

            root/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
            root/VOCdevkit/VOC2012/SegmentationClass/<id>.png   (palette PNG)
            root/VOCdevkit/VOC2012/ImageSets/Segmentation/<image_set>.txt

        (2011 lives under ``root/TrainVal/VOCdevkit/VOC2011``.)
    year : str, default "2012"
        "2007" to "2012".
    image_set : {"train", "trainval", "val"}, default "train"
        Also "test" for 2007.
    image_size : int, (int, int) or None, default 224
        Joint resizing as in :class:`OxfordIIITPetSilhouettes`.
    transform : callable, optional
        Applied to the (3, H, W) float image tensor only, after resizing.
    download : bool, default False
        Let torchvision download the data set (about 2 GB for 2012) into ``root``.

    Attributes
    ----------
    dataset : torchvision.datasets.VOCSegmentation
        The wrapped data set.
    classes : list of str
        :data:`VOC_CLASSES` as a list.

    Raises
    ------
    FileNotFoundError
        When ``download=False`` and files of the layout above are missing.
    ValueError
        When read, for a segmentation map without any object pixel.

    Examples
    --------
    >>> import tempfile
    >>> try:
    ...     VOCSegmentationMasks(tempfile.mkdtemp(), image_set="val")
    ... except FileNotFoundError as error:
    ...     print(str(error).splitlines()[0])
    The data set is not where `root` says. Missing:
    """

    def __init__(
        self,
        root: str | os.PathLike,
        year: str = "2012",
        image_set: str = "train",
        *,
        image_size: int | tuple[int, int] | None = 224,
        transform: Callable[[Tensor], Tensor] | None = None,
        download: bool = False,
    ) -> None:
        super().__init__(image_size, transform)
        root_path = _check_root(root)
        check_choice(year, _VOC_YEARS, "year")
        image_sets = ("train", "trainval", "val") + (
            ("test",) if year == "2007" else ()
        )
        check_choice(image_set, image_sets, "image_set")
        if not download:
            from torchvision.datasets.voc import DATASET_YEAR_DICT

            key = "2007-test" if (year, image_set) == ("2007", "test") else year
            base_dir = DATASET_YEAR_DICT[key]["base_dir"]
            voc_root = root_path / base_dir
            _require(
                {
                    "JPEGImages directory": voc_root / "JPEGImages",
                    "SegmentationClass directory": voc_root / "SegmentationClass",
                    "image-set file": voc_root
                    / "ImageSets"
                    / "Segmentation"
                    / f"{image_set}.txt",
                },
                f"  root/{base_dir}/JPEGImages/<id>.jpg\n"
                f"  root/{base_dir}/SegmentationClass/<id>.png\n"
                f"  root/{base_dir}/ImageSets/Segmentation/{image_set}.txt",
                "Pass download=True to fetch it with torchvision.",
            )
        self.dataset = torchvision.datasets.VOCSegmentation(
            root_path, year=year, image_set=image_set, download=download
        )
        self.classes = list(VOC_CLASSES)

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, index: int) -> tuple[Image.Image, np.ndarray, int, str]:
        image, target = self.dataset[index]
        path = self.dataset.masks[index]
        if target.mode not in ("P", "L"):
            raise ValueError(
                f"The segmentation {path} has mode {target.mode!r}; VOC class maps "
                "are palette ('P') or greyscale ('L') PNGs of class values."
            )
        values = np.asarray(target)
        counts = np.bincount(values.ravel(), minlength=256)[1 : len(VOC_CLASSES) + 1]
        if counts.max() == 0:
            raise ValueError(f"The segmentation {path} has no object pixel (1-20).")
        label = int(counts.argmax())
        return image, values == label + 1, label, path


class ImageFolderWithMasks(_MaskedDataset):
    """An image folder with one binary mask per image, in torchvision's layout.

    Images are read by :class:`torchvision.datasets.ImageFolder` over
    ``root/images``; each image's mask is the PNG of the same class folder and file
    stem under ``root/masks``::

        root/images/<class>/<name>.<ext>    (any extension ImageFolder reads)
        root/masks/<class>/<name>.png       (nonzero = object, any PNG mode)

    Class indices follow the sorted class-folder names, as in ImageFolder.

    Parameters
    ----------
    root : str or os.PathLike
        The directory holding ``images/`` and ``masks/``.
    image_size : int, (int, int) or None, default 224
        Joint resizing as in :class:`OxfordIIITPetSilhouettes`.
    transform : callable, optional
        Applied to the (3, H, W) float image tensor only, after resizing.

    Attributes
    ----------
    dataset : torchvision.datasets.ImageFolder
        The wrapped image folder.
    classes : list of str
        Sorted class-folder names.
    class_to_idx : dict of str to int
        As in ImageFolder.

    Raises
    ------
    FileNotFoundError
        When ``root/images`` or ``root/masks`` is missing, or an image has no mask
        (the message lists the first missing ones).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for sub in ("images/cat", "masks/cat"):
    ...     (root / sub).mkdir(parents=True)
    >>> Image.new("RGB", (20, 10), "red").save(root / "images/cat/a.jpg")
    >>> Image.new("L", (20, 10), 255).save(root / "masks/cat/a.png")
    >>> image, label, mask = ImageFolderWithMasks(root, image_size=8)[0]
    >>> image.shape, label, mask.shape, bool(mask.all())
    (torch.Size([3, 8, 8]), 0, torch.Size([8, 8]), True)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        image_size: int | tuple[int, int] | None = 224,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(image_size, transform)
        root_path = _check_root(root)
        _require(
            {
                "images directory": root_path / "images",
                "masks directory": root_path / "masks",
            },
            "  root/images/<class>/<name>.<ext>\n  root/masks/<class>/<name>.png",
            "Every image needs a mask with the same class folder and file stem.",
        )
        self.dataset = torchvision.datasets.ImageFolder(root_path / "images")
        self.classes = list(self.dataset.classes)
        self.class_to_idx = dict(self.dataset.class_to_idx)
        images_dir = root_path / "images"
        self.mask_paths = [
            root_path / "masks" / Path(path).relative_to(images_dir).with_suffix(".png")
            for path, _ in self.dataset.samples
        ]
        missing = [str(p) for p in self.mask_paths if not p.is_file()]
        if missing:
            shown = "\n".join(f"  {p}" for p in missing[:5])
            more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise FileNotFoundError(
                f"{len(missing)} of {len(self.mask_paths)} images under "
                f"{images_dir} have no mask; expected:\n{shown}{more}"
            )

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, index: int) -> tuple[Image.Image, np.ndarray, int, str]:
        image, label = self.dataset[index]
        path = self.mask_paths[index]
        with Image.open(path) as mask_image:
            values = np.asarray(mask_image)
        mask = values != 0
        if mask.ndim == 3:
            mask = mask.any(axis=2)
        return image, mask, int(label), str(path)
