"""Benchmark: synthetic log generation and replay throughput into a real broker.

Prints (1) the time to generate a synthetic log of N impressions (target: 1M well under a
minute), (2) replay() throughput in events/s beside a baseline in the same run: the same
producer sending pre-serialised bytes of the same events (the raw produce rate), and their
ratio. Uses KAFKA_BOOTSTRAP if set, else starts a local Apache Kafka.

    python -m bench.perf.replay [--generate 1000000] [--replay 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import orjson

from convcg.contract import Topics, event_to_dict
from convcg.kafka.broker import create_topics, find_or_start_broker
from convcg.kafka.io import json_producer
from streams.replay.datasets import EventLog, load_log
from streams.replay.replay import ReplaySettings, replay, topic_for


async def produce_raw(bootstrap: str, payloads: list, settings: ReplaySettings) -> float:
    """Seconds to send pre-serialised payloads with the same aiokafka settings as replay()."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=settings.linger_ms,
                                max_batch_size=settings.batch_bytes, acks=1)
    await producer.start()
    t0 = time.perf_counter()
    futures = [await producer.send(topic, key=key, value=value) for topic, key, value in payloads]
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - t0
    await producer.stop()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generate", type=int, default=1_000_000, help="impressions to generate")
    ap.add_argument("--replay", type=int, default=200_000, help="events to replay")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--kafka-python", type=int, default=30_000, help="events for the kafka-python baseline")
    args = ap.parse_args()

    t0 = time.perf_counter()
    log = load_log("synthetic", n_users=100_000, n_items=50_000, n_advertisers=1000,
                   n_impressions=args.generate, seed=0)
    gen_s = time.perf_counter() - t0
    print(f"generate synthetic: {args.generate:,} impressions -> {len(log):,} events in {gen_s:.1f}s "
          f"({len(log) / gen_s:,.0f} events/s) {log.counts()}")

    events = log.events[:args.replay]
    n = len(events)
    settings = ReplaySettings()
    with find_or_start_broker() as broker:
        base_topics = Topics(f"bench{uuid.uuid4().hex[:6]}-base-")
        run_topics = Topics(f"bench{uuid.uuid4().hex[:6]}-run-")
        for t in (base_topics, run_topics):
            create_topics(broker.bootstrap, t.events, args.partitions)

        payloads = [(topic_for(e, base_topics)[0], e.user_id.encode(), orjson.dumps(event_to_dict(e)))
                    for e in events]
        raw_s = asyncio.run(produce_raw(broker.bootstrap, payloads, settings))
        producer = json_producer(broker.bootstrap, linger_ms=settings.linger_ms, batch_size=settings.batch_bytes)
        t0 = time.perf_counter()
        for topic, key, value in payloads[:args.kafka_python]:
            producer.send(topic, key=key, value=value)
        producer.flush()
        kafka_python_s = time.perf_counter() - t0
        producer.close()

        t0 = time.perf_counter()
        replay(EventLog("bench", events), broker.bootstrap, run_topics, progress=False, settings=settings)
        replay_s = time.perf_counter() - t0
    print(f"broker: {broker.kind} {broker.bootstrap}, {args.partitions} partitions, {n:,} events")
    print(f"kafka-python raw produce (pre-serialised, first {args.kafka_python:,}): "
          f"{min(n, args.kafka_python) / kafka_python_s:,.0f} events/s")
    print(f"aiokafka raw produce (pre-serialised bytes): {n / raw_s:,.0f} events/s")
    print(f"replay() (serialise + produce):     {n / replay_s:,.0f} events/s "
          f"({(n / replay_s) / (n / raw_s):.2f}x raw)")


if __name__ == "__main__":
    main()
