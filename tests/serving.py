"""Running ``cleancut serve`` in tests: a free loopback port, waiting for ``/healthz``, stopping."""

from __future__ import annotations

import signal
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once ``GET /healthz`` answers 200; fail if ``proc`` exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "cleancut serve did not start"
        time.sleep(0.1)


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> tuple[str | None, str | None]:
    """SIGTERM (what an operator sends), then kill if it does not exit; returns its output."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()
