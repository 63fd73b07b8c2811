import pytest
import torch


def pytest_configure(config):
    # The development and CI machines have two cores; more threads only contend.
    torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords or "tests/gpu/" in str(item.fspath).replace(
            "\\", "/"
        ):
            item.add_marker(skip_gpu)


# Launched as a separate process by the distributed tests, never imported here.
collect_ignore_glob = ["*_worker.py"]
