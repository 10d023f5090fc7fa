"""The bundled Tansu broker's CPU under a steady produce + tail-consume load, by producer linger.

    python -m bench.broker_batches [--rate 5000] [--lingers 2 5 20] [--windows 5]

For each linger: a fresh Tansu (memory storage) on a free port, one librdkafka producer sending
``--rate`` small messages/s over 6 partitions, and one aiokafka consumer reading at the tail
(fetch wait 100 ms, as the sink and the worker run). Prints the broker process's CPU share in
consecutive 5 s windows. Seen here: the cost of serving the consumer grows with the number of
record batches the broker holds (its memory storage is an object store: one object per batch),
so a producer that lingers less makes more, smaller batches and a broker that gets slower the
longer it runs. This is why the freshness benches' load generators use librdkafka's default
linger (5 ms), and why long runs on the bundled broker are slower than short ones.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

from bench.rigs.paced import send_paced

TOPICS = ("bb-impressions", "bb-engagements")
PAYLOAD = b'{"event_id":"e","impression_id":"i","ts":1700000000.0,"user_id":"u1","item_id":"i1"}'


def produce(bootstrap: str, rate: int, linger_ms: int, stop: threading.Event) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms})

    def send(start: int, end: int) -> None:
        for n in range(start, end):
            p.produce(TOPICS[n % 2], PAYLOAD, str(n % 1000).encode())
        p.poll(0)

    send_paced(rate, send, stop=stop)
    p.flush(10)


def consume(bootstrap: str, stop: threading.Event) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> None:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
        await c.start()
        c.assign([TopicPartition(t, p) for t in TOPICS for p in range(3)])
        while not stop.is_set():
            await c.getmany(timeout_ms=100, max_records=2000)
        await c.stop()

    asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--lingers", type=int, nargs="+", default=[2, 5, 20])
    ap.add_argument("--windows", type=int, default=5, help="5-second measurement windows per linger")
    args = ap.parse_args()

    import psutil

    from convcg.broker import create_topics, start_tansu

    print(f"Tansu CPU (% of one core) with {args.rate:,} msgs/s produced and one tail consumer, "
          f"in consecutive 5 s windows")
    for linger in args.lingers:
        broker = start_tansu()
        try:
            create_topics(broker.bootstrap, list(TOPICS), 3)
            proc = psutil.Process(broker.process.pid)
            stop = threading.Event()
            threads = [threading.Thread(target=produce, args=(broker.bootstrap, args.rate, linger, stop), daemon=True),
                       threading.Thread(target=consume, args=(broker.bootstrap, stop), daemon=True)]
            for t in threads:
                t.start()
            time.sleep(2)
            shares = []
            for _ in range(args.windows):
                c0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
                time.sleep(5)
                shares.append((sum(proc.cpu_times()[:2]) - c0) / (time.perf_counter() - t0) * 100)
            stop.set()
            for t in threads:
                t.join(15)
            print(f"  linger {linger:3d} ms: " + "  ".join(f"{s:5.1f}%" for s in shares))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
