"""Timing and memory measurements shared by the benchmark scripts."""

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


def interleaved_best_times(
    fns: list[Callable[[], object]], *, repeats: int = 15, device="cpu"
) -> list[float]:
    """Best wall time of each function, the functions run in turn ``repeats`` times
    after one warm-up each: a slow spell of the machine hits all of them alike, so
    their ratio is steadier than from separate runs."""
    for fn in fns:
        fn()
    synchronize(device)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            synchronize(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def report(name: str, ours: float, reference: float, target: str) -> None:
    print(
        f"{name:<48} ours {ours * 1e3:9.1f} ms   reference {reference * 1e3:9.1f} ms"
        f"   speed-up {reference / ours:6.1f}x   (target {target})"
    )


def resident_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in KiB:
    ``"VmRSS"`` (resident now) or ``"VmHWM"`` (peak resident)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")
