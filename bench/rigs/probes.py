"""Shared by the freshness benchmarks: probes whose visibility in the online store is polled
from outside the components, the CPU share of each process, and the printed summary."""

from __future__ import annotations

import threading
import time
from itertools import islice

from convcg.contract import MetricNames
from convcg.stats import histogram_quantile, latency_summary_ms


class ProbeWatcher:
    """Remembers when each probe entity was sent; a background thread reads the online store
    until the entity appears and records send → visible.

    Each poll (every ``poll_s``) reads only the ``max_reads`` oldest pending probes. Reading all
    of them made the watcher a load of its own exactly when the pipeline fell behind (100
    pending probes x 200 polls/s = 20,000 online reads/s on the same two cores), which pushed a
    marginal pipeline into collapse. Probes appear roughly in send order; one seen late because
    it was not among the oldest is measured late, never early."""

    def __init__(self, reader, view: str = "user_stream", feature: str = "impressions_1h",
                 poll_s: float = 0.005, max_reads: int = 8) -> None:
        self.reader, self.view, self.feature = reader, view, feature
        self.poll_s, self.max_reads = poll_s, max_reads
        self.pending: dict[str, float] = {}
        self.fresh: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> "ProbeWatcher":
        self._thread.start()
        return self

    def sent(self, entity_id: str, at: float) -> None:
        with self._lock:
            self.pending[entity_id] = at

    def reset(self) -> None:
        with self._lock:
            self.fresh.clear()
            self.pending.clear()

    def wait_pending(self, timeout: float) -> int:
        """Wait for outstanding probes; returns how many never became visible."""
        deadline = time.time() + timeout
        while self.pending and time.time() < deadline:
            time.sleep(0.05)
        return len(self.pending)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ids = list(islice(self.pending, self.max_reads))  # insertion order: the oldest
            if ids:
                got = self.reader.read(self.view, ids, [self.feature])
                now = time.time()
                with self._lock:
                    for g in got:
                        if g["event_ts"] is not None and g["entity_id"] in self.pending:
                            self.fresh.append(now - self.pending.pop(g["entity_id"]))
            time.sleep(self.poll_s)


class CpuShares:
    """CPU used by named processes between ``start()`` and ``stop()``, in % of one core: the
    freshness benches share two cores between every component, the broker, Redis and the load
    generator, so the split is printed beside the latencies."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self.shares: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    @staticmethod
    def redis_pid(port: int = 6379) -> int | None:
        import psutil

        for p in psutil.process_iter(["name", "cmdline"]):
            if p.info["name"] == "redis-server" and f":{port}" in " ".join(p.info["cmdline"] or []):
                return p.pid
        return None

    def _cpu(self) -> dict[str, float]:
        import psutil

        out = {}
        for name, p in self.procs.items():
            try:
                t = p.cpu_times()
                out[name] = t.user + t.system + getattr(t, "children_user", 0) + getattr(t, "children_system", 0)
            except psutil.Error:  # exited (or no longer ours to read)
                out[name] = self._start.get(name, 0.0)
        return out

    def start(self) -> None:
        self._start, self._t0 = self._cpu(), time.perf_counter()

    def stop(self) -> None:
        end, elapsed = self._cpu(), time.perf_counter() - self._t0
        self.shares = {n: (end[n] - self._start[n]) / elapsed * 100 for n in self.procs}

    def summary(self) -> str:
        parts = [f"{n} {v:.0f}%" for n, v in sorted(self.shares.items(), key=lambda kv: -kv[1])]
        return f"CPU (% of one core) over the steady window: {', '.join(parts)}; total {sum(self.shares.values()):.0f}%"


def print_probe_summary(label: str, freshness_s, lost: int) -> None:
    st = latency_summary_ms(freshness_s, (50, 90, 99))
    print(f"probe {label}: p50 {st['p50_ms']:.0f} ms  p90 {st['p90_ms']:.0f} ms  "
          f"p99 {st['p99_ms']:.0f} ms  max {st['max_ms']:.0f} ms  (never visible: {lost})")


def print_sink_histogram(buckets) -> None:
    """The sink's own freshness histogram (bucket bounds, for operators) beside the probes."""
    count = buckets[-1][1] if buckets else 0.0
    if count:
        print(f"sink histogram {MetricNames.FEATURE_FRESHNESS}: {count:.0f} observations, "
              f"p50 <= {histogram_quantile(buckets, 0.5)} s, p99 <= {histogram_quantile(buckets, 0.99)} s")


def freshness_verdict(freshness_s, lost: int, target_s: float = 1.0) -> tuple[float, bool]:
    """(p99 in seconds, met?): met only if probes were seen, every probe became visible and
    their p99 is within the target; no probe at all, or one never visible, is a miss."""
    p99 = latency_summary_ms(freshness_s)["p99_ms"] / 1000
    return p99, bool(len(freshness_s)) and lost == 0 and p99 <= target_s
