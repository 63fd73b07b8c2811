import os
import socket
import subprocess
import sys

import pytest


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def launch():
    """Run a script in one process, or in ``nproc`` processes with torchrun."""

    def run(args, nproc=1, timeout=300):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if nproc == 1:
            command = [sys.executable, *args]
        else:
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nproc_per_node={nproc}",
                "--master_addr=127.0.0.1",
                f"--master_port={free_port()}",
                *args,
            ]
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    return run
