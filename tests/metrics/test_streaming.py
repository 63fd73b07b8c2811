"""Streaming metrics reduced across distributed ranks equal one process.

Each streaming metric against its function over batches, NaN samples included,
is in test_streaming_matches_functions.py.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captum_robust.metrics import KendallTau
from captum_robust.metrics import SilhouetteOverlap
from captum_robust.metrics import TopKIntersection


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
