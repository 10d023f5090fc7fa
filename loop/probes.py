"""Feature-freshness probes of `convcg up`, taken from outside the components.

A probe is an event of the replayed log itself (nothing extra is produced): about every
``interval_s`` the replay picks a just-sent event whose user has no earlier event in the same
or a later whole second (online rows keep the newest event time, SQLite in whole seconds), and
remembers when it was handed to the producer. A background thread looks the user up over HTTP
in the features service until the row's ``event_ts`` reaches that second: freshness = that
answer's time - the send time (event in Kafka -> visible in an online lookup).

Each poll reads only the ``max_reads`` oldest pending probes, so the watcher stays a small load
when the pipeline falls behind (a probe seen late because it was not among the oldest is
measured late, never early).
"""

from __future__ import annotations

import http.client
import math
import threading
import time
from itertools import islice

import orjson


def probe_second(ts: float) -> int:
    return math.floor(ts)


class ProbePicker:
    """Pure: chooses which sent events become probes (one per ``interval_s`` of wall time)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.user_newest: dict[str, int] = {}   # newest whole event second sent per user
        self._next_wall = -math.inf

    def observe(self, user_id: str, ts: float) -> None:
        s = probe_second(ts)
        if s > self.user_newest.get(user_id, -1 << 62):
            self.user_newest[user_id] = s

    def offer(self, user_id: str, ts: float, wall: float) -> bool:
        """Record the event; True if it is to be a probe (its second is new for the user)."""
        s = probe_second(ts)
        fresh = s > self.user_newest.get(user_id, -1 << 62)
        self.observe(user_id, ts)
        if fresh and wall >= self._next_wall:
            self._next_wall = wall + self.interval_s
            return True
        return False


class FeatureProbes:
    """Polls ``GET /online-features/user_stream/<user>`` until each probe is visible."""

    def __init__(self, features_url: str, poll_s: float = 0.005, max_reads: int = 8,
                 give_up_s: float = 120.0) -> None:
        host, _, port = features_url.removeprefix("http://").rstrip("/").partition(":")
        self.host, self.port = host, int(port or 80)
        self.poll_s, self.max_reads, self.give_up_s = poll_s, max_reads, give_up_s
        self.pending: dict[str, tuple[int, float]] = {}  # user -> (event second, send wall time)
        self.delays: list[float] = []
        self.lost = 0
        self.lookup_errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feature-probes", daemon=True)
        self._conn: http.client.HTTPConnection | None = None

    def start(self) -> "FeatureProbes":
        self._thread.start()
        return self

    def sent(self, user_id: str, ts: float, wall: float) -> None:
        with self._lock:
            if user_id not in self.pending:  # the older probe of the same user is still open
                self.pending[user_id] = (probe_second(ts), wall)

    def wait_pending(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while self.pending and time.time() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            self.lost += len(self.pending)
            self.pending.clear()

    def _visible_second(self, user_id: str) -> float | None:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            self._conn.request("GET", f"/online-features/user_stream/{user_id}?features=impressions_1h")
            resp = self._conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = None
            self.lookup_errors += 1
            return None
        if resp.status != 200:
            self.lookup_errors += 1
            return None
        results = orjson.loads(body).get("results") or [{}]
        return results[0].get("event_ts")

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                oldest = list(islice(self.pending.items(), self.max_reads))
            for user_id, (second, sent_at) in oldest:
                ts = self._visible_second(user_id)
                now = time.time()
                with self._lock:
                    if ts is not None and ts >= second:
                        self.delays.append(now - sent_at)
                        self.pending.pop(user_id, None)
                    elif now - sent_at > self.give_up_s:
                        self.lost += 1
                        self.pending.pop(user_id, None)
            time.sleep(self.poll_s)
