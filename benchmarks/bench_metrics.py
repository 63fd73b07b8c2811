"""Speed and memory of the rank metrics against per-sample scipy/numpy loops.

Prints ratios measured in this run; run with `make bench`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import scipy.stats
import torch
from _timing import best_time
from _timing import report
from _timing import resident_kib

from captum_robust.metrics import center_of_mass_shift
from captum_robust.metrics import flatten_attribution
from captum_robust.metrics import kendall_tau
from captum_robust.metrics import pointing_game
from captum_robust.metrics import silhouette_overlap
from captum_robust.metrics import topk_intersection


def scipy_kendall_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([scipy.stats.kendalltau(x, y).statistic for x, y in zip(a, b)])


def numpy_topk_loop(
    a: np.ndarray, b: np.ndarray, k: int, fast: bool = False
) -> np.ndarray:
    """The reference codes' loop: a full argsort per map; ``fast`` partitions."""
    out = np.empty(len(a))
    for i, (x, y) in enumerate(zip(a, b)):
        if fast:
            top_x = np.argpartition(-x, k - 1)[:k]
            top_y = np.argpartition(-y, k - 1)[:k]
        else:
            top_x, top_y = np.argsort(x)[-k:], np.argsort(y)[-k:]
        out[i] = len(np.intersect1d(top_x, top_y)) / k
    return out


def peak_memory_child(side: int, batch: int, device: str) -> None:
    """Print the peak memory of one kendall_tau call on ``batch`` maps."""
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(batch, 1, side, side, generator=generator).to(device)
    b = torch.rand(batch, 1, side, side, generator=generator).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        kendall_tau(a, b)
        print(torch.cuda.max_memory_allocated() - base)
    else:
        # A first small call pays the one-off costs (thread pool, kernels).
        kendall_tau(a[:1, :, :8, :8], b[:1, :, :8, :8])
        # Writing 5 to clear_refs resets the peak resident size (VmHWM) on Linux.
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        base = resident_kib("VmHWM")
        kendall_tau(a, b)
        print((resident_kib("VmHWM") - base) * 1024)


def bench_map_preparation(device: str) -> None:
    """Channel reduction and the metrics around it, against bare torch code.

    The reference is the least any implementation must do (absolute value,
    channel sum, flatten, or the bare formula of the score), so the ratio shows
    what validation, overflow safety and the degenerate-map rule cost on the
    common path. The last line times maps near the float32 maximum, where the
    overflow-safe path rescales samples.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(64, 3, 224, 224, generator=generator).to(device)
    b = (a + 0.5 * torch.rand(64, 3, 224, 224, generator=generator).to(device)) / 1.5
    mask = torch.rand(64, 224, 224, generator=generator).to(device) > 0.5
    mask[:, 0, 0] = True

    def bare_flat(x: torch.Tensor) -> torch.Tensor:
        return x.abs().sum(1).flatten(1)

    def bare_center_shift(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def center(m: torch.Tensor) -> torch.Tensor:
            rows = torch.arange(m.shape[1], device=m.device, dtype=m.dtype)
            cols = torch.arange(m.shape[2], device=m.device, dtype=m.dtype)
            mass = m.sum(dim=(1, 2))
            return torch.stack(
                ((m.sum(2) * rows).sum(1) / mass, (m.sum(1) * cols).sum(1) / mass), 1
            )

        return (center(x.abs().sum(1)) - center(y.abs().sum(1))).norm(dim=1)

    def bare_overlap(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        maps = x.abs().sum(1).flatten(1)
        return (maps * m.flatten(1)).sum(1) / maps.sum(1)

    def bare_pointing(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        maps = x.abs().sum(1).flatten(1)
        return m.flatten(1).gather(1, maps.argmax(1, keepdim=True)).squeeze(1)

    print("map preparation, 64 x 3 x 224 x 224 float32 (ratio = bare torch / ours):")
    cases = [
        ("flatten_attribution", lambda: flatten_attribution(a), lambda: bare_flat(a)),
        (
            "center_of_mass_shift",
            lambda: center_of_mass_shift(a, b),
            lambda: bare_center_shift(a, b),
        ),
        (
            "silhouette_overlap",
            lambda: silhouette_overlap(a, mask),
            lambda: bare_overlap(a, mask),
        ),
        (
            "pointing_game",
            lambda: pointing_game(a, mask),
            lambda: bare_pointing(a, mask),
        ),
    ]
    huge = a * torch.finfo(torch.float32).max
    cases.append(
        (
            "flatten_attribution, values near float32 max",
            lambda: flatten_attribution(huge),
            lambda: flatten_attribution(a),
        )
    )
    for name, ours_fn, reference_fn in cases:
        ours = best_time(ours_fn, device=device)
        reference = best_time(reference_fn, device=device)
        report(f"  {name}", ours, reference, "-")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--memory-child", type=int, default=None)
    parser.add_argument("--memory-batch", type=int, default=64)
    parser.add_argument(
        "--only-maps", action="store_true", help="run only the map-preparation part"
    )
    args = parser.parse_args()
    if args.memory_child is not None:
        peak_memory_child(args.memory_child, args.memory_batch, args.device)
        return
    torch.set_num_threads(2 if args.device == "cpu" else torch.get_num_threads())
    device = args.device
    generator = torch.Generator().manual_seed(0)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    bench_map_preparation(device)
    if args.only_maps:
        return

    target = ">= 1x on CPU, aim 2x" if device == "cpu" else ">= 100x on GPU"
    a = torch.rand(64, 1, 224, 224, generator=generator)
    noise = torch.rand(64, 1, 224, 224, generator=generator)
    cases = {
        "continuous": a + noise,
        "3-decimal ties": (a + noise).round(decimals=3),
    }
    for name, b in cases.items():
        a_np, b_np = a.flatten(1).double().numpy(), b.flatten(1).double().numpy()
        a_dev, b_dev = a.to(device), b.to(device)
        ours = best_time(lambda x=a_dev, y=b_dev: kendall_tau(x, y), device=device)
        reference = best_time(
            lambda x=a_np, y=b_np: scipy_kendall_loop(x, y), repeats=3
        )
        report(
            f"kendall_tau, 64 maps 224x224 ({name}) vs scipy", ours, reference, target
        )
        np.testing.assert_allclose(
            kendall_tau(a_dev, b_dev).cpu().double().numpy(),
            scipy_kendall_loop(a_np, b_np),
            rtol=1e-5,
        )

    a = torch.rand(256, 3, 224, 224, generator=generator)
    b = a + 0.5 * torch.rand(256, 3, 224, 224, generator=generator)
    maps_a, maps_b = a.abs().sum(1), b.abs().sum(1)
    a_np, b_np = maps_a.flatten(1).numpy(), maps_b.flatten(1).numpy()
    a_dev, b_dev = maps_a.to(device), maps_b.to(device)
    ours = best_time(lambda: topk_intersection(a_dev, b_dev, 1000), device=device)
    reference = best_time(lambda: numpy_topk_loop(a_np, b_np, 1000), repeats=3)
    report("topk_intersection k=1000 vs argsort loop", ours, reference, ">= 10x")
    reference = best_time(lambda: numpy_topk_loop(a_np, b_np, 1000, fast=True))
    report("topk_intersection k=1000 vs argpartition loop", ours, reference, "-")

    # Working memory beyond the inputs; on the CPU rows are processed a few at
    # a time, so a batch's peak is bounded by a chunk of rows while one map's
    # peak shows the growth with its size.
    print("peak memory of kendall_tau beyond its inputs (linear in pixels per map):")
    for side in (64, 128, 224):
        line = f"  {side:>3}x{side:<3}"
        for batch in (1, 64):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--memory-child",
                    str(side),
                    "--memory-batch",
                    str(batch),
                    "--device",
                    device,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            peak = int(out.stdout.strip())
            line += (
                f"   {batch:>2} map{'s' if batch > 1 else ' '}: {peak / 2**20:7.1f} MiB"
                f" ({peak / (batch * side * side):6.1f} B/px)"
            )
        print(line)


if __name__ == "__main__":
    main()
