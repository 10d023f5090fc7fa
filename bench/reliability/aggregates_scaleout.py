"""Benchmark: `convcg aggregates` scaled out, 1 and 2 workers in one consumer group, same run.

For each worker count, on fresh topics of the same broker: start the workers, wait until the
group has shared every stage partition, then

- steady: produce events (keyed by user, the contract's partitioner) at ``--rate`` events/s
  for ``--seconds``; print the feature updates/s read back and their freshness (event in Kafka
  → update on the feature-updates topic: the update record's Kafka timestamp minus the
  ``ingest_ms`` it carries), p50 / p99 over updates with an ingest time;
- saturated: produce ``--burst`` events as fast as the producer goes; time until every
  advertiser's newest update equals what `StreamingAggregator` computes over all events sent
  (the advertiser stage is the last one); print events/s and updates/s over that time.

Then the 2-worker / 1-worker ratios. Both worker counts share the machine with the broker,
the load producer and the reader.

    python -m bench.reliability.aggregates_scaleout [--rate 5000] [--seconds 20] [--burst 100000] [--partitions 4]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from pathlib import Path

import orjson

from bench import ROOT
from convcg.contract import Topics, event_to_dict
from convcg.kafka.broker import create_topics, find_or_start_broker, free_port
from convcg.metrics_scrape import fetch_samples, metric_sum
from convcg.partitioning import LIBRDKAFKA_PARTITIONER
from loop.supervisor import Component
from streams.replay.datasets import load_log
from tests.support.streaming_aggregator import StreamingAggregator


def metric(port: int, name: str) -> float:
    return metric_sum(fetch_samples(port, timeout=5), name)


class UpdateReader(threading.Thread):
    """Reads the feature-updates topic: freshness per update, the newest value per advertiser."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 20})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])  # no group join
        self.received: list[tuple[float, float]] = []  # (wall time read, freshness s or nan)
        self.advertisers: dict[str, dict] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for msg in self.consumer.consume(10_000, 0.2):
                if msg.error():
                    continue
                u = orjson.loads(msg.value())
                fresh = (msg.timestamp()[1] - u["ingest_ms"]) / 1000 if u["ingest_ms"] > 0 else float("nan")
                self.received.append((time.time(), fresh))
                if u["entity"] == "advertiser":
                    self.advertisers[u["entity_id"]] = u["features"]
        self.consumer.close()

    def between(self, t0: float, t1: float) -> list[float]:
        return [f for t, f in list(self.received) if t0 <= t < t1]


def produce(producer, topics: Topics, events, rate: float | None) -> float:
    """Send ``events`` (at ``rate``/s, or flat out); returns the seconds it took."""
    t0, tick = time.perf_counter(), 0.01
    per_tick = max(1, int(rate * tick)) if rate else len(events)
    for k in range(0, len(events), per_tick):
        for e in events[k:k + per_tick]:
            while True:
                try:
                    producer.produce(topics.of_event(e), orjson.dumps(event_to_dict(e)), e.user_id.encode())
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.poll(0)
        if rate:
            ahead = t0 + (k + per_tick) / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(60)
    return time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    values = sorted(v for v in values if v == v)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run_group(bootstrap: str, workers: int, args, steady, burst, logs: Path) -> dict:
    from confluent_kafka import Producer

    topics = Topics(f"bench{uuid.uuid4().hex[:6]}-")
    create_topics(bootstrap, topics.all(), args.partitions)
    env = dict(CONVCG_STREAMS_KAFKA__BOOTSTRAP=bootstrap, CONVCG_STREAMS_KAFKA__TOPIC_PREFIX=topics.prefix,
               CONVCG_STREAMS_PARTITIONS=str(args.partitions))
    ports = [free_port() for _ in range(workers)]
    components = [Component(f"aggregates-{k}", ["aggregates", "--metrics-port", str(port)], env,
                            logs / f"agg-{workers}-{k}.log", cwd=ROOT, stop_timeout_s=30).start()
                  for k, port in enumerate(ports)]
    procs = [c.process for c in components]
    reader = UpdateReader(bootstrap, topics.feature_updates, args.partitions)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                held = [metric(port, "convcg_aggregates_stage_partitions") for port in ports]
            except OSError:
                held = [0]
            if all(held) and sum(held) == 3 * args.partitions and all(metric(p, "convcg_aggregates_catchup_seconds")
                                                                       for p in ports):
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"{workers} workers never shared the partitions ({held}); logs in {logs}")
            time.sleep(0.5)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "partitioner": LIBRDKAFKA_PARTITIONER,
                             "queue.buffering.max.messages": 1_000_000})
        t0 = time.time()
        produce(producer, topics, steady, args.rate)
        time.sleep(1.0)  # the last updates of the steady phase
        t1 = time.time()
        fresh = reader.between(t0, t1)
        expected_agg = StreamingAggregator()
        for e in steady + burst:
            expected_agg.apply(e, 0)
        expected = {u.entity_id: u.features for u in expected_agg.drain() if u.entity == "advertiser"}
        b0, cpu0 = time.time(), sum(cpu_seconds(p.pid) for p in procs)
        produce(producer, topics, burst, None)
        while reader.advertisers != expected:
            if time.time() - b0 > 600:
                raise SystemExit("the burst was never fully counted")
            time.sleep(0.05)
        b1, cpu1 = time.time(), sum(cpu_seconds(p.pid) for p in procs)
        return {"steady_updates_s": len(fresh) / (t1 - t0), "p50": percentile(fresh, 0.5), "p99": percentile(fresh, 0.99),
                "burst_events_s": len(burst) / (b1 - b0), "burst_updates_s": len(reader.between(b0, b1 + 0.01)) / (b1 - b0),
                "cpu_us_per_event": (cpu1 - cpu0) / len(burst) * 1e6, "held": held}
    finally:
        reader.stop.set()
        for component in components:
            component.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=5000, help="steady events/s")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--burst", type=int, default=100_000, help="events sent flat out after the steady phase")
    ap.add_argument("--partitions", type=int, default=4, help="partitions per topic (even: 2 workers split evenly)")
    ap.add_argument("--impressions", type=int, default=200_000)
    args = ap.parse_args()
    log = load_log("synthetic", n_users=50_000, n_items=20_000, n_advertisers=500, n_impressions=args.impressions,
                   seed=0, days=5)
    t0 = min(e.ts for e in log.events)  # within the dedupe horizon (8 days): topics are read side by side
    events = sorted((e for e in log.events if e.ts < t0 + 6 * 86400), key=lambda e: e.ts)
    n_steady = int(args.rate * args.seconds)
    if n_steady + args.burst > len(events):
        raise SystemExit(f"the log has {len(events)} events, fewer than {n_steady} + {args.burst}: raise --impressions")
    logs = Path(os.environ.get("BENCH_LOGS", "/tmp/bench-aggregates-scaleout"))
    logs.mkdir(parents=True, exist_ok=True)
    broker = find_or_start_broker(log_path=logs / "broker.log")
    results = {}
    try:
        for workers in (1, 2):
            steady = events[:n_steady]
            burst = events[n_steady:n_steady + args.burst]
            r = results[workers] = run_group(broker.bootstrap, workers, args, steady, burst, logs)
            print(f"{workers} worker(s) (stage partitions {r['held']}): steady {args.rate:.0f} events/s -> "
                  f"{r['steady_updates_s']:,.0f} updates/s, freshness p50 {r['p50'] * 1000:.0f} ms "
                  f"p99 {r['p99'] * 1000:.0f} ms; burst of {args.burst} -> {r['burst_events_s']:,.0f} events/s, "
                  f"{r['burst_updates_s']:,.0f} updates/s, workers' CPU {r['cpu_us_per_event']:.0f} µs/event", flush=True)
    finally:
        broker.stop()
    one, two = results[1], results[2]
    def ratio(key: str) -> str:
        return f"{two[key] / one[key]:.2f}x" if one[key] else "n/a"

    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"2 workers / 1 worker: burst events/s {ratio('burst_events_s')}, burst updates/s {ratio('burst_updates_s')}, "
          f"steady updates/s {ratio('steady_updates_s')}, steady freshness p99 {ratio('p99')}")


if __name__ == "__main__":
    main()
