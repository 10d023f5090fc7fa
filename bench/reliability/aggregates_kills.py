"""`convcg aggregates` alone under SIGKILLs: which stage loses events?

    python -m bench.reliability.aggregates_kills [--workers 2] [--seconds 120] [--seed 0]

The soak's log (60k impressions) is replayed over ``--seconds`` while a random aggregates
worker is SIGKILLed and restarted every 8-16 s. Once the group has committed the true end of
every input, it prints how many entities' last feature update differs from the pure
aggregator, and how many of the log's events never reached each repartition topic (the user
stage's forwards to ``aggregates-by-item``, the item stage's to ``aggregates-by-advertiser``).
Loopback only (its own broker: KAFKA_BOOTSTRAP, else a local Apache Kafka); bounded; stops by itself.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.rigs.soak_checks import (
    cover_the_log_with_the_dedupe_horizon,
    undisturbed_features,
)
from bench.rigs.soak_pipeline import group_lag
from convcg.contract import Topics
from convcg.kafka.broker import create_topics, find_or_start_broker
from convcg.kafka.io import read_topic
from loop.supervisor import Component
from streams.replay.datasets import load_log
from streams.replay.datasets.event_log import EventLog
from streams.replay.replay import replay

GROUP = "aggregates-kills"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="aggregates-kills-"))
    log = load_log("synthetic", n_users=2000, n_items=1500, n_advertisers=50, n_impressions=60_000, seed=0)
    print(cover_the_log_with_the_dedupe_horizon(log.events), flush=True)
    expected = undisturbed_features(log.events)
    broker = find_or_start_broker(data_dir=home / "kafka", log_path=home / "broker.log")
    topics = Topics()
    create_topics(broker.bootstrap, topics.all(), 3)
    env = {"CONVCG_STREAMS_KAFKA__BOOTSTRAP": broker.bootstrap, "CONVCG_STREAMS_AGGREGATES_GROUP": GROUP}
    parts = {f"aggregates-{k}": Component(f"aggregates-{k}", ["aggregates"], env, home / f"aggregates-{k}.log")
             for k in range(1, args.workers + 1)}
    rng, stop, kills = random.Random(args.seed), threading.Event(), Counter()

    def chaos() -> None:
        while not stop.wait(rng.uniform(8, 16)):
            name = rng.choice(sorted(parts))
            parts[name].stop(kill=True)
            kills[name] += 1
            time.sleep(rng.uniform(1, 4))
            parts[name].start()

    try:
        for c in parts.values():
            c.start()
        thread = threading.Thread(target=chaos, daemon=True)
        thread.start()
        events, chunks = log.events, 40
        size = len(events) // chunks + 1
        for i in range(0, len(events), size):
            replay(EventLog(log.name, events[i:i + size], log.catalog), broker.bootstrap, topics, progress=False,
                   close=i + size >= len(events))
            time.sleep(args.seconds / chunks)
        stop.set()
        thread.join()
        inputs = [*topics.events, topics.aggregates_by_item, topics.aggregates_by_advertiser]
        while group_lag(broker.bootstrap, GROUP, inputs)[0]:
            time.sleep(2)
        time.sleep(8)  # a restored worker sends its entities once more when it goes live
        last = {(u["entity"], u["entity_id"]): (u["event_ts"], u["features"])
                for u in read_topic(broker.bootstrap, topics.feature_updates, timeout=30)}
        differ = Counter(k[0] for k, v in expected.items() if last.get(k) != v)
        ids = {e.event_id for e in log.events}
        reached = {t: {r[0] for r in read_topic(broker.bootstrap, t, timeout=30)} & ids
                   for t in (topics.aggregates_by_item, topics.aggregates_by_advertiser)}
        print(f"kills: {sum(kills.values())} {dict(sorted(kills.items()))}")
        print(f"entities whose last update differs from the pure aggregator: {sum(differ.values())} of "
              f"{len(expected)} {dict(differ)}")
        for topic, got in reached.items():
            print(f"events never forwarded to {topic}: {len(ids - got)} of {len(ids)}")
        return 0 if not differ else 1
    finally:
        stop.set()
        for c in parts.values():
            c.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
