"""captum_robust: robustness metrics, attacks and regularizers for Captum attributions."""

__version__ = "0.1.0"
