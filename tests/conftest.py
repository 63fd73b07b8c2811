import sys
from pathlib import Path

import pytest
import torch

# pytest's importlib mode puts no test folder on sys.path: this one entry lets every
# test import the shared helpers as `helpers` (tests/helpers/).
sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    # The development and CI machines have two cores; more threads only contend.
    torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    # The one rule for GPU tests (they live in tests/gpu/, each file marked `gpu`).
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


# Launched as a separate process by the distributed tests, never imported here.
collect_ignore_glob = ["*_worker.py"]
# Imported by the tests; nothing in it to collect, even as doctests.
collect_ignore = ["helpers"]
