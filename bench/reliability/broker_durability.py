"""Apache Kafka keeps every record it acknowledged across a SIGKILL of the broker.

    python -m bench.reliability.broker_durability [--records 100000] [--kill-at 0.4]

A local Apache Kafka node on a fresh folder; one idempotent producer (``acks=all``) sends
``--records`` numbered records to a 3-partition topic. Once ``--kill-at`` of them are
acknowledged the broker is SIGKILLed and restarted on the same folder (same port) while the
producer keeps sending and retrying. At the end the topic is read whole: every acknowledged
record must be there exactly once. Prints the counts, the start-to-ready times of both starts
and the time from the kill to the first acknowledgement after the restart. Exit code 1 when a
record was lost or duplicated, or when the kill did not land mid-stream.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TOPIC = "durability"
#: records sent but not yet acknowledged, at most
IN_FLIGHT = 5_000


@dataclass
class DurabilityRun:
    records: int
    acked_before_kill: int
    acked: int
    failed: int
    present: int
    lost: int
    duplicated: int
    first_ready_s: float
    restart_ready_s: float
    kill_to_next_ack_s: float

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicated == 0 and 0 < self.acked_before_kill < self.records
                and self.acked > self.acked_before_kill)

    def lines(self) -> list[str]:
        return [f"records sent: {self.records:,}; acknowledged before the SIGKILL: {self.acked_before_kill:,}; "
                f"acknowledged in all: {self.acked:,}; failed deliveries: {self.failed:,}",
                f"on the broker after the restart: {self.present:,} records; acknowledged but lost: {self.lost}; "
                f"duplicated: {self.duplicated}",
                f"broker start to ready: {self.first_ready_s:.2f}s (new folder), {self.restart_ready_s:.2f}s "
                f"(restart after SIGKILL); kill to the first acknowledgement of a record sent after it: "
                f"{self.kill_to_next_ack_s:.2f}s",
                f"durability: {'OK' if self.ok else 'FAILED'}"]


def produce_through_a_broker_kill(home: Path, records: int = 100_000, kill_at: float = 0.4) -> DurabilityRun:
    from confluent_kafka import Producer

    from convcg.kafka.broker import create_topics
    from convcg.kafka.io import read_topic
    from convcg.kafka.local import start_local_kafka

    data_dir = home / "kafka"
    broker = start_local_kafka(data_dir, log_path=home / "broker.log")
    first_ready = broker.ready_s
    create_topics(broker.bootstrap, [TOPIC], 3)
    acked: list[int] = []
    failed: list[int] = []
    ack_times: list[float] = []
    first_after_kill: int | None = None  # the first record sent after the kill

    def on_delivery(err, msg) -> None:
        (failed if err is not None else acked).append(int(msg.value()))
        if err is None and first_after_kill is not None and int(msg.value()) >= first_after_kill:
            ack_times.append(time.monotonic())  # only the restarted broker can acknowledge these

    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                         "message.timeout.ms": 120_000, "on_delivery": on_delivery})
    restarted: dict = {}
    killed_at = acked_before_kill = None

    def restart() -> None:
        restarted["broker"] = start_local_kafka(data_dir, log_path=home / "broker-restarted.log")

    restarter: threading.Thread | None = None
    try:
        for i in range(records):
            while True:
                try:
                    producer.produce(TOPIC, str(i).encode(), str(i % 997).encode())
                    break
                except BufferError:
                    producer.poll(0.05)
            while i + 1 - len(acked) - len(failed) > IN_FLIGHT:  # a stream, not one burst into the queue
                producer.poll(0.005)
            if killed_at is None and len(acked) >= kill_at * records:
                broker.process.kill()
                broker.process.wait()
                killed_at, acked_before_kill, first_after_kill = time.monotonic(), len(acked), i + 1
                restarter = threading.Thread(target=restart)
                restarter.start()
        if killed_at is None:
            producer.flush(60)
            raise RuntimeError(f"the stream ended before {kill_at:.0%} of it was acknowledged: nothing was killed")
        remaining = producer.flush(180)
        restarter.join()
        if remaining:
            raise TimeoutError(f"{remaining} records neither acknowledged nor failed after the restart")
        new = restarted["broker"]
        got = [int(r.value) for r in read_topic(new.bootstrap, TOPIC, decode=False, min_count=len(set(acked)),
                                                 timeout=60, idle=1.0)]
        present = set(got)
        return DurabilityRun(records=records, acked_before_kill=acked_before_kill, acked=len(acked), failed=len(failed),
                             present=len(got), lost=len(set(acked) - present), duplicated=len(got) - len(present),
                             first_ready_s=first_ready, restart_ready_s=new.ready_s,
                             kill_to_next_ack_s=min(ack_times, default=float("nan")) - killed_at)
    finally:
        broker.stop()
        if restarter is not None:
            restarter.join()
        if "broker" in restarted:
            restarted["broker"].stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--kill-at", type=float, default=0.4, help="fraction acknowledged when the broker is killed")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-durability-"))
    try:
        run = produce_through_a_broker_kill(home, args.records, args.kill_at)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    for line in run.lines():
        print(line)
    return 0 if run.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
