"""Run by test_streaming.py in two processes: each rank updates on its shard."""

import json
import os
import sys

import torch
import torch.distributed as dist

from captum_robust.metrics import KendallTau
from captum_robust.metrics import SilhouetteOverlap
from captum_robust.metrics import TopKIntersection

dist.init_process_group("gloo", init_method="env://")
rank, world = dist.get_rank(), dist.get_world_size()
generator = torch.Generator().manual_seed(0)
a = torch.rand(10, 3, 8, 8, generator=generator)
b = a + 0.3 * torch.rand(10, 3, 8, 8, generator=generator)
mask = torch.rand(10, 8, 8, generator=generator) > 0.5
metrics = [TopKIntersection(k=10), KendallTau(), SilhouetteOverlap()]
# Uneven shards: rank 0 gets 7 samples, rank 1 gets 3.
shard = slice(0, 7) if rank == 0 else slice(7, 10)
metrics[0].update(a[shard], b[shard])
metrics[1].update(a[shard], b[shard])
metrics[2].update(a[shard], mask[shard])
results = [{key: value.item() for key, value in m.compute().items()} for m in metrics]
if rank == 0:
    with open(sys.argv[1], "w") as handle:
        json.dump(results, handle)
dist.destroy_process_group()
os._exit(0)
