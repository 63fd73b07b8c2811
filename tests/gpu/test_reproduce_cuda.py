"""The adversary and the reproduction on a CUDA device; skipped without one."""

import dataclasses

import pytest
import torch
from torch import nn

from captum_robust.attacks import pgd_cross_entropy
from captum_robust.attacks import robust_accuracy

pytestmark = pytest.mark.gpu


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))


def test_robust_accuracy_on_cuda_stays_there_and_is_seeded():
    model = _model().cuda()
    x = torch.rand(32, 1, 8, 8, device="cuda")
    y = torch.randint(0, 4, (32,), device="cuda")
    g = lambda: torch.Generator(device="cuda").manual_seed(0)  # noqa: E731
    adv = pgd_cross_entropy(model, x, y, epsilon=0.1, steps=5, generator=g())
    assert adv.device.type == "cuda" and ((adv - x).abs() <= 0.1 + 1e-6).all()
    again = pgd_cross_entropy(model, x, y, epsilon=0.1, steps=5, generator=g())
    assert torch.equal(adv, again)
    result = robust_accuracy(model, (x, y), epsilon=0.1, steps=5, step_size=0.05)
    assert result.accuracy <= result.clean_accuracy
    # Without the random start the CPU gives the same steps.
    cpu = _model()
    on_cpu = pgd_cross_entropy(
        cpu, x.cpu(), y.cpu(), epsilon=0.1, steps=5, random_start=False
    )
    on_gpu = pgd_cross_entropy(model, x, y, epsilon=0.1, steps=5, random_start=False)
    # Rounding may flip the sign of a near-zero gradient entry, nothing more.
    assert (on_cpu == on_gpu.cpu()).float().mean() > 0.95


def test_reproduction_runs_on_cuda(tmp_path):
    pytest.importorskip("mlxtend")
    from captum_robust.evaluation import ReproduceSettings
    from captum_robust.evaluation import run_reproduction

    s = dataclasses.replace(
        ReproduceSettings.quick(),
        train_size=500,
        test_size=60,
        monitor_size=20,
        paired_images=5,
        attack_steps=2,
    )
    methods = ("NATURAL", "PGD-AT", "IG-SUM-NORM", "HessianNorm", "Top-GAP")
    results = run_reproduction(
        tmp_path, s, methods=methods, device="cuda", progress=False, log=str
    )
    assert len(results["paired_images"]) >= 1
    # The checkpoints resume on the CPU.
    again = run_reproduction(
        tmp_path, s, methods=methods, device="cpu", progress=False, log=str
    )
    assert again["paired_images"] == results["paired_images"]
