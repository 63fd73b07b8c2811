import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from captum_robust.datasets import CLASS_NAMES
from captum_robust.datasets import TEXTURE_NAMES
from captum_robust.datasets import SilhouetteDigits
from captum_robust.datasets import SilhouetteDigitsBatch
from captum_robust.datasets import make_silhouette_digits
from captum_robust.datasets._silhouette import _TRAIN_COLUMN_FRACTION
from captum_robust.datasets._silhouette import _scaled_textures
from captum_robust.datasets._silhouette import digit_split_indices


def _assert_batches_equal(a: SilhouetteDigitsBatch, b: SilhouetteDigitsBatch):
    for name in ("images", "labels", "masks", "alphas", "background_ids", "digit_ids"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_same_seed_gives_identical_batches():
    a = make_silhouette_digits(50, seed=7, image_size=32)
    b = make_silhouette_digits(50, seed=7, image_size=32)
    _assert_batches_equal(a, b)


def test_different_seeds_differ():
    a = make_silhouette_digits(50, seed=1)
    b = make_silhouette_digits(50, seed=2)
    assert not torch.equal(a.images, b.images)
    assert not torch.equal(a.masks, b.masks)


def test_generators_are_accepted_and_advanced():
    from_int = make_silhouette_digits(20, seed=3)
    from_numpy = make_silhouette_digits(20, seed=np.random.default_rng(3))
    _assert_batches_equal(from_int, from_numpy)

    gen = torch.Generator().manual_seed(0)
    first = make_silhouette_digits(20, seed=gen)
    second = make_silhouette_digits(20, seed=gen)
    assert not torch.equal(first.images, second.images)
    again = make_silhouette_digits(20, seed=torch.Generator().manual_seed(0))
    _assert_batches_equal(first, again)


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_dtypes_and_ranges(size):
    batch = make_silhouette_digits(30, image_size=size, seed=0)
    assert len(batch) == 30
    assert batch.images.shape == (30, 3, size, size)
    assert batch.images.dtype == torch.float32
    assert batch.images.min() >= 0 and batch.images.max() <= 1
    assert batch.labels.shape == (30,) and batch.labels.dtype == torch.int64
    assert batch.masks.shape == (30, size, size) and batch.masks.dtype == torch.bool
    assert batch.alphas.shape == (30, size, size)
    assert batch.background_ids.dtype == torch.int64
    assert batch.colors.shape == (30, 3)
    assert batch.backgrounds is None
    # Every image shows a digit of a sensible size.
    area = batch.masks.float().mean(dim=(1, 2))
    assert (area > 0.03).all() and (area < 0.7).all()


@pytest.mark.parametrize("size", [32, 64])
def test_masks_are_exactly_where_the_digit_was_drawn(size):
    batch = make_silhouette_digits(
        200, image_size=size, seed=5, split="test", return_backgrounds=True
    )
    assert torch.equal(batch.masks, batch.alphas > 0)
    assert (batch.alphas[batch.masks] > 0.2).all()
    outside = ~batch.masks[:, None].expand_as(batch.images)
    assert torch.equal(batch.images[outside], batch.backgrounds[outside])
    # Inside the mask the pixel is the documented alpha blend and differs from the
    # background wherever foreground and background colours differ.
    a = batch.alphas[:, None]
    blend = batch.backgrounds * (1 - a) + batch.colors[:, :, None, None] * a
    torch.testing.assert_close(batch.images, blend)
    changed = (batch.images != batch.backgrounds).any(dim=1)
    assert changed[batch.masks].float().mean() > 0.99


def test_alpha_threshold_controls_the_silhouette():
    loose = make_silhouette_digits(20, seed=0, alpha_threshold=0.05)
    strict = make_silhouette_digits(20, seed=0, alpha_threshold=0.5)
    assert (strict.masks & ~loose.masks).sum() == 0
    assert strict.masks.sum() < loose.masks.sum()


def test_fixed_foreground_colour():
    batch = make_silhouette_digits(10, seed=0, foreground=(1.0, 0.0, 0.0))
    assert torch.equal(batch.colors, torch.tensor([[1.0, 0.0, 0.0]]).expand(10, 3))


def test_digits_are_real_and_match_labels():
    batch = make_silhouette_digits(300, seed=0)
    targets = load_digits().target
    assert np.array_equal(targets[batch.digit_ids.numpy()], batch.labels.numpy())


def test_classes_are_balanced():
    batch = make_silhouette_digits(1003, seed=11)
    counts = batch.labels.bincount(minlength=10)
    assert len(CLASS_NAMES) == 10
    assert counts.min() == 100 and counts.max() == 101


def test_train_and_test_use_disjoint_digit_images():
    train_pool = set(digit_split_indices("train").tolist())
    test_pool = set(digit_split_indices("test").tolist())
    assert not train_pool & test_pool
    assert len(train_pool | test_pool) == 1797
    assert 300 < len(test_pool) < 400
    train = make_silhouette_digits(2000, split="train", seed=0)
    test = make_silhouette_digits(2000, split="test", seed=0)
    assert set(train.digit_ids.tolist()) <= train_pool
    assert set(test.digit_ids.tolist()) <= test_pool


def _crop_columns(backgrounds: torch.Tensor, texture: torch.Tensor) -> list[int]:
    """Left column of the window of ``texture`` that each crop was cut from."""
    size = backgrounds.shape[-1]
    windows = texture.unfold(1, size, 1).unfold(2, size, 1)  # (3, R, C, s, s)
    windows = windows.permute(1, 2, 0, 3, 4).flatten(2)  # (R, C, 3*s*s)
    columns = []
    for crop in backgrounds.flatten(1):
        hits = (windows == crop).all(dim=-1).nonzero()
        assert hits.shape[0] >= 1, "a crop does not come from its texture"
        columns.append(int(hits[0, 1]))
    return columns


def test_train_and_test_backgrounds_come_from_disjoint_regions():
    size = 16
    kwargs = dict(image_size=size, textures=("gravel",), return_backgrounds=True)
    texture = _scaled_textures(("gravel",), size, 4.0)[0]
    split_col = int(texture.shape[2] * _TRAIN_COLUMN_FRACTION)
    train = make_silhouette_digits(20, split="train", seed=0, **kwargs)
    test = make_silhouette_digits(20, split="test", seed=0, **kwargs)
    assert max(_crop_columns(train.backgrounds, texture)) + size <= split_col
    assert min(_crop_columns(test.backgrounds, texture)) >= split_col


def test_decoy_bias_ties_train_backgrounds_to_the_class():
    train = make_silhouette_digits(500, split="train", seed=0, decoy_bias=1.0)
    assert torch.equal(train.background_ids, train.labels % len(TEXTURE_NAMES))

    three = make_silhouette_digits(
        200, seed=0, decoy_bias=1.0, textures=("brick", "grass", "coffee")
    )
    assert torch.equal(three.background_ids, three.labels % 3)

    half = make_silhouette_digits(2000, seed=0, decoy_bias=0.5)
    agree = (half.background_ids == half.labels).float().mean().item()
    assert 0.5 < agree < 0.6  # 0.5 + 0.5 * 1/10 expected


def test_test_split_backgrounds_stay_random_under_decoy_bias():
    test = make_silhouette_digits(2000, split="test", seed=0, decoy_bias=1.0)
    agree = (test.background_ids == test.labels).float().mean().item()
    assert agree < 0.15
    counts = test.background_ids.bincount(minlength=len(TEXTURE_NAMES))
    assert counts.min() > 150


def test_decoy_bias_changes_only_the_backgrounds():
    plain = make_silhouette_digits(100, seed=4)
    biased = make_silhouette_digits(100, seed=4, decoy_bias=1.0)
    for name in ("labels", "masks", "alphas", "digit_ids", "colors"):
        assert torch.equal(getattr(plain, name), getattr(biased, name)), name


def test_generation_time_of_2000_images(capsys):
    make_silhouette_digits(10, image_size=32)  # loads and caches the sources
    make_silhouette_digits(10, image_size=64)
    lines = []
    for size in (32, 64):
        start = time.perf_counter()
        make_silhouette_digits(2000, image_size=size, seed=0)
        lines.append(
            f"2000 images at {size}x{size}: {time.perf_counter() - start:.2f}s"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_dataset_and_dataloader():
    dataset = SilhouetteDigits(40, split="test", image_size=32, seed=0)
    assert len(dataset) == 40 and dataset.classes == list(CLASS_NAMES)
    image, label, mask = dataset[3]
    assert image.shape == (3, 32, 32) and isinstance(label, int)
    assert mask.shape == (32, 32) and mask.dtype == torch.bool
    images, labels, masks = next(iter(DataLoader(dataset, batch_size=16)))
    assert images.shape == (16, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (16,)
    assert masks.shape == (16, 32, 32) and masks.dtype == torch.bool
    assert torch.equal(images, dataset.data.images[:16])


def test_dataset_transform_touches_only_the_image():
    dataset = SilhouetteDigits(4, seed=0, transform=lambda x: x * 2 - 1)
    image, _, mask = dataset[0]
    assert torch.equal(image, dataset.data.images[0] * 2 - 1)
    assert torch.equal(mask, dataset.data.masks[0])
    with pytest.raises(TypeError, match="transform"):
        SilhouetteDigits(4, transform=3)


def test_batch_to_device():
    batch = make_silhouette_digits(3, return_backgrounds=True).to("cpu")
    assert batch.backgrounds is not None and batch.images.device.type == "cpu"


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        (dict(num_samples=0), ValueError, "num_samples"),
        (dict(num_samples=2.5), TypeError, "num_samples"),
        (dict(split="val"), ValueError, "split"),
        (dict(image_size=8), ValueError, "image_size"),
        (dict(image_size="32"), TypeError, "image_size"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed="a"), TypeError, "seed"),
        (dict(decoy_bias=1.5), ValueError, "decoy_bias"),
        (dict(decoy_bias=None), TypeError, "decoy_bias"),
        (dict(digit_scale=(0.9, 0.5)), ValueError, "digit_scale"),
        (dict(digit_scale=(0.0, 0.5)), ValueError, "digit_scale"),
        (dict(digit_scale=0.5), TypeError, "digit_scale"),
        (dict(max_rotation=-1), ValueError, "max_rotation"),
        (dict(foreground="blue"), ValueError, "foreground"),
        (dict(foreground=(1.0, 2.0, 0.0)), ValueError, "foreground"),
        (dict(alpha_threshold=1.0), ValueError, "alpha_threshold"),
        (dict(textures=("brick", "marble")), ValueError, "textures"),
        (dict(textures="brick"), TypeError, "textures"),
        (dict(textures=()), ValueError, "textures"),
        (dict(textures=("brick", "brick")), ValueError, "textures"),
        (dict(background_scale=2), ValueError, "background_scale"),
        (dict(return_backgrounds=1), TypeError, "return_backgrounds"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, name):
    kwargs = {"num_samples": 4, **kwargs}
    with pytest.raises(error, match=f"`{name}"):
        make_silhouette_digits(**kwargs)
