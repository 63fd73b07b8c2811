import pytest
import torch

from captum_robust.visualization import plot_attack_examples, save_figure


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
