"""Bounded soak: kill the streams worker, the trainer and the retrieval service at random
points during a replay, restart them, and check what must survive.

    python bench/soak.py [--minutes 5] [--impressions 60000] [--seed 0]

Afterwards: (1) the deduplicated labels equal those of an undisturbed run (the pure rules over
the same log), so no accepted event was lost and no label was invented or duplicated;
(2) every retrieval query that reached the service while it was up got an answer (a refused
connection while the process is down is not a query that arrived). Loopback only; bounded in
time; stops by itself.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from convcg.broker import create_topics, find_or_start_broker, free_port
from convcg.contract import Topics
from convcg.kafka_io import read_topic
from loop.supervisor import Component, wait_until
from streams.datasets import load_log
from streams.datasets.event_log import EventLog
from streams.label_join import compute_labels
from streams.labels import dedupe
from streams.replay import replay, write_catalog


class QueryLoad(threading.Thread):
    """Steady retrieval queries; failures are counted only when the service was up."""

    def __init__(self, url: str, users: list[str], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.users, self.stop = url, users, stop
        self.answered = self.refused = 0
        self.failed: list[tuple[float, str]] = []

    def run(self) -> None:
        rng = random.Random(1)
        while not self.stop.is_set():
            user = rng.choice(self.users)
            try:
                with urllib.request.urlopen(f"{self.url}/retrieve?user_id={user}&k=50", timeout=10) as r:
                    r.read()
                self.answered += 1
            except urllib.error.HTTPError as exc:
                if exc.code == 503:  # up, but not yet serving an index after a restart
                    self.refused += 1
                else:
                    self.failed.append((time.monotonic(), f"HTTP {exc.code}"))
            except (ConnectionError, urllib.error.URLError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError):
                    self.refused += 1  # the process is down: the query never arrived
                else:
                    self.failed.append((time.monotonic(), repr(exc)))
            time.sleep(0.02)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--impressions", type=int, default=60_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", type=Path, default=Path("var/soak"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    home = args.home / time.strftime("%Y%m%d-%H%M%S")
    log = load_log("synthetic", n_users=2000, n_items=1500, n_advertisers=50, n_impressions=args.impressions,
                   seed=args.seed)
    expected = {l.label_id: l.kind for l in compute_labels(log.events)}
    catalog = write_catalog(log, home / "catalog" / "items.parquet")
    broker = find_or_start_broker(log_path=home / "broker.log")
    topics = Topics()
    create_topics(broker.bootstrap, topics.all(), 3)
    registry = home / "registry"
    ports = {"worker": free_port(), "trainer": free_port(), "retrieval": free_port()}
    index_env = {"CONVCG_INDEX_REGISTRY_ROOT": str(registry), "CONVCG_INDEX_CATALOG_PATH": str(catalog),
                 "CONVCG_INDEX_INDEX_ROOT": str(registry / "indexes"),
                 "CONVCG_INDEX_NEW_ITEMS_PATH": str(home / "new_items.parquet"),
                 "CONVCG_INDEX_RETRIEVAL_URL": f"http://127.0.0.1:{ports['retrieval']}",
                 "CONVCG_INDEX_POLL_INTERVAL_S": "2"}
    logs = home / "logs"
    parts = {
        "worker": Component("worker", ["worker", "--metrics-port", str(ports["worker"])],
                            {"CONVCG_STREAMS_BOOTSTRAP": broker.bootstrap}, logs / "worker.log", ports["worker"]),
        "trainer": Component("trainer", ["trainer", "--bootstrap", broker.bootstrap, "--registry", str(registry),
                                         "--trigger-labels", "10000", "--trigger-seconds", "15",
                                         "--metrics-port", str(ports["trainer"])],
                             {"CONVCG_TRAINING_CATALOG_PATH": str(catalog),
                              "CONVCG_TRAINING_LABEL_STORE": str(home / "labels")}, logs / "trainer.log"),
        "retrieval": Component("retrieval", ["retrieval", "serve", "--port", str(ports["retrieval"])], index_env,
                               logs / "retrieval.log", ports["retrieval"]),
    }
    refresher = Component("refresher", ["refresher"], index_env, logs / "refresher.log")
    for c in (*parts.values(), refresher):
        c.start()
    stop = threading.Event()
    load = QueryLoad(f"http://127.0.0.1:{ports['retrieval']}", sorted({e.user_id for e in log.events[:5000]}), stop)
    load.start()
    kills: list[str] = []
    retrieval_kills: list[float] = []

    def chaos() -> None:
        while not stop.is_set():
            stop.wait(rng.uniform(15, 35))
            if stop.is_set():
                return
            name = rng.choice(sorted(parts))
            if name == "retrieval":
                retrieval_kills.append(time.monotonic())
            parts[name].stop(kill=True)
            kills.append(name)
            print(f"[soak] killed {name}; restarting", flush=True)
            time.sleep(rng.uniform(1, 4))
            parts[name].start()

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    try:
        events = log.events
        budget = args.minutes * 60 * 0.7  # leave time for the tail to drain
        chunk = max(1000, len(events) // 40)
        pause = budget / (len(events) / chunk)
        for i in range(0, len(events), chunk):
            last = i + chunk >= len(events)
            replay(EventLog(log.name, events[i:i + chunk], log.catalog), broker.bootstrap, topics, progress=False,
                   close=last)
            time.sleep(pause)
        stop.set()
        chaos_thread.join()
        for c in parts.values():
            if not c.alive:
                c.start()
        got = wait_until(lambda: (lambda raw: raw if len(dedupe(raw)) >= len(expected) else None)(
            read_topic(broker.bootstrap, topics.labels, timeout=10, idle=1.0)), args.minutes * 60, "every label")
        labels = {l["label_id"]: l["kind"] for l in dedupe(got)}
        lost = set(expected) - set(labels)
        extra = set(labels) - set(expected)
        print(f"[soak] kills: {kills}")
        print(f"[soak] labels: {len(labels)} (expected {len(expected)}), lost {len(lost)}, unexpected {len(extra)}, "
              f"redelivered copies {len(got) - len(labels)}")
        # a query in flight when the process is SIGKILLed dies with it: not one that "arrived while up"
        in_flight = [f for f in load.failed if any(abs(f[0] - k) < 2.0 for k in retrieval_kills)]
        failed_up = [f[1] for f in load.failed if f not in in_flight]
        print(f"[soak] retrieval: answered {load.answered}, not up/not serving {load.refused}, "
              f"cut by a kill in flight {len(in_flight)}, failed while up {len(failed_up)} {failed_up[:3]}")
        ok = not lost and not extra and not failed_up
        print("[soak] PASS" if ok else "[soak] FAIL")
        return 0 if ok else 1
    finally:
        stop.set()
        for c in (*parts.values(), refresher):
            c.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
