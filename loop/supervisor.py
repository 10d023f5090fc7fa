"""`Supervisor`: start each component as its own process (as it would be deployed), keep its
log, read its Prometheus metrics, and stop everything on exit."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from convcg.metrics_scrape import Sample, fetch_samples, metric_sum

log = logging.getLogger(__name__)


@dataclass
class Component:
    """One process: ``python -m <module> <args>`` (the one CLI by default) with ``env`` on top
    of this process's environment (or instead of it, without ``inherit_env``), stdout and
    stderr appended to ``log_path`` (or this process's own streams when it is None), in a
    session of its own so that a stop reaches everything it started."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path | None
    metrics_port: int = 0
    module: str = "loop.cli"
    cwd: Path | None = None
    inherit_env: bool = True
    #: interpreter options before ``-m`` (e.g. ``-X importtime``)
    interpreter_args: tuple[str, ...] = ()
    #: how long a SIGTERM may take before the process group is SIGKILLed
    stop_timeout_s: float = 20.0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def command(self) -> list[str]:
        return [sys.executable, *self.interpreter_args, "-m", self.module, *self.args]

    def start(self) -> "Component":
        env = {**os.environ, **self.env} if self.inherit_env else dict(self.env)
        if self.log_path is None:
            self.process = subprocess.Popen(self.command, env=env, cwd=self.cwd, start_new_session=True)
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as out:
                self.process = subprocess.Popen(self.command, env=env, cwd=self.cwd, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True)
        log.info("started %s (pid %d): python -m %s %s", self.name, self.process.pid, self.module, " ".join(self.args))
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, kill: bool = False) -> None:
        """Send SIGTERM (clean shutdown) or, with ``kill``, SIGKILL (a crash) without waiting."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit by itself; its exit code (``TimeoutExpired`` after ``timeout``)."""
        return self.process.wait(timeout)

    def wait_stopped(self, timeout: float | None = None) -> None:
        """Wait for a signalled process; SIGKILL its group when it takes longer than ``timeout``."""
        p = self.process
        if p is None:
            return
        try:
            p.wait(self.stop_timeout_s if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def stop(self, timeout: float | None = None, kill: bool = False) -> None:
        """SIGTERM (clean shutdown) or, with ``kill``, SIGKILL (a crash), and wait for the exit."""
        if not self.alive:
            return
        self.signal(kill)
        self.wait_stopped(timeout)

    def metrics(self) -> list[Sample]:
        """Scrape /metrics (no samples when there is no metrics port or nothing answers)."""
        if not self.metrics_port:
            return []
        return fetch_samples(self.metrics_port, missing_ok=True)

    def metric_sum(self, name: str, **labels: str) -> float:
        return metric_sum(self.metrics(), name, **labels)

    def tail(self, lines: int = 20) -> str:
        """The last lines of the log ("" when there is none)."""
        if self.log_path is None:
            return ""
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
