"""Running ``cleancut serve`` in tests: a free loopback port, waiting for ``/healthz``, stopping;
or the same uvicorn server in a thread of the test process."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator


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


def start_thread(server, timeout: float = 30.0) -> threading.Thread:
    """Run a ``uvicorn.Server`` in a daemon thread; return once it listens (fail if it dies first)."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    return thread


@contextlib.contextmanager
def served(app, *, log_level: str = "warning", timeout: float = 30.0, **config) -> Iterator[tuple[object, int]]:
    """``app`` served as ``cleancut serve`` serves it (its ``make_server``) on a free loopback port,
    in a thread; yields ``(server, port)`` and stops it (as SIGTERM does) on the way out."""
    from cleancut.cli.serve import make_server

    port = free_port()
    server = make_server(app, port=port, log_level=log_level, **config)
    thread = start_thread(server, timeout)
    try:
        yield server, port
    finally:
        server.should_exit = True
        thread.join(timeout)
