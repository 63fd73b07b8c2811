"""Sharding and gathering for evaluations under torch.distributed (torchrun)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data import DistributedSampler
from torch.utils.data import IterableDataset
from torch.utils.data import Sampler


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class StridedShardSampler(Sampler[int]):
    """Positions ``rank, rank + world, ...`` of a sequence of ``length`` samples.

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


def _loader_order(loader: DataLoader) -> tuple[list[int], int]:
    """Data-set indices in the order one process reads them, and the batch size."""
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            "`loader` must read a map-style data set (with __getitem__ and "
            "__len__) under torch.distributed, so that its samples can be split "
            "across ranks; got an IterableDataset."
        )
    if isinstance(loader.sampler, DistributedSampler):
        # Its shard is one rank's; read the whole data set and shard it here.
        order = list(range(len(loader.dataset)))
        batch_size = loader.batch_size or 1
        if loader.drop_last:
            order = order[: len(order) - len(order) % batch_size]
        return order, batch_size
    if loader.batch_sampler is None:
        raise TypeError(
            "`loader` must batch its samples (a batch_size or a batch_sampler) "
            "under torch.distributed; got a DataLoader with batch_size=None."
        )
    batches = [list(batch) for batch in loader.batch_sampler]
    batch_size = loader.batch_size or max((len(b) for b in batches), default=1)
    return [int(i) for batch in batches for i in batch], batch_size


def shard_loader(
    loader: Any, rank: int, world: int
) -> tuple[DataLoader, list[list[int]]]:
    """Rebuild a DataLoader so that this rank reads its strided shard.

    The shard is taken from the order in which the loader reads its data set
    in one process (its sampler or batch sampler, drawn once on rank 0 and
    shared, so a shuffling sampler gives every rank the same order). Records
    are keyed by the position in that order, as in one process; without a
    sampler of the user's, that is the index in the data set.

    Returns the new loader and, for each of its batches, the positions of its
    samples.
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(
            "`loader` must be a torch DataLoader when running under torch.distributed, "
            f"so that it can be sharded across ranks; got {type(loader).__name__}."
        )
    payload: list[Any] = [_loader_order(loader) if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(payload, src=0)
    order, batch_size = payload[0]
    shard = list(StridedShardSampler(len(order), rank, world))
    positions = [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]
    options: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "worker_init_fn": loader.worker_init_fn,
        "timeout": loader.timeout,
        "generator": loader.generator,
    }
    if loader.num_workers > 0:
        options["multiprocessing_context"] = loader.multiprocessing_context
        options["prefetch_factor"] = loader.prefetch_factor
        options["persistent_workers"] = loader.persistent_workers
    sharded = DataLoader(
        loader.dataset,
        batch_sampler=[[order[p] for p in batch] for batch in positions],
        **options,
    )
    return sharded, positions


def rank_path(path: str | Path | None, rank: int, world: int) -> Path | None:
    """``records.jsonl`` -> ``records.rank1.jsonl`` when distributed."""
    if path is None or world == 1:
        return None if path is None else Path(path)
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def rank_files(path: Path) -> dict[int, Path]:
    """The per-rank record files written beside ``path``, by rank."""
    pattern = re.compile(rf"{re.escape(path.stem)}\.rank(\d+){re.escape(path.suffix)}")
    if not path.parent.is_dir():
        return {}
    found = {}
    for candidate in path.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match is not None and candidate.is_file():
            found[int(match.group(1))] = candidate
    return dict(sorted(found.items()))


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


def broadcast_object(value: Any, world: int) -> Any:
    """Rank 0's ``value`` on every rank."""
    if world == 1:
        return value
    payload = [value]
    dist.broadcast_object_list(payload, src=0)
    return payload[0]
