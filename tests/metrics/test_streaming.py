import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from captum_robust.metrics import (
    CenterOfMassShift,
    KendallTau,
    MaskIoU,
    PointingGame,
    RelevanceRankAccuracy,
    SilhouetteOverlap,
    SpearmanCorrelation,
    TopKIntersection,
    center_of_mass_shift,
    kendall_tau,
    mask_iou,
    pointing_game,
    relevance_rank_accuracy,
    silhouette_overlap,
    spearman_correlation,
    topk_intersection,
)

GENERATOR = torch.Generator().manual_seed(0)
A = torch.rand(12, 3, 8, 8, generator=GENERATOR)
B = A + 0.5 * torch.rand(12, 3, 8, 8, generator=GENERATOR)
MASK = torch.rand(12, 8, 8, generator=GENERATOR) > 0.5

CASES = [
    (TopKIntersection(k=10), lambda: topk_intersection(A, B, 10), (A, B)),
    (KendallTau(), lambda: kendall_tau(A, B), (A, B)),
    (SpearmanCorrelation(), lambda: spearman_correlation(A, B), (A, B)),
    (CenterOfMassShift(), lambda: center_of_mass_shift(A, B), (A, B)),
    (SilhouetteOverlap(), lambda: silhouette_overlap(A, MASK), (A, MASK)),
    (PointingGame(), lambda: pointing_game(A, MASK), (A, MASK)),
    (RelevanceRankAccuracy(), lambda: relevance_rank_accuracy(A, MASK), (A, MASK)),
    (MaskIoU(threshold=0.3), lambda: mask_iou(A, MASK, threshold=0.3), (A, MASK)),
]


@pytest.mark.parametrize("metric, functional, inputs", CASES)
def test_streaming_equals_functional_over_batches(metric, functional, inputs):
    metric.reset()
    for start in range(0, 12, 5):  # batches of 5, 5, 2
        metric.update(*(x[start : start + 5] for x in inputs))
    values = functional().double().numpy()
    result = metric.compute()
    assert result["count"].item() == 12
    np.testing.assert_allclose(result["mean"].item(), values.mean(), rtol=1e-6)
    np.testing.assert_allclose(result["std"].item(), values.std(ddof=1), rtol=1e-5)
    low, high = scipy.stats.t.interval(
        0.95, df=11, loc=values.mean(), scale=scipy.stats.sem(values)
    )
    np.testing.assert_allclose(result["ci_low"].item(), low, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(result["ci_high"].item(), high, rtol=1e-5, atol=1e-9)


def test_nan_samples_are_counted_apart():
    metric = KendallTau()
    constant = torch.ones(1, 3, 8, 8)
    metric.update(torch.cat([A[:3], constant]), torch.cat([B[:3], B[:1]]))
    result = metric.compute()
    assert result["count"].item() == 3
    assert result["nan_count"].item() == 1
    expected = kendall_tau(A[:3], B[:3]).double().mean().item()
    assert result["mean"].item() == pytest.approx(expected)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_reduction_across_two_gloo_ranks_equals_single_process(tmp_path):
    worker = Path(__file__).with_name("metrics_worker.py")
    out = tmp_path / "result.json"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    env["WORLD_SIZE"] = "2"
    env["OMP_NUM_THREADS"] = "1"
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(out)], env=dict(env, RANK=str(rank))
        )
        for rank in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    distributed = json.loads(out.read_text())

    generator = torch.Generator().manual_seed(0)
    a = torch.rand(10, 3, 8, 8, generator=generator)
    b = a + 0.3 * torch.rand(10, 3, 8, 8, generator=generator)
    mask = torch.rand(10, 8, 8, generator=generator) > 0.5
    single = [TopKIntersection(k=10), KendallTau(), SilhouetteOverlap()]
    single[0].update(a, b)
    single[1].update(a, b)
    single[2].update(a, mask)
    for metric, reduced in zip(single, distributed):
        expected = {key: value.item() for key, value in metric.compute().items()}
        assert reduced == pytest.approx(expected, rel=1e-9)
