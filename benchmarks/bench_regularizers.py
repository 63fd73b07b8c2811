"""Training-step time and peak memory of each regularizer against a cross-entropy
step: torchvision's resnet18 at 224x224, batch 8, on the CPU.

Every step is zero_grad + loss + backward + SGD step. Each case runs in a fresh
Python process (``--case NAME``): its first step measures the peak memory, the
following ones the time (best of ``--repeats``).

Peak memory: the process's peak resident set size (``resource.getrusage``
``ru_maxrss``) after the first step, minus its resident set size just before it
(``/proc/self/statm``), once the model, the batch and the optimizer exist. A
fresh process per case means that no earlier case's peak hides this one's, and
the measure covers every allocation (parameters' .grad fields, activations, the
autograd graph, allocator slack), not only tensors.

Time columns use few path points (``--time-steps``, default 4, with the inner
maximisation at half of them and one PGD step); the memory claim of the
path-integral regularizers is measured at Chen's 50 path points (inner
maximisation at every 5th, one PGD step: memory does not grow with the number of
PGD steps). The path-integral regularizers also run in a single pass
(``internal_batch_size = n_steps * batch``, the computation before they processed
the path in passes) at the time-column setting, for the time ratio of the two.

Freed pages inside glibc's heaps stay resident, so the peak RSS of many passes
would include fragmentation that grows with the number of passes; the path
passes hand them back (``malloc_trim``, at most once a second). At 96x96
pixels the EnhancedAttributionRegularizer step's peak went from 323 MiB (10
path points) to 379 MiB (40) without that, from 307 to 318 MiB when trimming
after every pass, and from 366 to 379 MiB at most once a second (runs vary by
about 40 MiB; at 224x224 every pass takes longer than a second).
``--malloc-mmap-threshold`` fixes glibc's mmap threshold in the workers, which
counts live memory only (at 2-2.6x the time).

Run with ``make bench`` or ``python benchmarks/bench_regularizers.py``. On 2
shared CPU cores one 50-point step took about 2.5 minutes (IGNorm) to 13
(Enhanced); ``--skip-memory-claim`` leaves those out, ``--memory-steps`` lowers
the number of path points (pass memory does not depend on it), ``--size`` the
image side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from captum_robust.regularizers import EnhancedAttributionRegularizer
from captum_robust.regularizers import ExplanationConsistencyWeights
from captum_robust.regularizers import HessianNorm
from captum_robust.regularizers import IGNorm
from captum_robust.regularizers import IGSumNorm
from captum_robust.regularizers import LocalGradientAlignment
from captum_robust.regularizers import MaskedGradientPenalty
from captum_robust.regularizers import replace_global_pool
from captum_robust.regularizers import top_gap_penalty

EPS = 8 / 255
BATCH, CLASSES = 8, 10
# Image side; --size changes it (quick memory studies at a smaller size).
SIZE = [224]
PATH_CASES = ("IGNorm", "IGSumNorm", "EnhancedAttributionRegularizer")
CASES = (
    "cross-entropy",
    "LocalGradientAlignment",
    "HessianNorm",
    "MaskedGradientPenalty",
    *PATH_CASES,
    "ExplanationConsistencyWeights",
    "TopGAP",
)
TARGET_MEMORY = "<= 3x"
# glibc's mmap threshold for the workers (None: glibc's adaptive default).
MMAP_THRESHOLD: list[int | None] = [None]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _path_kwargs(n_steps: int, single_pass: bool) -> dict:
    return dict(
        n_steps=n_steps,
        approx_factor=2 if n_steps < 10 else 5,
        attack_steps=1,
        attack_step_size=2 / 255,
        internal_batch_size=n_steps * BATCH if single_pass else None,
        seed=0,
    )


def _loss_fn(case: str, model: nn.Module, n_steps: int, single_pass: bool):
    """The step's loss as a closure, and the model it trains."""
    if case == "cross-entropy":
        return lambda x, y, mask: F.cross_entropy(model(x), y), model
    if case == "LocalGradientAlignment":
        reg = LocalGradientAlignment(EPS, seed=0)
        return lambda x, y, mask: reg.loss(model, x, y), model
    if case == "HessianNorm":
        # Third derivatives: batch-norm layers must be in eval mode; the ReLU
        # network needs the softplus surrogate for a non-zero term.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        reg = HessianNorm(1e-4, softplus_beta=3.0, seed=0)
        return lambda x, y, mask: reg.loss(model, x, y), model
    if case == "MaskedGradientPenalty":
        reg = MaskedGradientPenalty()
        return lambda x, y, mask: reg.loss(model, x, y, mask), model
    if case in PATH_CASES:
        cls = {
            "IGNorm": IGNorm,
            "IGSumNorm": IGSumNorm,
            "EnhancedAttributionRegularizer": EnhancedAttributionRegularizer,
        }[case]
        reg = cls(EPS, **_path_kwargs(n_steps, single_pass))
        return lambda x, y, mask: reg.loss(model, x, y), model
    if case == "ExplanationConsistencyWeights":
        reg = ExplanationConsistencyWeights(eps=EPS, attack_steps=2, seed=0)
        return lambda x, y, mask: reg.loss(model, x, y), model
    if case == "TopGAP":
        replace_global_pool(model, 0.25, l1_weight=1e-3)
        return (
            lambda x, y, mask: F.cross_entropy(model(x), y) + top_gap_penalty(model),
            model,
        )
    raise ValueError(f"unknown case {case!r}")


def worker(case: str, n_steps: int, single_pass: bool, repeats: int, threads: int):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = resnet18(num_classes=CLASSES).train()
    gen = torch.Generator().manual_seed(0)
    size = SIZE[0]
    x = torch.rand(BATCH, 3, size, size, generator=gen)
    y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
    mask = torch.zeros(BATCH, size, size, dtype=torch.bool)
    mask[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    loss_fn, model = _loss_fn(case, model, n_steps, single_pass)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(x, y, mask).backward()
        opt.step()

    before = _rss_bytes()
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    peak = _max_rss_bytes() - before
    best = first
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"peak": peak, "time": best}))


def run_case(case, n_steps, single_pass, repeats, threads) -> dict:
    command = [
        sys.executable, __file__, "--case", case, "--n-steps", str(n_steps),
        "--repeats", str(repeats), "--threads", str(threads),
        "--size", str(SIZE[0]),
    ]  # fmt: skip
    if single_pass:
        command.append("--single-pass")
    env = dict(os.environ)
    if MMAP_THRESHOLD[0] is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD[0])
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"{case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--n-steps", type=int, default=4)
    parser.add_argument("--single-pass", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="image side (pixels)")
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--memory-steps", type=int, default=50)
    parser.add_argument("--skip-memory-claim", action="store_true")
    parser.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        default=None,
        help="bytes; fixes glibc's mmap threshold in the workers, so that freed "
        "large blocks go back to the system and the peak RSS counts live memory "
        "rather than allocator slack (slower: every large block is mapped afresh)",
    )
    args = parser.parse_args()
    MMAP_THRESHOLD[0] = args.malloc_mmap_threshold
    SIZE[0] = args.size
    if args.case:
        worker(args.case, args.n_steps, args.single_pass, args.repeats, args.threads)
        return

    print(
        f"resnet18, {BATCH}x3x{SIZE[0]}x{SIZE[0]}, CPU, {args.threads} torch threads; "
        "peak memory = peak RSS of a fresh process minus its RSS before the step"
    )
    ce = run_case("cross-entropy", 0, False, args.repeats, args.threads)
    mib = 2**20
    print(
        f"{'cross-entropy step':<52} {ce['time'] * 1e3:9.0f} ms "
        f"{ce['peak'] / mib:8.0f} MiB"
    )
    m = args.time_steps
    for case in CASES[1:]:
        label = f"{case} (m={m})" if case in PATH_CASES else case
        r = run_case(case, m, False, args.repeats, args.threads)
        print(
            f"{label:<52} {r['time'] / ce['time']:7.1f}x time "
            f"{r['peak'] / ce['peak']:6.1f}x memory"
        )
        if case in PATH_CASES:
            single = run_case(case, m, True, args.repeats, args.threads)
            print(
                f"{'  in one pass (before: no chunking)':<52} "
                f"{single['time'] / ce['time']:7.1f}x time "
                f"{single['peak'] / ce['peak']:6.1f}x memory   "
                f"chunked / one pass: time {r['time'] / single['time']:.2f}x, "
                f"memory {r['peak'] / single['peak']:.2f}x"
            )
    if args.skip_memory_claim:
        return
    m = args.memory_steps
    print(f"path-integral regularizers at m={m} path points (target {TARGET_MEMORY}):")
    for case in PATH_CASES:
        r = run_case(case, m, False, 0, args.threads)
        print(
            f"  {case + f' (m={m}, one step)':<50} {r['peak'] / ce['peak']:6.1f}x "
            f"memory  ({r['time']:.0f} s)"
        )


if __name__ == "__main__":
    main()
