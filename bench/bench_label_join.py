"""Label-join throughput of one Faust worker vs the raw consume rate of the same topics.

    python bench/bench_label_join.py [--events 200000] [--partitions 3]

Produces a synthetic log (seeded) into the event topics of a real broker (KAFKA_BOOTSTRAP or a
local Tansu), then measures in the same run:
  1. raw consume: a plain kafka-python consumer reading all three topics (no parsing);
  2. label join: one `convcg worker` process; events/s from its first consumed batch to the
     last, read off its Prometheus counter (so the ~20 s consumer-group join is excluded).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import urllib.request

import orjson

from convcg.broker import create_topics, find_or_start_broker, free_port
from convcg.contract import Topics, event_to_dict
from convcg.kafka_io import json_producer
from streams.control import closing_watermark, send_watermark
from streams.label_rules import LabelRules


def synthetic_events(n_impressions: int, seed: int):
    from streams.datasets import load_log

    log = load_log("synthetic", n_impressions=n_impressions, seed=seed)
    return log.events


def produce(bootstrap: str, topics: Topics, events, partitions: int) -> None:
    p = json_producer(bootstrap)
    by_type = {"Impression": topics.impressions, "Engagement": topics.engagements, "Conversion": topics.conversions}
    for e in events:
        p.send(by_type[type(e).__name__], key=e.user_id.encode(), value=orjson.dumps(event_to_dict(e)))
    p.flush()
    send_watermark(p, topics, partitions, closing_watermark(events[-1].ts, LabelRules()))
    p.close()


def raw_consume_rate(bootstrap: str, topics: Topics, total: int) -> float:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
    tps = [TopicPartition(t, p) for t in topics.events for p in c.partitions_for_topic(t)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    n, t0 = 0, time.perf_counter()
    while n < total:
        for recs in c.poll(500, max_records=20000).values():
            n += len(recs)
    dt = time.perf_counter() - t0
    c.close()
    return n / dt


def scrape(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def worker_rate(bootstrap: str, prefix: str, total: int, partitions: int) -> tuple[float, float]:
    port = free_port()
    env = dict(os.environ, CONVCG_STREAMS_BOOTSTRAP=bootstrap, CONVCG_STREAMS_TOPIC_PREFIX=prefix,
               CONVCG_STREAMS_APP_ID=f"{prefix}bench", CONVCG_STREAMS_METRICS_PORT=str(port),
               CONVCG_STREAMS_PARTITIONS=str(partitions))
    proc = subprocess.Popen([sys.executable, *os.environ.get("BENCH_PY_ARGS", "").split(), "-m", "loop.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            n = scrape(port, "convcg_stream_events_total")
            now = time.perf_counter()
            if n > 0 and first is None:
                first = (now, n)
            if n >= total:
                labels = scrape(port, "convcg_stream_labels_total")
                return (n - first[1]) / (now - first[0]), labels
            time.sleep(0.05)
        raise TimeoutError("worker did not finish")
    finally:
        proc.terminate()
        proc.wait(30)


def faust_noop_rate(bootstrap: str, prefix: str, total: int) -> float:
    script = os.path.join(os.path.dirname(__file__), "faust_noop_agent.py")
    done = subprocess.run([sys.executable, script, bootstrap, prefix, str(total)], capture_output=True,
                          text=True, timeout=600)
    # Faust's worker redirects stdout into its log, so the line may carry a log prefix
    match = re.search(r"RATE (\d+)", done.stdout + done.stderr)
    if match is None:
        raise RuntimeError(f"no-op agent printed no rate:\n{done.stderr[-2000:]}")
    return float(match.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000, help="impressions to generate")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    events = synthetic_events(args.events, args.seed)
    broker = find_or_start_broker()
    topics = Topics(f"bench{int(time.time())}-")
    create_topics(broker.bootstrap, topics.all(), args.partitions)
    produce(broker.bootstrap, topics, events, args.partitions)
    raw = raw_consume_rate(broker.bootstrap, topics, len(events))
    ceiling = faust_noop_rate(broker.bootstrap, topics.prefix, len(events))
    rate, labels = worker_rate(broker.bootstrap, topics.prefix, len(events), args.partitions)
    print(f"events: {len(events)}  partitions: {args.partitions}  broker: {broker.kind}  cores: {os.cpu_count()}"
          f"  load: {os.getloadavg()[0]:.1f}")
    print(f"raw consume (kafka-python, no parsing): {raw:,.0f} events/s")
    print(f"Faust take_events, agent does nothing:  {ceiling:,.0f} events/s   (the framework's ceiling)")
    print(f"label join (1 Faust worker):            {rate:,.0f} events/s   labels emitted: {labels:,.0f}")
    print(f"ratio join / raw consume:               {rate / raw:.2f}")
    print(f"ratio join / Faust no-op ceiling:       {rate / ceiling:.2f}")
    broker.stop()


if __name__ == "__main__":
    main()
