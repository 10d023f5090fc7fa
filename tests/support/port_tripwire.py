"""`PortTripwire`: listen on fixed loopback ports and record every connection made to them."""

from __future__ import annotations

import socket
import threading


class PortTripwire:
    def __init__(self, ports: tuple[int, ...]) -> None:
        self.ports = ports
        self.hits: list[int] = []
        self.unwatched: dict[int, str] = {}
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for port in self.ports:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:  # something already serves there: it cannot be watched
                self.unwatched[port] = str(exc)
                s.close()
                continue
            s.listen(16)
            s.settimeout(0.2)
            self._socks.append(s)
        self._thread = threading.Thread(target=self._watch, name="port-tripwire", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for s in self._socks:
                try:
                    conn, _ = s.accept()
                except (TimeoutError, OSError):
                    continue
                self.hits.append(s.getsockname()[1])
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in self._socks:
            s.close()

    @property
    def watched(self) -> list[int]:
        """The ports it listens on (those it could bind)."""
        return sorted(s.getsockname()[1] for s in self._socks)

    def describe(self) -> str:
        return ", ".join(f"127.0.0.1:{p} x{self.hits.count(p)}" for p in sorted(set(self.hits)))
