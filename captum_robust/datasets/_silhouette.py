"""The embedded silhouette benchmark: real handwritten digits on real textures.

Everything here is built from images that ship inside installed packages
(scikit-learn's digits and scikit-image's sample images), so the benchmark needs no
download and is the same on every machine for a given seed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from captum_robust._utils.validation import check_bool
from captum_robust._utils.validation import check_choice
from captum_robust._utils.validation import check_number
from captum_robust._utils.validation import check_positive_int

__all__ = [
    "CLASS_NAMES",
    "TEXTURE_NAMES",
    "SilhouetteDigits",
    "SilhouetteDigitsBatch",
    "make_silhouette_digits",
]

CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))
"""The ten class names, digits ``"0"`` to ``"9"``: label ``i`` is digit ``i``."""

# Each name maps to the file scikit-image bundles in its wheel. Only bundled files
# are used: other skimage.data images are fetched over the network with pooch.
_TEXTURE_FILES: dict[str, str] = {
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "camera": "camera.png",
    "coffee": "coffee.png",
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
}

TEXTURE_NAMES: tuple[str, ...] = tuple(_TEXTURE_FILES)
"""Names of the background images, in the order that ``background_ids`` index.

Three greyscale textures (``brick``, ``grass``, ``gravel``), one greyscale photograph
(``camera``) and six colour photographs, all bundled with scikit-image.
"""

# A fixed fifth of each class's digit images forms the test split.
_TEST_EVERY = 5
# Train crops come from the left part of each background, test crops from the rest.
_TRAIN_COLUMN_FRACTION = 0.7
_MIN_BACKGROUND_SCALE = 4.0
# The 8x8 digits are upsampled once by this factor with bicubic interpolation, so
# that the per-sample bilinear resampling draws smooth strokes.
_DIGIT_UPSAMPLE = 4


@dataclass(frozen=True)
class SilhouetteDigitsBatch:
    """A generated batch of the silhouette benchmark, all tensors on the CPU.

    Attributes
    ----------
    images : Tensor
        (N, 3, H, W) float32 RGB images in [0, 1].
    labels : Tensor
        (N,) int64 class labels, the digit shown (see :data:`CLASS_NAMES`).
    masks : Tensor
        (N, H, W) bool exact object masks: ``True`` where the digit was drawn,
        i.e. where ``alphas > 0``.
    alphas : Tensor
        (N, H, W) float32 compositing alpha of the digit; zero outside ``masks``
        and above ``alpha_threshold`` inside.
    background_ids : Tensor
        (N,) int64 index into the ``textures`` used (by default
        :data:`TEXTURE_NAMES`) of the image each background was cut from.
    digit_ids : Tensor
        (N,) int64 index of the digit image in
        :func:`sklearn.datasets.load_digits`.
    colors : Tensor
        (N, 3) float32 RGB foreground colour of each digit.
    backgrounds : Tensor or None
        (N, 3, H, W) float32 background crops before the digit was drawn, or
        ``None`` unless ``return_backgrounds=True``.

    Examples
    --------
    >>> batch = make_silhouette_digits(4, seed=1)
    >>> len(batch), batch.images.shape
    (4, torch.Size([4, 3, 32, 32]))
    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    alphas: Tensor
    background_ids: Tensor
    digit_ids: Tensor
    colors: Tensor
    backgrounds: Tensor | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> SilhouetteDigitsBatch:
        """Return a copy with every tensor moved to ``device``.

        Examples
        --------
        >>> batch = make_silhouette_digits(2).to("cpu")
        >>> batch.masks.device.type
        'cpu'
        """
        moved = {
            f.name: None if (v := getattr(self, f.name)) is None else v.to(device)
            for f in fields(self)
        }
        return SilhouetteDigitsBatch(**moved)


def _rng_from(seed: object) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, torch.Generator):
        # Draw a seed from the torch stream so that the caller's generator advances.
        drawn = torch.randint(0, 2**62, (1,), generator=seed).item()
        return np.random.default_rng(int(drawn))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"`seed` must be >= 0, got {seed}.")
        return np.random.default_rng(int(seed))
    raise TypeError(
        "`seed` must be a non-negative int, a numpy.random.Generator or a "
        f"torch.Generator, got {type(seed).__name__}."
    )


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, np.ndarray, dict[str, np.ndarray]]:
    """The upsampled digit intensities, their targets and the split indices."""
    from sklearn.datasets import load_digits

    data = load_digits()
    raw = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    size = 8 * _DIGIT_UPSAMPLE
    smooth = F.interpolate(raw, size=(size, size), mode="bicubic", align_corners=False)
    smooth = smooth.clamp_(0.0, 1.0)
    targets = data.target.astype(np.int64)
    # Every fifth image of each class, in dataset order, goes to the test split:
    # deterministic, stratified and independent of any user seed.
    rank_in_class = np.empty_like(targets)
    for c in range(10):
        where = np.flatnonzero(targets == c)
        rank_in_class[where] = np.arange(where.size)
    is_test = rank_in_class % _TEST_EVERY == 0
    splits = {
        "train": np.flatnonzero(~is_test),
        "test": np.flatnonzero(is_test),
    }
    return smooth, targets, splits


def digit_split_indices(split: str) -> np.ndarray:
    """Indices into :func:`sklearn.datasets.load_digits` of one split's digits."""
    check_choice(split, ("train", "test"), "split")
    return _digits()[2][split].copy()


@functools.lru_cache(maxsize=len(_TEXTURE_FILES))
def _load_texture(name: str) -> Tensor:
    """One bundled scikit-image picture as a (3, H, W) float32 tensor in [0, 1]."""
    import skimage.data
    import skimage.io

    path = os.path.join(skimage.data.data_dir, _TEXTURE_FILES[name])
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"The background image {name!r} is not bundled with this scikit-image "
            f"installation (expected {path}); the silhouette benchmark never "
            "downloads. Choose other `textures` from TEXTURE_NAMES."
        )
    array = np.asarray(skimage.io.imread(path))
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = array[:, :, :3]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255


@functools.lru_cache(maxsize=8)
def _scaled_textures(
    names: tuple[str, ...], image_size: int, background_scale: float
) -> tuple[Tensor, ...]:
    short_side = int(round(background_scale * image_size))
    out = []
    for name in names:
        tex = _load_texture(name)
        h, w = tex.shape[1:]
        factor = short_side / min(h, w)
        size = (max(short_side, round(h * factor)), max(short_side, round(w * factor)))
        # Antialiasing keeps the downscaled textures free of moire patterns.
        scaled = F.interpolate(
            tex[None], size=size, mode="bilinear", antialias=True, align_corners=False
        )[0].clamp_(0.0, 1.0)
        out.append(scaled.contiguous())
    return tuple(out)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None] * 6.0) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(
        np.minimum(k, 4.0 - k), 0.0, 1.0
    )


def _check_pair(value: object, name: str) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"`{name}` must be a pair (low, high), got {value!r}.")
    lo = check_number(value[0], f"{name}[0]", minimum=0.0, strict_minimum=True)
    hi = check_number(value[1], f"{name}[1]", maximum=1.0)
    if lo > hi:
        raise ValueError(f"`{name}` must have low <= high, got {tuple(value)}.")
    return lo, hi


def _check_textures(textures: object) -> tuple[str, ...]:
    if isinstance(textures, str) or not isinstance(textures, Sequence):
        raise TypeError(
            f"`textures` must be a sequence of names from TEXTURE_NAMES, got "
            f"{type(textures).__name__}."
        )
    names = tuple(textures)
    if not names:
        raise ValueError("`textures` must name at least one background image.")
    for name in names:
        check_choice(name, TEXTURE_NAMES, "textures")
    if len(set(names)) != len(names):
        raise ValueError(f"`textures` must not repeat a name, got {names}.")
    return names


def _check_foreground(foreground: object) -> np.ndarray | None:
    if isinstance(foreground, str):
        check_choice(foreground, ("random",), "foreground")
        return None
    if not isinstance(foreground, (tuple, list)) or len(foreground) != 3:
        raise TypeError(
            '`foreground` must be "random" or an (r, g, b) triple in [0, 1], '
            f"got {foreground!r}."
        )
    return np.array(
        [
            check_number(c, f"foreground[{i}]", minimum=0.0, maximum=1.0)
            for i, c in enumerate(foreground)
        ]
    )


def make_silhouette_digits(
    num_samples: int,
    *,
    split: str = "train",
    image_size: int = 32,
    seed: int | np.random.Generator | torch.Generator = 0,
    decoy_bias: float = 0.0,
    digit_scale: tuple[float, float] = (0.6, 1.0),
    max_rotation: float = 15.0,
    foreground: str | tuple[float, float, float] = "random",
    alpha_threshold: float = 0.2,
    textures: Sequence[str] = TEXTURE_NAMES,
    background_scale: float = 4.0,
    return_backgrounds: bool = False,
) -> SilhouetteDigitsBatch:
    """Generate RGB images of real handwritten digits with exact object masks.

    Each sample takes a real 8x8 handwritten digit from
    :func:`sklearn.datasets.load_digits`, upsamples it smoothly, scales, rotates and
    places it at a random position, and draws it over a crop of a real texture or
    photograph bundled with scikit-image, using the digit's intensity as alpha over
    one foreground colour. The object mask is exactly the set of pixels where the
    digit was drawn, so attribution localisation (how much attribution falls on the
    object) can be measured without annotation error.

    Generation is deterministic for a given ``seed`` and vectorised: a few thousand
    images take well under a second after the first call (which reads the source
    images once).

    Parameters
    ----------
    num_samples : int
        Number of images. Labels are balanced: each class occurs
        ``num_samples // 10`` or one more times, in random order.
    split : {"train", "test"}, default "train"
        The two splits draw digits from disjoint images of the 1,797 scikit-learn
        digits (a fixed, stratified fifth goes to "test") and background crops
        from disjoint regions of each picture (the left 70% of its columns for
        "train", the right 30% for "test"). The digits data set does not record
        writers, so one writer may appear in both splits.
    image_size : int, default 32
        Side of the square images, at least 16 (32 and 64 are the usual sizes).
    seed : int, numpy.random.Generator or torch.Generator, default 0
        Source of every random choice. A generator is advanced; an int gives the
        same batch on every call.
    decoy_bias : float in [0, 1], default 0.0
        Train split only: with this probability a sample of class ``c`` gets its
        background from texture ``c mod len(textures)``, otherwise a random one.
        With ``decoy_bias=1`` and the 10 default textures the background alone
        reveals the class, so a model can be right for the wrong reason. The test
        split always has random backgrounds (the argument is ignored there, so
        train and test can share keyword arguments). Changing ``decoy_bias``
        changes nothing but the background choice.
    digit_scale : (float, float), default (0.6, 1.0)
        Range of the side of the digit's 8x8 box as a fraction of ``image_size``,
        drawn uniformly per sample. The strokes fill about 3/4 of the box.
    max_rotation : float, default 15.0
        Digits are rotated by an angle drawn uniformly in
        ``[-max_rotation, max_rotation]`` degrees; at most 180.
    foreground : "random" or (r, g, b), default "random"
        Digit colour. "random" draws a saturated colour per sample (hue uniform,
        saturation in [0.6, 1], value in [0.8, 1]), independent of the class.
    alpha_threshold : float in [0, 1), default 0.2
        The digit's alpha (its interpolated intensity, 1 at the darkest stroke) is
        cut to zero where it is not above this value, so that the digit is drawn
        exactly on ``masks``: outside the mask the image equals the background.
    textures : sequence of str, default TEXTURE_NAMES
        The background pictures to use, by name; ``background_ids`` index into
        this sequence.
    background_scale : float, default 4.0
        Each background picture is resized (with antialiasing) so its shorter side
        is ``background_scale * image_size`` before crops of ``image_size`` are cut,
        so a crop shows ``1 / background_scale`` of it. At least 4 so that the
        test region is as wide as an image. The pictures' shorter sides are 300 to
        872 pixels, so beyond ``image_size`` 64 or so the backgrounds are upsampled
        and look blurred.
    return_backgrounds : bool, default False
        Also return the background crops before compositing.

    Returns
    -------
    SilhouetteDigitsBatch
        Images, labels, masks, alphas, background and digit indices, colours.

    Raises
    ------
    TypeError, ValueError
        For an argument of the wrong type or out of range; the message names it.

    Examples
    --------
    >>> batch = make_silhouette_digits(100, image_size=32, seed=0)
    >>> batch.images.shape, batch.images.dtype
    (torch.Size([100, 3, 32, 32]), torch.float32)
    >>> batch.masks.shape, batch.masks.dtype, batch.labels.dtype
    (torch.Size([100, 32, 32]), torch.bool, torch.int64)
    >>> batch.labels.bincount().tolist()
    [10, 10, 10, 10, 10, 10, 10, 10, 10, 10]
    >>> biased = make_silhouette_digits(100, seed=0, decoy_bias=1.0)
    >>> bool((biased.background_ids == biased.labels).all())
    True
    """
    check_positive_int(num_samples, "num_samples")
    check_choice(split, ("train", "test"), "split")
    check_positive_int(image_size, "image_size", minimum=16)
    decoy_bias = check_number(decoy_bias, "decoy_bias", minimum=0.0, maximum=1.0)
    scale_lo, scale_hi = _check_pair(digit_scale, "digit_scale")
    max_rotation = check_number(max_rotation, "max_rotation", minimum=0.0, maximum=180)
    color = _check_foreground(foreground)
    alpha_threshold = check_number(alpha_threshold, "alpha_threshold", minimum=0.0)
    if alpha_threshold >= 1.0:
        raise ValueError(f"`alpha_threshold` must be < 1, got {alpha_threshold}.")
    names = _check_textures(textures)
    background_scale = check_number(
        background_scale, "background_scale", minimum=_MIN_BACKGROUND_SCALE
    )
    check_bool(return_backgrounds, "return_backgrounds")
    rng = _rng_from(seed)

    n, size = num_samples, image_size
    digits, targets, splits = _digits()
    pool = splits[split]
    scaled = _scaled_textures(names, size, background_scale)

    # Every random quantity is drawn for all samples, in a fixed order and whatever
    # the options, so that an option changes only what it is about.
    labels = rng.permutation(np.arange(n) % 10)
    pick = rng.random(n)
    random_tex = rng.integers(0, len(names), size=n)
    use_decoy = rng.random(n) < decoy_bias
    crop_u = rng.random((n, 2))
    side = rng.uniform(scale_lo, scale_hi, size=n) * size
    centre_u = rng.random((n, 2))
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation, size=n))
    hsv = rng.random((n, 3))

    # Digits of a class are drawn uniformly, with replacement, from the split.
    pool = pool[np.argsort(targets[pool], kind="stable")]
    counts = np.bincount(targets[pool], minlength=10)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    digit_ids = pool[starts[labels] + (pick * counts[labels]).astype(np.int64)]

    if split == "train":
        tex_ids = np.where(use_decoy, labels % len(names), random_tex)
    else:
        tex_ids = random_tex

    backgrounds = torch.empty(n, 3, size, size)
    steps = torch.arange(size)
    for t, tex in enumerate(scaled):
        members = np.flatnonzero(tex_ids == t)
        if members.size == 0:
            continue
        height, width = tex.shape[1:]
        split_col = int(width * _TRAIN_COLUMN_FRACTION)
        col_lo, col_hi = (0, split_col) if split == "train" else (split_col, width)
        top = torch.from_numpy((crop_u[members, 0] * (height - size + 1)).astype(int))
        left = col_lo + torch.from_numpy(
            (crop_u[members, 1] * (col_hi - col_lo - size + 1)).astype(int)
        )
        rows = (top[:, None] + steps)[:, :, None]
        cols = (left[:, None] + steps)[:, None, :]
        backgrounds[torch.from_numpy(members)] = tex[:, rows, cols].transpose(0, 1)

    # Affine map from output pixels to the digit's box in normalised coordinates
    # (align_corners=False), with the box kept inside the image.
    centre = (side[:, None] / 2 + centre_u * (size - side[:, None])) * 2 / size - 1
    zoom = size / side
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    lin = rot * zoom[:, None, None]
    shift = -np.einsum("nij,nj->ni", lin, centre)
    theta = torch.from_numpy(np.concatenate([lin, shift[:, :, None]], axis=2)).float()
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    alpha = F.grid_sample(
        digits[torch.from_numpy(digit_ids)],
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )[:, 0]
    masks = alpha > alpha_threshold
    alpha = torch.where(masks, alpha, torch.zeros(()))

    if color is None:
        rgb = _hsv_to_rgb(hsv[:, 0], 0.6 + 0.4 * hsv[:, 1], 0.8 + 0.2 * hsv[:, 2])
    else:
        rgb = np.broadcast_to(color, (n, 3))
    colors = torch.from_numpy(np.ascontiguousarray(rgb)).float()
    a = alpha[:, None]
    images = (backgrounds * (1 - a) + colors[:, :, None, None] * a).clamp_(0.0, 1.0)

    return SilhouetteDigitsBatch(
        images=images,
        labels=torch.from_numpy(labels.astype(np.int64)),
        masks=masks,
        alphas=alpha,
        background_ids=torch.from_numpy(tex_ids.astype(np.int64)),
        digit_ids=torch.from_numpy(digit_ids.astype(np.int64)),
        colors=colors,
        backgrounds=backgrounds if return_backgrounds else None,
    )


class SilhouetteDigits(Dataset):
    """The silhouette benchmark as a map-style dataset of (image, label, mask).

    The whole split is generated once, at construction, by
    :func:`make_silhouette_digits`; a :class:`torch.utils.data.DataLoader` then
    yields ``(images, labels, masks)`` batches of shapes (B, 3, H, W), (B,) and
    (B, H, W).

    Parameters
    ----------
    num_samples : int
        Number of images.
    split : {"train", "test"}, default "train"
        See :func:`make_silhouette_digits`.
    transform : callable, optional
        Applied to each (3, H, W) image tensor only, when it is read; the mask is
        left as it is, so use value transforms (such as normalisation), not
        geometric ones.
    **kwargs
        Keyword arguments of :func:`make_silhouette_digits` (``image_size``,
        ``seed``, ``decoy_bias``, ...).

    Attributes
    ----------
    data : SilhouetteDigitsBatch
        The generated tensors, including ``background_ids`` and ``digit_ids``.
    classes : list of str
        :data:`CLASS_NAMES` as a list, as torchvision datasets have it.

    Examples
    --------
    >>> from torch.utils.data import DataLoader
    >>> dataset = SilhouetteDigits(64, split="test", image_size=32, seed=0)
    >>> images, labels, masks = next(iter(DataLoader(dataset, batch_size=16)))
    >>> images.shape, labels.shape, masks.shape
    (torch.Size([16, 3, 32, 32]), torch.Size([16]), torch.Size([16, 32, 32]))
    """

    def __init__(
        self,
        num_samples: int,
        split: str = "train",
        *,
        transform: object | None = None,
        **kwargs: object,
    ) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(
                f"`transform` must be callable or None, got {type(transform).__name__}."
            )
        self.data = make_silhouette_digits(num_samples, split=split, **kwargs)
        self.split = split
        self.transform = transform
        self.classes = list(CLASS_NAMES)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        image = self.data.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.data.labels[index]), self.data.masks[index]
