import pytest
import torch

from captum_robust.metrics import CenterOfMassShift
from captum_robust.metrics import KendallTau
from captum_robust.metrics import MaskIoU
from captum_robust.metrics import TopKIntersection
from captum_robust.metrics import center_of_mass
from captum_robust.metrics import center_of_mass_shift
from captum_robust.metrics import flatten_attribution
from captum_robust.metrics import kendall_tau
from captum_robust.metrics import mask_iou
from captum_robust.metrics import pointing_game
from captum_robust.metrics import relevance_rank_accuracy
from captum_robust.metrics import silhouette_overlap
from captum_robust.metrics import spearman_correlation
from captum_robust.metrics import topk_intersection

PAIR_METRICS = [kendall_tau, spearman_correlation, center_of_mass_shift]
MASK_METRICS = [silhouette_overlap, pointing_game, relevance_rank_accuracy, mask_iou]
A = torch.rand(2, 3, 4, 4)
MASK = torch.ones(2, 4, 4, dtype=torch.bool)


@pytest.mark.parametrize("fn", PAIR_METRICS)
def test_mismatched_shapes(fn):
    with pytest.raises(ValueError, match="attr_b"):
        fn(A, torch.rand(2, 3, 4, 5))


def test_mismatched_tuple_structure():
    with pytest.raises(ValueError, match="attr_b"):
        kendall_tau((A, A), (A,))


@pytest.mark.parametrize("k", [0, -1, 17])
def test_k_out_of_range(k):
    with pytest.raises(ValueError, match="`k`"):
        topk_intersection(A, A, k)


def test_k_wrong_type():
    with pytest.raises(TypeError, match="`k`"):
        topk_intersection(A, A, 2.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("fn", PAIR_METRICS)
def test_non_finite_attributions(fn, bad):
    broken = A.clone()
    broken[1, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="attr_b.*NaN or inf"):
        fn(A, broken)


@pytest.mark.parametrize("fn", MASK_METRICS)
def test_non_finite_attribution_with_mask(fn):
    broken = A.clone()
    broken[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="attributions"):
        fn(broken, MASK)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_unsupported_dtypes(dtype):
    with pytest.raises(TypeError, match="attr_a.*floating"):
        kendall_tau(torch.ones(2, 4, dtype=dtype), torch.ones(2, 4))


def test_not_a_tensor():
    with pytest.raises(TypeError, match="attr_a"):
        kendall_tau([[1.0, 2.0]], torch.ones(1, 2))


def test_missing_batch_dimension():
    with pytest.raises(ValueError, match="batch dimension"):
        flatten_attribution(torch.ones(5))


def test_bad_channel_reduction():
    with pytest.raises(ValueError, match="channel_reduction"):
        kendall_tau(A, A, channel_reduction="median")


@pytest.mark.parametrize("fn", MASK_METRICS)
def test_empty_mask(fn):
    mask = MASK.clone()
    mask[1] = False
    with pytest.raises(ValueError, match="`mask` is empty"):
        fn(A, mask)


@pytest.mark.parametrize("fn", MASK_METRICS)
def test_non_binary_mask(fn):
    with pytest.raises(ValueError, match="`mask` must be binary"):
        fn(A, MASK.float() * 2)


@pytest.mark.parametrize("fn", MASK_METRICS)
def test_mask_of_wrong_shape(fn):
    with pytest.raises(ValueError, match="`mask` must have shape"):
        fn(A, torch.ones(2, 4, 5))


@pytest.mark.parametrize("fn", MASK_METRICS)
def test_mask_not_a_tensor(fn):
    with pytest.raises(TypeError, match="`mask`"):
        fn(A, [[1]])


def test_spatial_metric_refuses_tuples_and_flat_inputs():
    with pytest.raises(TypeError, match="single Tensor"):
        center_of_mass((A, A))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        silhouette_overlap(torch.rand(2, 16), MASK)
    with pytest.raises(ValueError, match="channel_reduction"):
        center_of_mass(A, channel_reduction="none")


def test_mask_iou_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        mask_iou(A, MASK, threshold=0.0)
    with pytest.raises(ValueError, match="threshold"):
        mask_iou(A, MASK, threshold=1.5)
    with pytest.raises(ValueError, match="threshold_mode"):
        mask_iou(A, MASK, threshold_mode="otsu")


def test_streaming_bad_arguments():
    with pytest.raises(ValueError, match="confidence"):
        KendallTau(confidence=1.0)
    with pytest.raises(ValueError, match="`k`"):
        TopKIntersection(k=100).update(A, A)
    with pytest.raises(ValueError, match="threshold"):
        MaskIoU(threshold=2.0).update(A, MASK)
    with pytest.raises(ValueError, match="attr_b"):
        CenterOfMassShift().update(A, torch.rand(2, 3, 4, 5))


def test_device_mismatch_on_meta_device():
    # The meta device lets the check run where no GPU exists.
    with pytest.raises(ValueError, match="attr_b.*device"):
        kendall_tau(A, torch.empty(2, 3, 4, 4, device="meta"))
