"""Sharding and gathering for evaluations under torch.distributed (torchrun)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class StridedShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of a data set of ``length`` samples.

    Unlike ``DistributedSampler`` it never pads a shard with repeated samples,
    so no sample is evaluated twice when ``length`` is not a multiple of the
    number of processes; shards differ in size by at most one.
    """

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


def shard_loader(
    loader: Any, rank: int, world: int
) -> tuple[DataLoader, list[list[int]]]:
    """Rebuild a DataLoader so that this rank reads its strided shard.

    Returns the new loader and, for each of its batches, the data-set indices
    of the samples, which key the records.
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(
            "`loader` must be a torch DataLoader when running under torch.distributed, "
            f"so that it can be sharded across ranks; got {type(loader).__name__}."
        )
    batch_size = loader.batch_size or 1
    shard = list(StridedShardSampler(len(loader.dataset), rank, world))
    batches = [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]
    sharded = DataLoader(
        loader.dataset,
        batch_sampler=batches,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )
    return sharded, batches


def rank_path(path: str | Path | None, rank: int, world: int) -> Path | None:
    """``records.jsonl`` -> ``records.rank1.jsonl`` when distributed."""
    if path is None or world == 1:
        return None if path is None else Path(path)
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def gather_objects(value: Any, world: int) -> Sequence[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


def synchronize(world: int) -> None:
    """Wait until every rank gets here (nothing to wait for in one process)."""
    if world > 1:
        dist.barrier()
