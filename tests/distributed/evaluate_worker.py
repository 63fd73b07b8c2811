"""Evaluates a small case; run plainly and under torchrun by the distributed tests."""

import json
import os
import sys

import torch
import torch.distributed as dist
from captum.attr import Saliency
from torch.utils.data import DataLoader
from torch.utils.data import TensorDataset

from captum_robust.attacks import TopKAttack
from captum_robust.datasets import make_silhouette_digits
from captum_robust.evaluation import demo_model
from captum_robust.evaluation import evaluate_robustness

torch.set_num_threads(1)
# mode: "fresh" or "resume"; order: "plain" (data-set order) or "shuffled" (a
# sampler of the user's that permutes the data and drops the last short batch).
output, mode = sys.argv[1], sys.argv[2]
order = sys.argv[3] if len(sys.argv) > 3 else "plain"
distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
if distributed:
    dist.init_process_group("gloo")
rank = dist.get_rank() if distributed else 0
torch.manual_seed(0)
model = demo_model().eval()
data = make_silhouette_digits(11, split="test", image_size=16, seed=3)
dataset = TensorDataset(data.images, data.labels, data.masks)
if order == "shuffled":
    permutation = torch.randperm(11, generator=torch.Generator().manual_seed(5))
    loader = DataLoader(
        dataset, batch_size=3, sampler=permutation.tolist(), drop_last=True
    )
else:
    loader = DataLoader(dataset, batch_size=3)
evaluated = []
attack = TopKAttack(
    model, Saliency(model), k=20, n_steps=3, epsilon=0.03, step_size=0.01
)
result = evaluate_robustness(
    model,
    loader,
    Saliency(model),
    attack,
    k=20,
    records_path=f"{output}/records.jsonl",
    resume=mode == "resume",
    progress=False,
    on_batch=lambda records: evaluated.extend(r["index"] for r in records),
)
with open(f"{output}/evaluated.{rank}.json", "w") as handle:
    json.dump(evaluated, handle)
if not distributed or dist.get_rank() == 0:
    with open(f"{output}/result.json", "w") as handle:
        json.dump({"records": result.records, "summary": result.summary}, handle)
if distributed:
    dist.destroy_process_group()
