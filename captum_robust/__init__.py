"""captum_robust: robustness metrics, attacks and regularizers for Captum."""

__version__ = "0.1.0"
