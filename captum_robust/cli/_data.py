"""The data sets of ``captum-robust evaluate``."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import torch

from captum_robust.cli._common import CommandError

DATASETS = ("silhouette-digits", "oxford-pets", "voc", "image-folder")


# Per-data-set default side of the resized images.
DEFAULT_IMAGE_SIZE = {
    "silhouette-digits": 32,
    "oxford-pets": 224,
    "voc": 224,
    "image-folder": 224,
}
# silhouette-digits is generated in chunks of this many samples, each from its own
# seed, so that the first N samples do not depend on N.
SILHOUETTE_CHUNK = 256


def silhouette_digits(num_samples: int, *, split: str, image_size: int, seed: int):
    """The first ``num_samples`` samples of the CLI's silhouette-digits sequence.

    Samples come in chunks of 256, chunk ``c`` drawn from its own seed, so the
    first N samples are the same whatever N (``--samples 40`` starts with the 20
    samples of ``--samples 20``).

    Examples
    --------
    >>> import torch
    >>> from captum_robust.cli import silhouette_digits
    >>> a = silhouette_digits(20, split="test", image_size=32, seed=0)
    >>> b = silhouette_digits(300, split="test", image_size=32, seed=0)
    >>> torch.equal(a.tensors[0], b.tensors[0][:20]), len(b)
    (True, 300)
    """
    import numpy as np
    from torch.utils.data import TensorDataset

    from captum_robust.datasets import make_silhouette_digits

    parts = []
    for chunk in range(math.ceil(num_samples / SILHOUETTE_CHUNK)):
        # Chunk 0 keeps the plain seed: the default 256 samples are those of
        # make_silhouette_digits(256, seed=seed).
        source = seed if chunk == 0 else np.random.default_rng([seed, chunk])
        parts.append(
            make_silhouette_digits(
                SILHOUETTE_CHUNK, split=split, image_size=image_size, seed=source
            )
        )
    images, labels, masks = (
        torch.cat([getattr(p, name) for p in parts])[:num_samples]
        for name in ("images", "labels", "masks")
    )
    return TensorDataset(images, labels, masks)


def load_dataset(args: argparse.Namespace) -> Any:
    from captum_robust import datasets

    size = args.image_size or DEFAULT_IMAGE_SIZE[args.data]
    if args.data == "silhouette-digits":
        return silhouette_digits(
            args.samples or SILHOUETTE_CHUNK,
            split=args.split or "test",
            image_size=size,
            seed=args.seed,
        )
    if args.data_root is None:
        raise CommandError(f"--data {args.data} needs --data-root")
    if args.data == "oxford-pets":
        data = datasets.OxfordIIITPetSilhouettes(
            args.data_root, split=args.split or "test", image_size=size
        )
    elif args.data == "voc":
        data = datasets.VOCSegmentationMasks(
            args.data_root, image_set=args.split or "val", image_size=size
        )
    else:
        data = datasets.ImageFolderWithMasks(args.data_root, image_size=size)
        if args.image_size is None:
            _warn_if_upscaled(data, size)
    if len(data) == 0:
        raise CommandError(f"--data-root {args.data_root} holds no images")
    if args.samples:
        from torch.utils.data import Subset

        data = Subset(data, range(min(args.samples, len(data))))
    return data


def _warn_if_upscaled(data: Any, size: int) -> None:
    """Small images blown up to the 224 px default usually mean a model trained
    on small images sees inputs it has never seen."""
    samples = getattr(getattr(data, "dataset", None), "samples", None)
    if not samples:
        return
    from PIL import Image

    with Image.open(samples[0][0]) as image:
        width, height = image.size
    if max(width, height) * 2 <= size:
        print(
            f"captum-robust: warning: the images are {width}x{height} px but are "
            f"resized to {size} px (the default of --data image-folder); if the "
            f"model was trained on small images, pass --image-size "
            f"{max(width, height)}",
            file=sys.stderr,
        )
