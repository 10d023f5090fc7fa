"""`Supervisor`: start each component as its own process (as it would be deployed), keep its
log, read its Prometheus metrics, and stop everything on exit."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("loop.supervisor")


@dataclass
class Component:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    metrics_port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> "Component":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "loop.cli", *self.args],
                                        env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.info("started %s (pid %d): convcg %s", self.name, self.process.pid, " ".join(self.args))
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0, kill: bool = False) -> None:
        """SIGTERM (clean shutdown) or, with ``kill``, SIGKILL (a crash)."""
        p = self.process
        if p is None or p.poll() is not None:
            return
        os.killpg(p.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def metrics(self) -> dict[str, float]:
        """Scrape /metrics: sample name (with labels) -> value."""
        if not self.metrics_port:
            return {}
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3).read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def metric_sum(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k == prefix or k.startswith(prefix + "{"))

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Supervisor:
    def __init__(self) -> None:
        self.components: dict[str, Component] = {}

    def start(self, component: Component) -> Component:
        self.components[component.name] = component.start()
        return component

    def check(self) -> None:
        """Raise if a component died: the loop must not report numbers from a dead pipeline."""
        for c in self.components.values():
            if not c.alive:
                raise RuntimeError(f"component {c.name} exited with {c.process.returncode}; "
                                   f"last log lines ({c.log_path}):\n{c.tail()}")

    def stop_all(self) -> None:
        for c in reversed(list(self.components.values())):
            c.stop()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5, supervisor: Supervisor | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if supervisor is not None:
            supervisor.check()
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
