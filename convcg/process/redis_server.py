"""Private Redis harness: start a throw-away ``redis-server`` on a free loopback port.

`convcg up` uses one as its embedded online store when a ``redis-server`` binary is on the
machine (SQLite otherwise), as the broker harness starts its broker: no persistence (the online
store is rebuilt from the stream), bound to 127.0.0.1 only, stopped with the run.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from convcg.process.server_process import start_server_process

log = logging.getLogger(__name__)


@dataclass
class RedisServer:
    """A running private Redis. ``stop()`` is idempotent."""

    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def connection(self) -> str:
        """Feast's / the features settings' ``host:port`` connection string."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()

    def __enter__(self) -> "RedisServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def redis_server_binary() -> str | None:
    """Path of a ``redis-server`` binary on PATH, or None."""
    return shutil.which("redis-server")


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"redis-server on port {port} did not answer PING in {timeout}s")


def start_redis(workdir: Path, port: int | None = None, log_path: Path | None = None,
                timeout: float = 15.0) -> RedisServer:
    """Start ``redis-server`` (no RDB/AOF persistence, loopback only) and wait for PING."""
    from convcg.kafka.broker import free_port

    binary = redis_server_binary()
    if binary is None:
        raise FileNotFoundError("no redis-server binary on PATH")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(workdir.absolute()), "--protected-mode", "yes"]
    proc, stop = start_server_process(cmd, log_path)

    try:
        _wait_ready(port, proc, timeout)
    except Exception:
        stop()
        raise
    log.info("started private redis-server on 127.0.0.1:%d (pid %d)", port, proc.pid)
    return RedisServer(port=port, process=proc, _stop=stop)
