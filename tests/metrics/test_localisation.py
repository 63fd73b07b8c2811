import math

import numpy as np
import pytest
import torch

from captum_robust.metrics import mask_iou
from captum_robust.metrics import pointing_game
from captum_robust.metrics import relevance_rank_accuracy
from captum_robust.metrics import silhouette_overlap


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    attr = torch.randn(6, 3, 10, 12, generator=generator)
    mask = torch.rand(6, 10, 12, generator=generator) > 0.6
    mask[:, 0, 0] = True  # never empty
    return attr, mask


def numpy_maps(attr):
    return attr.abs().sum(1).numpy()


def test_silhouette_overlap_formula(batch):
    attr, mask = batch
    maps, m = numpy_maps(attr), mask.numpy()
    expected = (maps * m).sum((1, 2)) / maps.sum((1, 2))
    np.testing.assert_allclose(
        silhouette_overlap(attr, mask).numpy(), expected, rtol=1e-5
    )
    # (B, 1, H, W) and {0, 1} float masks give the same answer.
    same = silhouette_overlap(attr, mask.unsqueeze(1).float())
    np.testing.assert_allclose(same.numpy(), expected, rtol=1e-5)


def test_silhouette_overlap_zero_map_is_nan_and_negative_clipped():
    mask = torch.tensor([[[1, 0], [0, 0]]])
    # No mass, no share of it on the object: NaN (ObAlEx would report 0).
    assert silhouette_overlap(torch.zeros(1, 2, 2), mask).isnan().all()
    # With abs=False an all-negative map is all zero once clipped.
    assert silhouette_overlap(-torch.ones(1, 2, 2), mask, abs=False).isnan().all()
    signed = torch.tensor([[[1.0, -5.0], [1.0, 0.0]]])
    assert silhouette_overlap(signed, mask, abs=False).item() == pytest.approx(0.5)
    assert silhouette_overlap(signed, mask).item() == pytest.approx(1 / 7)


def test_pointing_game_formula(batch):
    attr, mask = batch
    maps, m = numpy_maps(attr), mask.numpy()
    expected = [m[i].flatten()[maps[i].flatten().argmax()] for i in range(6)]
    np.testing.assert_array_equal(pointing_game(attr, mask).numpy(), expected)


def test_pointing_game_ties_take_first_pixel():
    attr = torch.tensor([[[2.0, 2.0, 1.0]]])
    assert pointing_game(attr, torch.tensor([[[1, 0, 0]]])).item() == 1.0
    assert pointing_game(attr, torch.tensor([[[0, 1, 0]]])).item() == 0.0
    # A constant map has no peak: NaN, not the verdict of its first pixel.
    flat = torch.tensor([[[2.0, 2.0]], [[0.0, 0.0]]])
    assert pointing_game(flat, torch.tensor([[[1, 0]], [[1, 0]]])).isnan().all()


def test_relevance_rank_accuracy_formula(batch):
    attr, mask = batch
    maps, m = numpy_maps(attr), mask.numpy()
    expected = []
    for i in range(6):
        size = int(m[i].sum())
        top = np.argsort(-maps[i].flatten(), kind="stable")[:size]
        expected.append(m[i].flatten()[top].sum() / size)
    np.testing.assert_allclose(
        relevance_rank_accuracy(attr, mask).numpy(), expected, rtol=1e-6
    )


def test_mask_iou_max_fraction_formula(batch):
    attr, mask = batch
    maps, m = numpy_maps(attr), mask.numpy()
    for threshold in (0.1, 0.5, 1.0):
        predicted = maps >= threshold * maps.max(axis=(1, 2), keepdims=True)
        expected = (predicted & m).sum((1, 2)) / (predicted | m).sum((1, 2))
        result = mask_iou(attr, mask, threshold=threshold)
        np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6)


def test_mask_iou_top_fraction_formula(batch):
    attr, mask = batch
    maps, m = numpy_maps(attr), mask.numpy()
    count = math.ceil(0.25 * 120)
    expected = []
    for i in range(6):
        predicted = np.zeros(120, dtype=bool)
        predicted[np.argsort(-maps[i].flatten(), kind="stable")[:count]] = True
        flat = m[i].flatten()
        expected.append((predicted & flat).sum() / (predicted | flat).sum())
    result = mask_iou(attr, mask, threshold=0.25, threshold_mode="top_fraction")
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6)


def test_mask_iou_of_degenerate_maps():
    mask = torch.tensor([[[1, 0], [0, 0]]])
    assert mask_iou(torch.zeros(1, 2, 2), mask).isnan().all()
    # A uniform map predicts every pixel under max_fraction: 1 of 4 pixels.
    assert mask_iou(torch.ones(1, 2, 2), mask).item() == 0.25
    # Under top_fraction it ranks no pixel above another.
    top = mask_iou(torch.ones(1, 2, 2), mask, threshold_mode="top_fraction")
    assert top.isnan().all()
    assert relevance_rank_accuracy(torch.ones(1, 2, 2), mask).isnan().all()


@pytest.mark.parametrize(
    "fn", [silhouette_overlap, pointing_game, relevance_rank_accuracy, mask_iou]
)
def test_perfect_map_scores_one(fn):
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[:, 2:4, 1:5] = True
    attr = mask.float().unsqueeze(1) * 3.0
    assert torch.equal(fn(attr, mask), torch.ones(2))
