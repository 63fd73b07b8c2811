"""The attacks run on CUDA with the same code; skipped without one."""

import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr import Saliency
from helpers.models import tiny_bn_inputs
from helpers.models import tiny_bn_net

from captum_robust.attacks import ManipulationAttack
from captum_robust.attacks import RandomAttack
from captum_robust.attacks import TopKAttack

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("method", [Saliency, IntegratedGradients])
def test_attacks_on_cuda_match_cpu(method):
    tiny, tiny_x = tiny_bn_net(), tiny_bn_inputs()
    budget = {"epsilon": 0.1, "step_size": 0.02, "n_steps": 4}
    kwargs = {"n_steps": 4} if method is IntegratedGradients else {}
    cpu_out, cpu_result = TopKAttack(
        tiny, method(tiny), k=5, attribution_kwargs=kwargs, **budget
    ).perturb(tiny_x, return_results=True)

    model = tiny.cuda()
    x = tiny_x.cuda()
    attack = TopKAttack(model, method(model), k=5, attribution_kwargs=kwargs, **budget)
    out, result = attack.perturb(x, return_results=True)
    assert out.device == x.device
    for value in vars(result).values():
        if isinstance(value, torch.Tensor):
            assert value.device == x.device
    assert result.label_kept.all()
    # Sign steps can amplify rounding differences; most samples agree exactly.
    same = (out.cpu() == cpu_out).flatten(1).all(1)
    assert same.float().mean() >= 0.5
    assert torch.equal(result.original_label.cpu(), cpu_result.original_label)


def test_cpu_generator_drives_cuda_attack():
    model, x = tiny_bn_net().cuda(), tiny_bn_inputs().cuda()
    attack = RandomAttack(model, Saliency(model), criterion_k=5, n_steps=3)
    a = attack.perturb(x, generator=torch.Generator().manual_seed(0))
    b = attack.perturb(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.device == x.device
    frame = torch.ones(8, 8, device=x.device)
    frame[2:-2, 2:-2] = 0
    out = ManipulationAttack(model, Saliency(model), n_steps=3).perturb(
        x, target_map=frame
    )
    assert out.device == x.device
