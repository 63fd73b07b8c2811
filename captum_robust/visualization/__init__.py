"""Figures of attributions, built on captum.attr.visualization."""

from captum_robust.visualization._figures import plot_attack_examples
from captum_robust.visualization._figures import save_figure

__all__ = ["plot_attack_examples", "save_figure"]
