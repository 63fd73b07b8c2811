"""Programs that train models and evaluate them: the demo and the reproduction.

The demo runs the whole story on the embedded silhouette benchmark (train a
natural and three robust models, attack their attributions, report), and the
reproduction runs Chen et al.'s MNIST protocol for every training method. They
are built on :mod:`captum_robust.evaluation`, :mod:`captum_robust.attacks` and
:mod:`captum_robust.regularizers`, and are what ``captum-robust demo`` and
``captum-robust reproduce`` run.
"""

from captum_robust.experiments._demo import DemoSettings
from captum_robust.experiments._demo import demo_model
from captum_robust.experiments._demo import run_demo
from captum_robust.experiments._reproduce import run_reproduction
from captum_robust.experiments._reproduce_settings import CHEN_MNIST
from captum_robust.experiments._reproduce_settings import ReproduceSettings
from captum_robust.experiments._reproduce_training import load_mnist_subset
from captum_robust.experiments._reproduce_training import mnist_model

__all__ = [
    "CHEN_MNIST",
    "DemoSettings",
    "ReproduceSettings",
    "demo_model",
    "load_mnist_subset",
    "mnist_model",
    "run_demo",
    "run_reproduction",
]
