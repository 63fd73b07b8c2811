"""The adapters on tiny fixtures in the real on-disk formats that torchvision reads."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from captum_robust.datasets import VOC_CLASSES
from captum_robust.datasets import ImageFolderWithMasks
from captum_robust.datasets import OxfordIIITPetSilhouettes
from captum_robust.datasets import VOCSegmentationMasks


def _save_rgb(path: Path, height: int, width: int, seed: int) -> None:
    # Flat colours survive JPEG nearly unchanged, so pixel values stay checkable.
    colour = tuple(int(c) for c in np.random.default_rng(seed).integers(0, 256, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path, quality=95)


def _voc_palette() -> list[int]:
    # The palette of the VOC development kit (bit-interleaved class colours).
    palette = []
    for value in range(256):
        r = g = b = 0
        c = value
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


# ---------------------------------------------------------------- Oxford-IIIT Pet
PET_SAMPLES = {
    # image id: (class 1-37, species 1-2, split, height, width)
    "Abyssinian_1": (1, 1, "trainval", 30, 40),
    "american_bulldog_2": (2, 2, "trainval", 24, 24),
    "Abyssinian_3": (1, 1, "test", 20, 36),
}


def _trimap(height: int, width: int) -> np.ndarray:
    tri = np.full((height, width), 2, dtype=np.uint8)
    tri[4 : height - 4, 6 : width - 6] = 3
    tri[6 : height - 6, 8 : width - 8] = 1
    return tri


@pytest.fixture
def pet_root(tmp_path: Path) -> Path:
    base = tmp_path / "oxford-iiit-pet"
    (base / "annotations" / "trimaps").mkdir(parents=True)
    lines = {"trainval": [], "test": []}
    for i, (image_id, (cls, species, split, h, w)) in enumerate(PET_SAMPLES.items()):
        _save_rgb(base / "images" / f"{image_id}.jpg", h, w, seed=i)
        Image.fromarray(_trimap(h, w), mode="L").save(
            base / "annotations" / "trimaps" / f"{image_id}.png"
        )
        lines[split].append(f"{image_id} {cls} {species} {i + 1}")
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_pet_masks_follow_the_trimap(pet_root):
    with_border = OxfordIIITPetSilhouettes(pet_root, image_size=None)
    strict = OxfordIIITPetSilhouettes(pet_root, image_size=None, border="background")
    assert len(with_border) == 2
    assert with_border.classes == ["Abyssinian", "American Bulldog"]
    image, label, mask = with_border[0]
    tri = _trimap(30, 40)
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert label == 0
    assert mask.dtype == torch.bool
    assert np.array_equal(mask.numpy(), (tri == 1) | (tri == 3))
    assert np.array_equal(strict[0][2].numpy(), tri == 1)
    assert with_border[1][1] == 1


def test_pet_resizing_batches_and_keeps_masks_binary(pet_root):
    dataset = OxfordIIITPetSilhouettes(pet_root, image_size=(15, 20))
    images, labels, masks = next(iter(DataLoader(dataset, batch_size=2)))
    assert images.shape == (2, 3, 15, 20) and masks.shape == (2, 15, 20)
    assert masks.dtype == torch.bool and labels.tolist() == [0, 1]
    # Nearest-neighbour halving of the 30x40 trimap picks every second pixel.
    tri = _trimap(30, 40)
    expected = ((tri == 1) | (tri == 3))[::2, ::2]
    assert np.array_equal(masks[0].numpy(), expected)


def test_pet_test_split_binary_labels_and_transform(pet_root):
    dataset = OxfordIIITPetSilhouettes(
        pet_root,
        "test",
        image_size=16,
        label_type="binary-category",
        transform=lambda x: x - 0.5,
    )
    image, label, mask = dataset[0]
    assert len(dataset) == 1 and dataset.classes == ["Cat", "Dog"]
    assert label == 0 and image.shape == (3, 16, 16) and mask.shape == (16, 16)
    assert image.min() >= -0.5 and image.max() <= 0.5


def test_pet_missing_root_names_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        OxfordIIITPetSilhouettes(tmp_path / "nowhere")
    message = str(info.value)
    assert "oxford-iiit-pet" in message and "trimaps" in message
    assert "trainval.txt" in message and "download=True" in message


def test_pet_missing_split_file(pet_root):
    (pet_root / "oxford-iiit-pet" / "annotations" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test.txt"):
        OxfordIIITPetSilhouettes(pet_root, "test")


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(split="train"), ValueError, "split"),
        (dict(border="edge"), ValueError, "border"),
        (dict(label_type="species"), ValueError, "label_type"),
        (dict(image_size=0), ValueError, "image_size"),
        (dict(image_size=(8, 8, 8)), ValueError, "image_size"),
        (dict(image_size="big"), TypeError, "image_size"),
        (dict(transform=3), TypeError, "transform"),
    ],
)
def test_pet_bad_arguments(pet_root, kwargs, error, name):
    with pytest.raises(error, match=f"`{name}"):
        OxfordIIITPetSilhouettes(pet_root, **kwargs)


def test_bad_root_type():
    with pytest.raises(TypeError, match="`root`"):
        OxfordIIITPetSilhouettes(123)


# ---------------------------------------------------------------- Pascal VOC
def _voc_map(kind: str) -> np.ndarray:
    seg = np.zeros((24, 32), dtype=np.uint8)
    if kind == "person_and_dog":
        seg[2:20, 2:14] = 15  # person, 216 pixels
        seg[1, 1:15] = 255  # void outline, not object
        seg[4:10, 20:30] = 12  # dog, 60 pixels
        seg[12:14, 20:22] = 15  # a second person instance
    elif kind == "tie":
        seg[0:4, 0:4] = 7
        seg[10:14, 10:14] = 3
    return seg


VOC_SAMPLES = {
    "2008_000001": ("train", "person_and_dog"),
    "2008_000002": ("train", "tie"),
    "2008_000003": ("val", "empty"),
}


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClass").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    sets = {"train": [], "val": []}
    for i, (name, (image_set, kind)) in enumerate(VOC_SAMPLES.items()):
        _save_rgb(voc / "JPEGImages" / f"{name}.jpg", 24, 32, seed=10 + i)
        target = Image.fromarray(_voc_map(kind), mode="P")
        target.putpalette(_voc_palette())
        target.save(voc / "SegmentationClass" / f"{name}.png")
        sets[image_set].append(name)
    for image_set, names in sets.items():
        path = voc / "ImageSets" / "Segmentation" / f"{image_set}.txt"
        path.write_text("\n".join(names) + "\n")
    return tmp_path


def test_voc_label_is_the_largest_class_and_mask_its_pixels(voc_root):
    dataset = VOCSegmentationMasks(voc_root, image_size=None)
    assert len(dataset) == 2 and dataset.classes == list(VOC_CLASSES)
    image, label, mask = dataset[0]
    seg = _voc_map("person_and_dog")
    assert image.shape == (3, 24, 32)
    assert label == 14 and VOC_CLASSES[label] == "person"
    assert mask.dtype == torch.bool
    assert np.array_equal(mask.numpy(), seg == 15)
    assert not mask[1, 1:15].any()  # the 255 outline is not object


def test_voc_ties_go_to_the_lower_class(voc_root):
    _, label, mask = VOCSegmentationMasks(voc_root, image_size=None)[1]
    assert label == 2 and VOC_CLASSES[label] == "bird"
    assert int(mask.sum()) == 16 and bool(mask[10:14, 10:14].all())


def test_voc_resized_batches(voc_root):
    dataset = VOCSegmentationMasks(voc_root, image_size=(12, 16))
    images, labels, masks = next(iter(DataLoader(dataset, batch_size=2)))
    assert images.shape == (2, 3, 12, 16) and masks.shape == (2, 12, 16)
    assert labels.tolist() == [14, 2]
    assert np.array_equal(
        masks[0].numpy(), (_voc_map("person_and_dog") == 15)[::2, ::2]
    )


def test_voc_image_without_objects_is_reported(voc_root):
    dataset = VOCSegmentationMasks(voc_root, image_set="val")
    with pytest.raises(ValueError, match="no object pixel"):
        dataset[0]


def test_voc_missing_root_names_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        VOCSegmentationMasks(tmp_path, "2012", "val")
    message = str(info.value)
    assert "VOCdevkit" in message and "SegmentationClass" in message
    assert "ImageSets" in message and "val.txt" in message


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        (("2013",), {}, "year"),
        ((2012,), {}, "year"),
        (("2012", "test"), {}, "image_set"),
        (("2012", "train"), dict(image_size=-3), "image_size"),
    ],
)
def test_voc_bad_arguments(voc_root, args, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}"):
        VOCSegmentationMasks(voc_root, *args, **kwargs)


# ---------------------------------------------------------------- image folder
@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    for cls, name, ext in [
        ("dog", "b", ".jpg"),
        ("cat", "a", ".png"),
        ("cat", "c", ".jpg"),
    ]:
        _save_rgb(tmp_path / "images" / cls / f"{name}{ext}", 10, 20, seed=len(name))
        mask = np.zeros((10, 20, 3), dtype=np.uint8)
        mask[2:5, 3:9, 1] = 1  # nonzero in one channel of an RGB mask is object
        (tmp_path / "masks" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "masks" / cls / f"{name}.png")
    return tmp_path


def test_image_folder_reads_masks_and_sorted_classes(folder_root):
    dataset = ImageFolderWithMasks(folder_root, image_size=None)
    assert dataset.classes == ["cat", "dog"]
    assert dataset.class_to_idx == {"cat": 0, "dog": 1}
    assert [dataset[i][1] for i in range(3)] == [0, 0, 1]
    image, _, mask = dataset[0]
    expected = np.zeros((10, 20), dtype=bool)
    expected[2:5, 3:9] = True
    assert image.shape == (3, 10, 20)
    assert np.array_equal(mask.numpy(), expected)


def test_image_folder_loader_batches(folder_root):
    dataset = ImageFolderWithMasks(folder_root, image_size=8)
    images, labels, masks = next(iter(DataLoader(dataset, batch_size=3)))
    assert images.shape == (3, 3, 8, 8) and masks.shape == (3, 8, 8)
    assert masks.dtype == torch.bool and labels.tolist() == [0, 0, 1]


def test_image_folder_missing_mask(folder_root):
    (folder_root / "masks" / "dog" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)1 of 3 .*b\.png"):
        ImageFolderWithMasks(folder_root)


def test_image_folder_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="masks directory"):
        ImageFolderWithMasks(tmp_path)


def test_mask_of_the_wrong_size(folder_root):
    Image.new("L", (5, 5), 1).save(folder_root / "masks" / "cat" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png"):
        ImageFolderWithMasks(folder_root)[0]
