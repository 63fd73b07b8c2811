"""Every regularizer trains inside DistributedDataParallel as it does without.

ddp_worker.py runs two SGD steps per regularizer configuration in one process
(no DDP, the whole batch of 8) and on two gloo ranks under torchrun (the model
wrapped in plain ``DistributedDataParallel``, 4 samples per rank); the losses
and DDP's averaged gradients must equal the single-process ones.
"""

from pathlib import Path

import pytest
import torch

WORKER = str(Path(__file__).with_name("ddp_worker.py"))
TOL = 1e-5


def _load(path):
    return torch.load(path, weights_only=False)


def _max_diff(a, b):
    return max((a[n] - b[n]).abs().max().item() for n in a)


def test_regularizers_under_ddp_match_one_process(launch, tmp_path):
    launch([WORKER, str(tmp_path)])
    launch([WORKER, str(tmp_path)], nproc=2)
    single = _load(tmp_path / "single.pt")
    ranks = [_load(tmp_path / f"ddp.rank{r}.pt") for r in (0, 1)]

    # HessianNorm refuses a training-mode batch-norm layer behind the wrapper too.
    assert "batch-norm layer in training mode" in ranks[0]["_bn_train_refused"]

    # So does SyncBatchNorm in training mode, with every regularizer.
    refused = ranks[1]["_sync_bn_refused"]
    assert len(refused) == 3
    assert all("SyncBatchNorm layer in training mode" in msg for msg in refused)

    names = [name for name in single if not name.startswith("_")]
    assert len(names) == 21
    for name in names:
        for step in range(2):
            loss, grads = single[name][step]
            for rank in ranks:
                ddp_loss, ddp_grads = rank[name][step]
                assert ddp_loss == pytest.approx(loss, rel=TOL, abs=TOL), name
                assert ddp_grads.keys() == grads.keys(), name
                assert _max_diff(ddp_grads, grads) <= TOL, (name, step)
        if not name.startswith("ce"):
            # Each term is large enough that a dropped one would be caught;
            # compared with plain cross-entropy on the same architecture. (IG-NORM
            # without a random start has a zero term on the first step: its
            # attack starts where the integral vanishes.)
            reference = {"_bn_eval": "ce_bn", "_bn_train": "ce_bn_train"}
            ce = single[
                next((v for k, v in reference.items() if name.endswith(k)), "ce")
            ]
            change = max(
                _max_diff(single[name][step][1], ce[step][1]) for step in range(2)
            )
            assert change > 100 * TOL, name
