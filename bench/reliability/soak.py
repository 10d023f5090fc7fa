"""Bounded soak: SIGKILL every component at random points during a replay (the label-join
worker, the aggregates workers, the features sink, the trainer, the retrieval service and the
index refresher), restart them, and check what must survive.

    python -m bench.reliability.soak [--minutes 10] [--impressions 60000] [--aggregates-workers 2] [--seed 0]

Afterwards: (1) the deduplicated labels equal those of an undisturbed run (the pure rules over
the same log), so no accepted event was lost and no label was invented or duplicated; (2) once
the aggregates and the sink have consumed everything, the online features of every user, item
and advertiser equal those of an undisturbed computation over the same log (the pure
aggregator), and no other id has any; (3) every retrieval query that reached the service while
it was up got an answer (a refused connection while the process is down is not a query that
arrived); (4) the service answered at least 95% of the queries sent while it was up with a model
loaded (from its first answer after each start until it went down), and it answered at all;
(5) every component was killed at least once and none exited by itself. Each figure is printed
on its own line; the exit code is non-zero when a check fails. Loopback only; bounded in time;
stops by itself. The pure parts are `bench/rigs/soak_checks.py`, the processes
`bench/rigs/soak_pipeline.py`.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from bench.rigs.soak_checks import (
    ANSWERED,
    DOWN,
    FAILED,
    MIN_SERVED_SHARE,
    NOT_SERVING,
    FeatureComparison,
    Query,
    SoakOutcome,
    compare_features,
    count_queries,
    cover_the_log_with_the_dedupe_horizon,
    kill_plan,
    soak_verdict,
    undisturbed_features,
)
from bench.rigs.soak_pipeline import (
    DrainWatch,
    SoakPipeline,
    dead_letter_reasons,
    online_ids,
    read_online_features,
    sent_updates,
)
from convcg.contract import Topics
from convcg.kafka.broker import create_topics, find_or_start_broker
from convcg.kafka.io import read_topic
from loop.online_store import start_online_store
from loop.supervisor import wait_until
from streams.label_join.joiner import compute_labels
from streams.label_join.labels import dedupe
from streams.replay.datasets import load_log
from streams.replay.datasets.event_log import EventLog
from streams.replay.replay import replay, write_catalog

#: the share of the run the replay takes (the rest is left for the tail to drain)
REPLAY_SHARE = 0.7
#: a killed component stays down this long (seconds) before its restart
DOWN_S = (1.0, 4.0)


class QueryLoad(threading.Thread):
    """Steady retrieval queries, each recorded with its outcome."""

    def __init__(self, url: str, users: list[str], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.users, self.stop = url, users, stop
        self.queries: list[Query] = []

    def run(self) -> None:
        rng = random.Random(1)
        while not self.stop.is_set():
            self.queries.append(self.query(rng.choice(self.users)))
            time.sleep(0.02)

    def query(self, user: str) -> Query:
        try:
            with urllib.request.urlopen(f"{self.url}/retrieve?user_id={user}&k=50", timeout=10) as r:
                r.read()
            return Query(time.monotonic(), ANSWERED)
        except urllib.error.HTTPError as exc:
            if exc.code == 503:  # up, but not yet serving an index after a restart
                return Query(time.monotonic(), NOT_SERVING)
            return Query(time.monotonic(), FAILED, f"HTTP {exc.code}")
        except (ConnectionError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError):
                return Query(time.monotonic(), DOWN)  # the process is down: the query never arrived
            return Query(time.monotonic(), FAILED, repr(exc))


class Chaos(threading.Thread):
    """Runs the kill plan (SIGKILL, down for a while, restart) until ``stop_kills``; until
    ``stop``, restarts any component that exited by itself and records that it did."""

    def __init__(self, pipeline: SoakPipeline, plan: list[tuple[float, str]], rng: random.Random,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.p, self.plan, self.rng, self.stop = pipeline, plan, rng, stop
        self.stop_kills, self.kills_over = threading.Event(), threading.Event()
        self.kills: Counter[str] = Counter()
        self.retrieval_kills: list[float] = []
        self.exits: list[str] = []  # components that exited by themselves

    def restart_exited(self) -> None:
        for name, c in self.p.parts.items():
            if not c.alive:
                self.exits.append(f"{name} (exit {c.returncode})")
                print(f"[soak] {name} exited by itself ({c.returncode}); last log lines:\n{c.tail(15)}", flush=True)
                c.start()

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            for at, name in self.plan:
                while not self.stop_kills.wait(min(1.0, max(0.0, t0 + at - time.monotonic()))):
                    self.restart_exited()
                    if time.monotonic() >= t0 + at:
                        break
                if self.stop_kills.is_set():
                    break
                if name == "retrieval":
                    self.retrieval_kills.append(time.monotonic())
                self.p.parts[name].stop(kill=True)
                self.kills[name] += 1
                print(f"[soak] {time.monotonic() - t0:5.0f}s killed {name}; restarting", flush=True)
                time.sleep(self.rng.uniform(*DOWN_S))
                self.p.parts[name].start()
        finally:
            self.kills_over.set()
        while not self.stop.wait(1.0):
            self.restart_exited()


def explain(bootstrap: str, topics: Topics, features: FeatureComparison, lost: set, extra: set,
            expected: dict, labels: dict) -> None:
    """A few of the differences, with what the topics say about them."""
    for label_id in sorted(lost)[:3]:
        print(f"[soak]   lost label {label_id} ({expected[label_id]})")
    for label_id in sorted(extra)[:3]:
        print(f"[soak]   unexpected label {label_id} ({labels[label_id]})")
    if lost or extra:
        print(f"[soak]   dead letters: {dict(dead_letter_reasons(bootstrap, topics))}")
    shown = features.mismatches[:6]
    sent = sent_updates(bootstrap, topics, {(m.entity, m.entity_id) for m in shown}) if shown else {}
    for m in shown:
        updates = sent[(m.entity, m.entity_id)]
        newest = max((u["event_ts"] for u in updates), default=None)
        last = updates[-1] if updates else {}
        print(f"[soak]   {m.entity} {m.entity_id} {m.what}: expected {m.expected!r}, got {m.got!r}; the aggregates "
              f"sent {len(updates)} updates, newest event_ts {newest}, the last one at {last.get('event_ts')} "
              f"with {m.what} = {last.get('features', {}).get(m.what)!r}")


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--impressions", type=int, default=60_000)
    ap.add_argument("--aggregates-workers", type=int, default=2)
    ap.add_argument("--store", choices=["auto", "redis", "sqlite"], default="auto",
                    help="online store: auto = a private redis-server if one is on PATH, else SQLite")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", type=Path, default=Path("var/soak"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    home = args.home / time.strftime("%Y%m%d-%H%M%S")
    log = load_log("synthetic", n_users=2000, n_items=1500, n_advertisers=50, n_impressions=args.impressions,
                   seed=args.seed)
    horizon = cover_the_log_with_the_dedupe_horizon(log.events)
    expected = {l.label_id: l.kind for l in compute_labels(log.events)}
    expected_features = undisturbed_features(log.events)
    catalog = write_catalog(log, home / "catalog" / "items.parquet")
    online = start_online_store(args.store, home)
    broker = find_or_start_broker(log_path=home / "broker.log")
    topics = Topics()
    create_topics(broker.bootstrap, topics.all(), 3)
    pipeline = SoakPipeline(home, broker.bootstrap, topics, catalog, online.env, args.aggregates_workers)
    budget = args.minutes * 60 * REPLAY_SHARE
    plan = kill_plan(pipeline.parts, budget, rng)
    print(f"[soak] {len(log.events):,} events over {budget:.0f}s; online store: {online.describe()}; "
          f"{len(plan)} kills planned of {', '.join(sorted(pipeline.parts))}; {horizon}; home {home}", flush=True)
    stop = threading.Event()
    chaos = Chaos(pipeline, plan, rng, stop)
    try:
        reader = pipeline.start()
        load = QueryLoad(f"http://127.0.0.1:{pipeline.retrieval_port}",
                         sorted({e.user_id for e in log.events[:5000]}), stop)
        load.start()
        chaos.start()
        events = log.events
        chunk = max(1000, len(events) // 40)
        pause = budget / (len(events) / chunk)
        for i in range(0, len(events), chunk):
            last = i + chunk >= len(events)
            replay(EventLog(log.name, events[i:i + chunk], log.catalog), broker.bootstrap, topics, progress=False,
                   close=last)
            time.sleep(pause)
        chaos.stop_kills.set()
        chaos.kills_over.wait()
        drain_s = args.minutes * 60
        got = wait_until(lambda: (lambda raw: raw if len(dedupe(raw)) >= len(expected) else None)(
            read_topic(broker.bootstrap, topics.labels, timeout=10, idle=1.0)), drain_s, "every label")
        labels = {l["label_id"]: l["kind"] for l in dedupe(got)}
        lost = set(expected) - set(labels)
        extra = set(labels) - set(expected)
        drained = DrainWatch(pipeline)
        try:
            wait_until(drained, drain_s, "the aggregates and the sink to consume everything", interval=2.0)
            settled = True
        except TimeoutError:
            settled = False
        print(f"[soak] drain: {drained.last}")
        ids = online_ids(log)
        features: FeatureComparison = compare_features(
            expected_features, read_online_features(reader, ids),
            [(e, i) for e, entity_ids in ids.items() for i in entity_ids],
            ts_tolerance_s=1e-6 if online.kind == "redis" else 1.0)
        # a query in flight when the process is SIGKILLed dies with it: not one that "arrived while up"
        r = count_queries(list(load.queries), chaos.retrieval_kills)
        outcome = SoakOutcome(len(lost), len(extra), r, features, sorted(pipeline.parts), chaos.kills, settled,
                              list(chaos.exits))
        print(f"[soak] labels: {len(labels):,} (undisturbed run {len(expected):,}), identical: "
              f"{yes(not lost and not extra)} (lost {len(lost)}, unexpected {len(extra)}, "
              f"redelivered copies {len(got) - len(labels)})")
        print(f"[soak] features: {features.entities:,} entities, {features.values:,} values compared, identical: "
              f"{yes(features.identical)} (mismatches {len(features.mismatches)}, "
              f"{features.looked_up_absent} other ids looked up and absent)")
        explain(broker.bootstrap, topics, features, lost, extra, expected, labels)
        print(f"[soak] retrieval: sent {r.sent:,}, answered {r.answered:,}, answered {r.served_share:.1%} of the "
              f"{r.while_serving:,} sent while serving (required >= {MIN_SERVED_SHARE:.0%}), failed while serving "
              f"{len(r.failed_while_up)} {r.failed_while_up[:3]} (down {r.down:,}, not serving {r.not_serving:,}, "
              f"cut in flight by a kill {r.cut_in_flight})")
        print(f"[soak] kills: {sum(chaos.kills.values())} "
              f"({', '.join(f'{n} {chaos.kills[n]}' for n in sorted(pipeline.parts))})")
        print(f"[soak] exited by themselves: {len(chaos.exits)} {chaos.exits}")
        why = soak_verdict(outcome)
        print("[soak] PASS" if not why else f"[soak] FAIL: {'; '.join(why)}")
        return 0 if not why else 1
    finally:
        stop.set()
        if chaos.is_alive():
            chaos.join()
        pipeline.stop()
        broker.stop()
        online.stop()


if __name__ == "__main__":
    sys.exit(main())
