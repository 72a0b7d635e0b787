"""The local S3 server the tests and benchmarks use: moto's, started on a free port, and the credentials
they give it (moto accepts any). Imported by name, like fake_openai."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import IO

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "moto-test-secret-never-logged",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def start_moto(log: IO[bytes] | int = subprocess.DEVNULL, timeout_s: float = 60) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server on a free 127.0.0.1 port, once it accepts connections: (process, endpoint URL).

    RuntimeError when it exits or is not listening within ``timeout_s`` (the process is killed).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("moto's S3 server did not start")
        time.sleep(0.1)
