"""Speed of the similarity and sensitivity metrics against Quantus, Captum and skimage.

Prints ratios measured in this run; run with `make bench` (or
`python benchmarks/bench_metric_families.py --quick` for smaller sizes).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from _models import small_cnn
from _timing import best_time
from _timing import interleaved_best_times
from _timing import report
from captum.attr import Saliency
from captum.metrics import sensitivity_max
from skimage.metrics import structural_similarity as skimage_ssim

from captum_robust.metrics import max_sensitivity
from captum_robust.metrics import structural_similarity


def bench_max_sensitivity(images: int, perturbations: int, repeats: int) -> None:
    import quantus

    model = small_cnn()
    inputs = torch.rand(images, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    target = model(inputs).argmax(1)
    saliency = Saliency(model)

    def ours() -> torch.Tensor:
        return max_sensitivity(
            saliency, inputs, target=target, n_perturbations=perturbations
        )

    def captum() -> torch.Tensor:
        return sensitivity_max(
            saliency.attribute, inputs, n_perturb_samples=perturbations, target=target
        )

    def explain(model, inputs, targets, **kwargs):
        x = torch.as_tensor(inputs, dtype=torch.float32)
        y = torch.as_tensor(targets).long()
        return saliency.attribute(x, target=y).detach().numpy()

    # Same settings: radius 0.02 uniform, raw saliency, no normalisation.
    metric = quantus.MaxSensitivity(
        nr_samples=perturbations,
        lower_bound=0.02,
        abs=False,
        normalise=False,
        disable_warnings=True,
    )
    x_np, y_np = inputs.numpy(), target.numpy()

    def with_quantus() -> object:
        return metric(
            model=model,
            x_batch=x_np,
            y_batch=y_np,
            a_batch=None,
            explain_func=explain,
            device="cpu",
            batch_size=images,
        )

    # The explanations every implementation computes: x and each perturbed copy,
    # here in one batched call (no perturbation, no scoring).
    everything = inputs.repeat(perturbations + 1, 1, 1, 1)
    all_targets = target.repeat(perturbations + 1)

    def explanations_only() -> torch.Tensor:
        return saliency.attribute(everything, target=all_targets)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # In turn: a slow spell of the machine hits all three alike.
        t_ours, t_captum, t_floor = interleaved_best_times(
            [ours, captum, explanations_only], repeats=repeats
        )
        t_quantus = best_time(with_quantus, repeats=max(1, repeats // 2))
    label = f"max_sensitivity, Saliency, {images} images, {perturbations} draws"
    report(label + " vs Quantus", t_ours, t_quantus, ">= 10x")
    report(label + " vs Captum", t_ours, t_captum, ">= 1x")
    print(
        f"  the {perturbations + 1} x {images} explanations alone, one batched call: "
        f"{t_floor * 1e3:.1f} ms; Quantus takes {t_quantus / t_floor:.1f}x that, "
        f"which bounds the speed-up of any implementation; ours "
        f"{t_ours / t_floor:.2f}x"
    )


def bench_ssim(maps: int, size: int, repeats: int) -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(maps, size, size, generator=generator)
    b = (a + 0.2 * torch.rand(maps, size, size, generator=generator)).clamp(0, 1)
    a_np, b_np = a.double().numpy(), b.double().numpy()

    def ours() -> torch.Tensor:
        return structural_similarity(a, b)

    def loop() -> np.ndarray:
        out = []
        for x, y in zip(a_np, b_np):
            data_range = max(x.max(), y.max()) - min(x.min(), y.min())
            out.append(
                skimage_ssim(
                    x,
                    y,
                    gaussian_weights=True,
                    sigma=1.5,
                    win_size=7,
                    use_sample_covariance=False,
                    data_range=data_range,
                )
            )
        return np.array(out)

    np.testing.assert_allclose(ours().numpy(), loop(), rtol=1e-4, atol=1e-5)
    t_ours = best_time(ours, repeats=repeats)
    t_loop = best_time(loop, repeats=max(1, repeats // 2))
    report(
        f"structural_similarity, {maps} maps {size}x{size} vs skimage loop",
        t_ours,
        t_loop,
        ">= 10x",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: skimage and Quantus' numpy work run on "
        "one core, and on a shared machine extra OpenMP threads stall at every "
        "barrier)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"CPU, {args.threads} torch thread(s); best of repeated runs after a "
        "warm-up. max_sensitivity: small CNN on 3x32x32, Saliency, uniform "
        "L-inf radius 0.02, Frobenius norm over ||e(x)||, all methods explain "
        "x once and every perturbed copy once. SSIM: float32 maps (skimage: "
        "float64), window 7, sigma 1.5, per-pair data range."
    )
    if args.quick:
        bench_max_sensitivity(16, 4, repeats=1)
        bench_ssim(32, 64, repeats=1)
    else:
        bench_max_sensitivity(64, 10, repeats=6)
        bench_ssim(256, 224, repeats=3)


if __name__ == "__main__":
    main()
