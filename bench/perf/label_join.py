"""Label-join throughput of one Faust worker vs the raw consume rate of the same topics.

    python -m bench.perf.label_join [--events 200000] [--partitions 3]

Produces a synthetic log (seeded) into the event topics of a real broker (KAFKA_BOOTSTRAP or a
local Apache Kafka), then measures in the same run:
  1. raw consume: a plain kafka-python consumer reading all three topics (no parsing);
  2. label join: one `convcg worker` process; events/s from its first consumed batch to the
     last, read off its Prometheus counter (so the ~20 s consumer-group join is excluded).
Interpreter options for the worker process (e.g. ``-X importtime``) can be given in
``BENCH_PY_ARGS``. The processes' logs go to a temporary directory, printed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import orjson

from bench import ROOT
from convcg.contract import Topics, event_to_dict
from convcg.kafka.broker import create_topics, find_or_start_broker, free_port
from convcg.kafka.io import json_producer
from convcg.metrics_scrape import fetch_samples, metric_sum
from loop.supervisor import Component
from streams.label_join.rules import LabelRules
from streams.replay.watermarks import closing_watermark, send_watermark


def synthetic_events(n_impressions: int, seed: int):
    from streams.replay.datasets import load_log

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


#: how often the worker's /metrics is read: each scrape costs the worker CPU (and its GIL) to
#: render, so a tight loop would slow what it measures; the rate's error is at most this over
#: the run's length
SCRAPE_EVERY_S = 0.25


def scrape(port: int, name: str) -> float:
    return metric_sum(fetch_samples(port, timeout=2, missing_ok=True), name)


def settled(read, quiet_s: float = 2.0, timeout_s: float = 60.0) -> float:
    """``read()`` once it has not changed for ``quiet_s`` (the labels the closing watermark
    decides come out after the last event is counted)."""
    value, since, deadline = read(), time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(SCRAPE_EVERY_S)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


def worker_rate(bootstrap: str, prefix: str, total: int, partitions: int, logs: Path,
                workers: int = 1) -> tuple[float, float]:
    """Label-join rate of ``workers`` workers in one consumer group (a fresh group, reading the
    log from its start): events/s summed over the workers, from the first event counted to the
    last; and the labels they emitted."""
    ports = [free_port() for _ in range(workers)]
    components = []
    for k, port in enumerate(ports):
        env = {"CONVCG_STREAMS_KAFKA__BOOTSTRAP": bootstrap, "CONVCG_STREAMS_KAFKA__TOPIC_PREFIX": prefix,
               "CONVCG_STREAMS_APP_ID": f"{prefix}bench{workers}", "CONVCG_STREAMS_METRICS_PORT": str(port),
               "CONVCG_STREAMS_PARTITIONS": str(partitions),
               "CONVCG_STREAMS_DATA_DIR": str(logs / f"streams-{workers}-{k}")}
        components.append(Component(f"worker-{workers}-{k}", ["worker"], env, logs / f"worker-{workers}-{k}.log",
                                    cwd=ROOT, stop_timeout_s=30,
                                    interpreter_args=tuple(os.environ.get("BENCH_PY_ARGS", "").split())).start())
    try:
        first = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            n = sum(scrape(port, "convcg_stream_events_total") for port in ports)
            now = time.perf_counter()
            if n > 0 and first is None:
                first = (now, n)
            if n >= total:
                rate = (n - first[1]) / (now - first[0])
                return rate, settled(lambda: sum(scrape(port, "convcg_stream_labels_total") for port in ports))
            time.sleep(SCRAPE_EVERY_S)
        raise TimeoutError(f"{workers} worker(s) did not finish")
    finally:
        for component in components:
            component.stop()


def faust_noop_rate(bootstrap: str, prefix: str, total: int, logs: Path, inline: bool = False) -> float:
    name = "faust-noop-agent" + ("-inline" if inline else "")
    agent = Component(name, [bootstrap, prefix, str(total)],
                      {"NOOP_INLINE": "1" if inline else "0"}, logs / f"{name}.log",
                      module="bench.perf.faust_noop_agent", cwd=ROOT).start()
    try:
        agent.wait(600)
    finally:
        agent.stop()
    # Faust's worker redirects stdout into its log, so the line may carry a log prefix
    match = re.search(r"RATE (\d+)", agent.log_path.read_text(errors="replace"))
    if match is None:
        raise RuntimeError(f"no-op agent printed no rate:\n{agent.tail(40)}")
    return float(match.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000, help="impressions to generate")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", default="1,2", help="label-join worker counts to run, one group each")
    args = ap.parse_args()
    events = synthetic_events(args.events, args.seed)
    broker = find_or_start_broker()
    topics = Topics(f"bench{int(time.time())}-")
    create_topics(broker.bootstrap, topics.all(), args.partitions)
    logs = Path(tempfile.mkdtemp(prefix="bench-label-join-"))
    produce(broker.bootstrap, topics, events, args.partitions)
    raw = raw_consume_rate(broker.bootstrap, topics, len(events))
    ceiling = faust_noop_rate(broker.bootstrap, topics.prefix, len(events), logs)
    inline_ceiling = faust_noop_rate(broker.bootstrap, topics.prefix, len(events), logs, inline=True)
    rates = {n: worker_rate(broker.bootstrap, topics.prefix, len(events), args.partitions, logs, n)
             for n in (int(w) for w in args.workers.split(","))}
    rate, labels = rates[min(rates)]
    print(f"events: {len(events)}  partitions: {args.partitions}  broker: {broker.kind}  cores: {os.cpu_count()}"
          f"  load: {os.getloadavg()[0]:.1f}")
    print(f"raw consume (kafka-python, no parsing): {raw:,.0f} events/s")
    print(f"Faust take_events, agent does nothing:  {ceiling:,.0f} events/s   (the framework's ceiling)")
    print(f"  the same with the worker's inline delivery (streams.label_join.faust.delivery): {inline_ceiling:,.0f} events/s")
    for n, (r, lab) in rates.items():
        print(f"label join ({n} Faust worker{'s' if n > 1 else ' '} in a group):  {r:,.0f} events/s   labels emitted: {lab:,.0f}")
    if len(rates) > 1:
        many = max(rates)
        print(f"ratio {many} workers / {min(rates)}:                 {rates[many][0] / rate:.2f}"
              f"   (same labels: {rates[many][1] == labels})")
    print(f"ratio join / raw consume:               {rate / raw:.2f}")
    print(f"ratio join / Faust no-op ceiling:       {rate / ceiling:.2f}")
    print(f"ratio join / no-op with inline delivery: {rate / inline_ceiling:.2f}")
    print(f"logs: {logs}")
    broker.stop()


if __name__ == "__main__":
    main()
