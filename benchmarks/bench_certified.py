"""Cost of certified_topk_overlap against the bare attribution calls it needs.

A certificate needs ``n`` explanations of noisy copies of every sample; the
reference is exactly that: the same chunks of ``batch_size`` copies (Gaussian
noise drawn for the chunk, one Saliency call per chunk), with nothing else.
The ratio ours / reference is what the sampling bookkeeping, the top-s
indicators and the bound add (target <= 1.1x). Prints ratios measured in this
run; `--quick` for smaller sizes, `--tv-samples 1024` for the paper's n on
resnet18.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings

import torch
import torchvision
from _models import small_cnn
from _timing import interleaved_best_times
from _timing import resident_kib
from _timing import synchronize
from captum.attr import Saliency

from captum_robust.metrics import certified_topk_overlap


def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def bare_calls(saliency, inputs, target, *, n, sigma, batch_size):
    """The n x B explanations in chunks of batch_size copies, nothing more."""
    batch = inputs.shape[0]
    total = n * batch
    generator = torch.Generator(device=inputs.device).manual_seed(0)
    rows = torch.arange(total, device=inputs.device) % batch
    out = None
    for start in range(0, total, batch_size):
        index = rows[start : start + batch_size]
        noise = torch.randn(
            (len(index), *inputs.shape[1:]),
            generator=generator,
            device=inputs.device,
        )
        out = saliency.attribute(
            inputs[index] + sigma * noise, target=target[index], abs=True
        )
    return out


def bench(name, model, size, images, n, batch_size, k, repeats, device):
    model = model.to(device)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.rand(images, 3, size, size, generator=generator).to(device)
    with torch.no_grad():
        target = model(inputs).argmax(1)
    saliency = Saliency(model)
    options = dict(k=k, radius=0.05, sigma=0.25, n_samples=n, batch_size=batch_size)

    def ours():
        return certified_topk_overlap(saliency, inputs, target, **options)

    def reference():
        return bare_calls(
            saliency, inputs, target, n=n, sigma=0.25, batch_size=batch_size
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_ours, t_ref = interleaved_best_times(
            [ours, reference], repeats=repeats, device=device
        )
    label = f"{name}, {images} images, n={n}, batch_size={batch_size}"
    print(
        f"{label:<52} ours {t_ours * 1e3:9.1f} ms   bare calls {t_ref * 1e3:9.1f} ms"
        f"   ratio {t_ours / t_ref:5.3f}x   (target <= 1.1x)"
    )


def peak_memory_child(which: str, n: int, images: int, batch_size: int, device: str):
    """Print the peak memory (bytes) of one call, in a fresh process."""
    model = small_cnn().to(device)
    inputs = torch.rand(images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    inputs = inputs.to(device)
    target = torch.zeros(images, dtype=torch.long, device=device)
    saliency = Saliency(model)

    def run(count):
        if which == "ours":
            certified_topk_overlap(
                saliency,
                inputs,
                target,
                k=100,
                radius=0.05,
                sigma=0.25,
                n_samples=count,
                batch_size=batch_size,
            )
        else:
            bare_calls(
                saliency, inputs, target, n=count, sigma=0.25, batch_size=batch_size
            )

    warnings.simplefilter("ignore")
    run(64)  # one-off costs: thread pool, kernels, allocator
    if device == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(n)
        print(torch.cuda.max_memory_allocated() - base)
        return
    # Writing 5 to clear_refs resets the peak resident size (VmHWM) on Linux.
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    base = resident_kib("VmRSS")
    run(n)
    print((resident_kib("VmHWM") - base) * 1024)


def peak_memory(n, images, batch_size, device, threads):
    """Peak memory of one call of each, in fresh processes.

    On the CPU glibc keeps freed heap pages resident, so the peak resident size
    would count the heap's history (it varied 0.3x-1.4x between runs); with
    ``MALLOC_MMAP_THRESHOLD_`` at 64 KiB every tensor is mapped and unmapped on
    its own, and the peak resident size is the peak live memory.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results = {}
    for which in ("ours", "bare"):
        command = [sys.executable, __file__, "--memory-child", which]
        command += ["--memory-n", str(n), "--memory-images", str(images)]
        command += ["--batch-size", str(batch_size), "--device", device]
        command += ["--threads", str(threads)]
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, env=env
        )
        results[which] = int(out.stdout.strip().splitlines()[-1])
    print(
        f"peak live memory, small CNN 32 px, {images} images, n={n}, batch_size="
        f"{batch_size}, {device}: ours {results['ours'] / 2**20:.1f} MiB, bare "
        f"calls {results['bare'] / 2**20:.1f} MiB, ratio "
        f"{results['ours'] / max(results['bare'], 1):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=8, help="32 px batch")
    parser.add_argument("--samples", type=int, default=256, help="n at 32 px")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--tv-images", type=int, default=2)
    parser.add_argument(
        "--tv-samples", type=int, default=64, help="n for resnet18 at 224 px"
    )
    parser.add_argument("--tv-batch-size", type=int, default=32)
    parser.add_argument("--memory-n", type=int, default=1024)
    parser.add_argument("--memory-images", type=int, default=8)
    parser.add_argument("--memory-child", choices=["ours", "bare"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        peak_memory_child(
            args.memory_child,
            args.memory_n,
            args.memory_images,
            args.batch_size,
            args.device,
        )
        return
    print(
        f"{args.device}, {args.threads} torch thread(s); best of repeated runs, "
        "interleaved, after a warm-up. Saliency, sigma 0.25, radius 0.05, "
        "sparsity 0.1, Hoeffding bound; the reference draws the same number of "
        "noisy copies and explains them in the same chunks."
    )
    if args.quick:
        bench("small CNN 32 px", small_cnn(), 32, 4, 64, 64, 50, 3, args.device)
        peak_memory(256, 4, 64, args.device, args.threads)
        return
    bench(
        "small CNN 32 px",
        small_cnn(),
        32,
        args.images,
        args.samples,
        args.batch_size,
        100,
        args.repeats,
        args.device,
    )
    bench(
        "resnet18 224 px",
        resnet18(),
        224,
        args.tv_images,
        args.tv_samples,
        args.tv_batch_size,
        1000,
        max(2, args.repeats // 2),
        args.device,
    )
    peak_memory(
        args.memory_n, args.memory_images, args.batch_size, args.device, args.threads
    )


if __name__ == "__main__":
    main()
