"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], *, repeats: int = 5, device="cpu") -> float:
    """Best wall time of ``repeats`` runs after one warm-up, in seconds."""
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def report(name: str, ours: float, reference: float, target: str) -> None:
    print(
        f"{name:<48} ours {ours * 1e3:9.1f} ms   reference {reference * 1e3:9.1f} ms"
        f"   speed-up {reference / ours:6.1f}x   (target {target})"
    )
