"""ManipulationAttack's options: beta growth, box-only constraint, Dombrowski's
preset and the similarity report (MSE, PCC, SSIM against scipy / skimage)."""

import math

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from helpers.models import conv_net
from scipy.stats import pearsonr
from skimage.metrics import structural_similarity as sk_ssim
from torch import nn

import captum_robust.attacks._manipulation as attacks_module
from captum_robust.attacks import ManipulationAttack


def tiny_cnn() -> nn.Module:
    return conv_net(1, 4, 8, 3, act=nn.ReLU).eval()


def frame_target() -> torch.Tensor:
    frame = torch.ones(8, 8)
    frame[2:-2, 2:-2] = 0
    return frame


def inputs(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_beta_growth_uses_dombrowskis_schedule(monkeypatch):
    model = tiny_cnn()
    seen = []
    build = attacks_module.softplus_surrogate

    def spy(module, beta=10.0, **kwargs):
        seen.append(beta)
        return build(module, beta=beta, **kwargs)

    attack = ManipulationAttack(
        model,
        Saliency(model),
        surrogate_beta=(10.0, 100.0),
        n_steps=4,
        restarts=2,
        random_start=True,
    )
    monkeypatch.setattr(attacks_module, "softplus_surrogate", spy)
    before = attack.surrogate
    attack.perturb(inputs(), target_map=frame_target())
    # t = 0..T-1 of each restart: 10 * 10 ** (t / 4).
    expected = [10.0 * 10.0 ** (t / 4) for t in range(4)] * 2
    assert seen == pytest.approx(expected, rel=1e-12)
    assert attack.surrogate is before  # the constructor's surrogate is back
    assert isinstance(model[1], nn.ReLU)


def _beta_run(surrogate_beta, n_steps, return_results=False):
    """Dombrowski's attack of the seeded tiny CNN toward the frame map."""
    model = tiny_cnn()
    attack = ManipulationAttack(
        model,
        Saliency(model),
        surrogate_beta=surrogate_beta,
        n_steps=n_steps,
        step_size=0.01,
    )
    out = attack.perturb(inputs(), target_map=frame_target(), return_results=True)
    return (out, attack) if return_results else out[0]


def test_beta_growth_first_step_is_the_fixed_beta_attack():
    (out_g, res_g), _ = _beta_run((5.0, 50.0), 1, return_results=True)
    assert torch.equal(out_g, _beta_run(5.0, 1))
    assert not torch.equal(out_g, _beta_run(50.0, 1))
    assert res_g.improved.any()


def test_beta_growth_moves_later_steps_with_larger_beta():
    # Two steps of the growth (10 -> 1000): the second step's beta is 100, so the
    # result differs from two steps at a fixed beta of 10.
    fixed = _beta_run(10.0, 2)
    assert not torch.equal(_beta_run((10.0, 1e3), 2), fixed)
    # A constant pair is the fixed beta.
    (same, _), attack = _beta_run((10.0, 10.0), 2, return_results=True)
    assert attack.surrogate_beta == 10.0
    assert torch.equal(same, fixed)


def test_box_only_leaves_the_ball_but_not_the_bounds():
    model = tiny_cnn()
    x = inputs()
    eps = 2 / 255
    kw = dict(n_steps=15, step_size=0.03, criterion="topk", criterion_k=8)
    ball = ManipulationAttack(model, Saliency(model), epsilon=eps, **kw)
    box = ManipulationAttack(model, Saliency(model), epsilon=None, **kw)
    assert box.epsilon == math.inf
    x_ball = ball.perturb(x, target_map=frame_target())
    x_box = box.perturb(x, target_map=frame_target())
    assert (x_ball - x).abs().max() <= eps + 1e-7
    assert (x_box - x).abs().max() > 5 * eps
    assert x_box.min() >= 0.0 and x_box.max() <= 1.0
    # The same for one call of the ball attack.
    x_call = ball.perturb(x, target_map=frame_target(), epsilon=math.inf)
    assert torch.equal(x_call, x_box)


def test_dombrowski_preset():
    model = tiny_cnn()
    attack = ManipulationAttack.dombrowski(model, Saliency(model))
    assert attack.n_steps == 1500
    assert attack.step_size == 2e-4
    assert attack.epsilon == math.inf
    assert attack.surrogate_beta == (10.0, 100.0)
    assert (attack.map_weight, attack.output_weight) == (1e11, 1e6)
    quick = ManipulationAttack.dombrowski(model, Saliency(model), n_steps=7)
    assert quick.n_steps == 7 and quick.step_size == 2e-4
    # Without a ball or a step size, the lr is the paper's.
    plain = ManipulationAttack(model, Saliency(model), epsilon=None)
    assert plain._effective_step_size(math.inf, 100) == 2e-4
    with pytest.raises(TypeError, match="bogus"):
        ManipulationAttack.dombrowski(model, Saliency(model), bogus=1)


def test_similarity_report_matches_scipy_and_skimage():
    model = tiny_cnn()
    x = inputs()
    target = torch.rand(8, 8, generator=torch.Generator().manual_seed(2))
    attack = ManipulationAttack(model, Saliency(model), n_steps=5)
    x_adv, result = attack.perturb(x, target_map=target, return_results=True)
    assert set(result.similarity_after) == {"mse", "pcc", "ssim"}
    t = (target / target.sum()).double().numpy()
    for x_i, sims in ((x, result.similarity_before), (x_adv, result.similarity_after)):
        sal = Saliency(model).attribute(
            x_i.clone().requires_grad_(), target=result.original_label
        )
        maps = sal.abs().sum(dim=1).detach().double()
        maps = maps / maps.sum(dim=(1, 2), keepdim=True)
        for i, m in enumerate(maps.numpy()):
            assert sims["mse"][i].item() == pytest.approx(
                ((m - t) ** 2).mean(), rel=1e-4
            )
            assert sims["pcc"][i].item() == pytest.approx(
                pearsonr(m.ravel(), t.ravel())[0], abs=1e-5
            )
            lo, hi = min(m.min(), t.min()), max(m.max(), t.max())
            ref = sk_ssim(
                m,
                t,
                gaussian_weights=True,
                sigma=1.5,
                win_size=7,
                use_sample_covariance=False,
                data_range=hi - lo,
            )
            assert sims["ssim"][i].item() == pytest.approx(ref, abs=1e-5)
    # The reported MSE is the target_mse criterion.
    torch.testing.assert_close(
        result.similarity_after["mse"], result.criterion_after, rtol=1e-4, atol=0
    )
    # Other attacks report no similarity; not asked, nothing is computed.
    plain = attack.perturb(x, target_map=target)
    assert isinstance(plain, torch.Tensor)


def test_similarity_ssim_nan_for_non_image_maps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = torch.rand(2, 6, generator=torch.Generator().manual_seed(0))
    attack = ManipulationAttack(model, Saliency(model), n_steps=2)
    _, result = attack.perturb(
        x, target_map=torch.rand(1, 6) + 0.1, return_results=True
    )
    assert torch.isnan(result.similarity_after["ssim"]).all()
    assert torch.isfinite(result.similarity_after["pcc"]).all()


def test_user_objects_untouched_with_beta_growth():
    model = conv_net(1, 4, 8, 3, act=nn.ReLU, batch_norm=True)
    model.train()
    model[0].weight.requires_grad_(False)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    saliency = Saliency(model)
    x = inputs()
    x_copy = x.clone()
    attack = ManipulationAttack.dombrowski(model, saliency, n_steps=3)
    attack.perturb(x, target_map=frame_target(), return_results=True)
    assert model.training and model[1].training
    assert not model[0].weight.requires_grad and model[4].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    assert torch.equal(x, x_copy) and not x.requires_grad
    assert isinstance(model[2], nn.ReLU) and saliency.forward_func is model


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"surrogate_beta": (10.0,)}, ValueError, "surrogate_beta"),
        ({"surrogate_beta": (10.0, 0.0)}, ValueError, "surrogate_beta"),
        ({"surrogate_beta": (10.0, "a")}, TypeError, "surrogate_beta"),
        ({"surrogate_beta": (10.0, math.inf)}, ValueError, "surrogate_beta"),
        (
            {"surrogate_beta": (1.0, 2.0), "surrogate": nn.Identity()},
            ValueError,
            "surrogate_beta",
        ),
        ({"epsilon": None, "random_start": True}, ValueError, "random_start"),
        ({"epsilon": None, "restarts": 2}, ValueError, "restarts"),
        ({"epsilon": -1.0}, ValueError, "epsilon"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, name):
    model = tiny_cnn()
    with pytest.raises(error, match=f"`{name}"):
        ManipulationAttack(model, Saliency(model), **kwargs)


def test_infinite_epsilon_per_call_refuses_random_starts():
    model = tiny_cnn()
    attack = ManipulationAttack(model, Saliency(model), n_steps=2)
    with pytest.raises(ValueError, match="`restarts`"):
        attack.perturb(
            inputs(), target_map=frame_target(), epsilon=math.inf, restarts=2
        )
    starting = ManipulationAttack(model, Saliency(model), n_steps=2, random_start=True)
    with pytest.raises(ValueError, match="`epsilon`"):
        starting.perturb(inputs(), target_map=frame_target(), epsilon=math.inf)
    assert np.isfinite(attack.epsilon)
