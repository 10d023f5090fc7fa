"""A local server binary (the bundled broker, a private redis-server) as a child process that
is stopped when the caller asks or when this process exits."""

from __future__ import annotations

import atexit
import subprocess
from pathlib import Path
from typing import Callable

STOP_TIMEOUT_S = 10.0


def start_server_process(cmd: list[str], log_path: Path | None) -> tuple[subprocess.Popen, Callable[[], None]]:
    """Start ``cmd`` in its own session, output to ``log_path`` (or nowhere); returns the process
    and its idempotent ``stop`` (SIGTERM, then SIGKILL after a grace period), also run at exit."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log_path:
            out.close()  # type: ignore[union-attr]

    atexit.register(stop)
    return proc, stop
