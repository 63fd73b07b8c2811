"""How a loader is split across ranks (the collective calls are faked here;
tests/distributed runs the real thing on two processes)."""

import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data import DistributedSampler
from torch.utils.data import IterableDataset
from torch.utils.data import TensorDataset

from captum_robust.evaluation import _distributed
from captum_robust.evaluation._distributed import rank_files
from captum_robust.evaluation._distributed import shard_loader

DATA = TensorDataset(torch.arange(10.0), torch.arange(10))


@pytest.fixture
def no_broadcast(monkeypatch):
    # Rank 0 already holds the order it would send.
    monkeypatch.setattr(
        _distributed.dist, "broadcast_object_list", lambda *a, **k: None
    )


def labels_of(loader):
    return [batch[1].tolist() for batch in loader]


def test_strided_shards_without_padding(no_broadcast):
    loader, positions = shard_loader(DataLoader(DATA, batch_size=2), rank=0, world=3)
    assert positions == [[0, 3], [6, 9]]
    assert labels_of(loader) == [[0, 3], [6, 9]]


def test_user_sampler_order_and_drop_last(no_broadcast):
    order = [9, 7, 5, 3, 1, 0, 2, 4, 6, 8]
    user = DataLoader(DATA, batch_size=3, sampler=order, drop_last=True)
    loader, positions = shard_loader(user, rank=0, world=2)
    # Positions 0..8 of the user's order (the short last batch is dropped).
    assert positions == [[0, 2, 4], [6, 8]]
    assert labels_of(loader) == [[9, 5, 1], [2, 6]]


def test_custom_batch_sampler(no_broadcast):
    user = DataLoader(DATA, batch_sampler=[[4, 5, 6], [0, 1], [9]])
    loader, positions = shard_loader(user, rank=0, world=2)
    assert positions == [[0, 2, 4]]
    assert labels_of(loader) == [[4, 6, 1]]


def test_distributed_sampler_reads_the_whole_data_set(no_broadcast):
    sampler = DistributedSampler(DATA, num_replicas=2, rank=1, shuffle=True)
    user = DataLoader(DATA, batch_size=4, sampler=sampler)
    _, positions = shard_loader(user, rank=0, world=2)
    assert positions == [[0, 2, 4, 6], [8]]


def test_loaders_that_cannot_be_sharded():
    with pytest.raises(TypeError, match="`loader` must be a torch DataLoader"):
        shard_loader([(torch.zeros(1), torch.zeros(1))], rank=0, world=2)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter([(torch.zeros(1), 0)])

    with pytest.raises(TypeError, match="`loader` must read a map-style data set"):
        shard_loader(DataLoader(Stream(), batch_size=1), rank=0, world=2)
    with pytest.raises(TypeError, match="`loader` must batch its samples"):
        shard_loader(DataLoader(DATA, batch_size=None), rank=0, world=2)


def test_rank_files_found_by_name(tmp_path):
    for name in ("r.rank0.jsonl", "r.rank12.jsonl", "r.rankx.jsonl", "q.rank1.jsonl"):
        (tmp_path / name).write_text("")
    found = rank_files(tmp_path / "r.jsonl")
    assert found == {0: tmp_path / "r.rank0.jsonl", 12: tmp_path / "r.rank12.jsonl"}
    assert rank_files(tmp_path / "missing" / "r.jsonl") == {}
