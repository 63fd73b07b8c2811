import pytest
import torch

from captum_robust.visualization import plot_attack_examples
from captum_robust.visualization import save_figure


def test_figure_has_one_row_per_sample_and_saves(tmp_path):
    x = torch.rand(3, 3, 12, 12)
    masks = torch.zeros(3, 12, 12, dtype=torch.bool)
    masks[:, 3:8, 3:8] = True
    figure = plot_attack_examples(
        x,
        torch.randn(3, 3, 12, 12),
        torch.zeros(3, 3, 12, 12),  # an all-zero map is drawn, not an error
        perturbed=x.flip(-1),
        masks=masks,
        titles=["a", "b", "c"],
        max_samples=2,
    )
    assert len(figure.axes) == 2 * 4
    save_figure(figure, str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_grayscale_and_normalised_inputs():
    x = torch.randn(1, 1, 8, 8) * 3  # outside [0, 1]: rescaled for display
    figure = plot_attack_examples(x, torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8))
    assert len(figure.axes) == 3


def test_bad_inputs():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="`before`"):
        plot_attack_examples(x, torch.rand(2, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="`before` and `after`"):
        plot_attack_examples(x, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 9))
    with pytest.raises(ValueError, match="max_samples"):
        plot_attack_examples(x, x, x, max_samples=0)


def test_titles_masks_and_perturbed_must_match_the_images():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"`titles` must hold one caption per image"):
        plot_attack_examples(x, x, x, titles=["only one"])
    with pytest.raises(TypeError, match="`titles` must be a sequence of str"):
        plot_attack_examples(x, x, x, titles="ab")
    with pytest.raises(TypeError, match="`titles` must hold str"):
        plot_attack_examples(x, x, x, titles=[1, 2])
    with pytest.raises(ValueError, match="`masks` must have shape"):
        plot_attack_examples(x, x, x, masks=torch.ones(2, 7, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="`masks` must have shape"):
        plot_attack_examples(x, x, x, masks=torch.ones(3, 8, 8, dtype=torch.bool))
    with pytest.raises(TypeError, match="`masks` must be a Tensor"):
        plot_attack_examples(x, x, x, masks=[[0]])
    with pytest.raises(ValueError, match="`perturbed` must be a Tensor shaped"):
        plot_attack_examples(x, x, x, perturbed=x[:1])
    # (B, 1, H, W) masks and titles for more images than rows are fine.
    figure = plot_attack_examples(
        x, x, x, masks=torch.ones(2, 1, 8, 8), titles=["a", "b"], max_samples=1
    )
    assert figure.axes[0].get_ylabel() == "a"


def test_save_figure_checks_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="`figure`"):
        save_figure("figure", str(tmp_path / "f.png"))
    figure = plot_attack_examples(*(torch.rand(1, 1, 4, 4),) * 3)
    with pytest.raises(TypeError, match="`path`"):
        save_figure(figure, 3)
