"""The live phase of `convcg up`: the log's tail sent at a steady rate while models change.

- ``ServedItems``: the items the serving retriever gives each user, refreshed in a background
  thread when a new model version serves (the stream keeps the previous picks meanwhile, so it
  never waits for the retriever);
- ``serve_negatives``: each rating's non-engaged impressions become the retriever's picks;
- ``LiveSender``: produces a batch of events (keyed by user, murmur2 as the replay), records
  when each newest event time was sent (label freshness) and hands probes to the watcher.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import urllib.request
from typing import Callable

import orjson

from convcg.contract import Impression, Topics, event_to_dict, replace_event
from loop.freshness import SendLog
from loop.probes import FeatureProbes, ProbePicker
from streams.replay.replay import topic_for

log = logging.getLogger(__name__)


def _get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class ServedItems:
    """Per user, the items the current retriever serves (one query per user per version)."""

    def __init__(self, retrieval_url: str, k: int, users: list[str],
                 event_clock: Callable[[], float | None] = lambda: None) -> None:
        """``event_clock``: the replay's event time, sent as each query's ``as_of`` so the stored
        sequence is read with the ages it has in event time (the service's default clock is
        the wall clock, which a replay of an old log is years past); None: no ``as_of``."""
        self.url, self.k, self.users, self.event_clock = retrieval_url, k, users, event_clock
        self.cache: dict[str, list[str]] = {}
        self.version: str | None = None
        self.queries = 0
        self.failures = 0
        self.wanted: str | None = None
        self._refreshing: threading.Thread | None = None

    def for_user(self, user_id: str) -> list[str]:
        return self.cache.get(user_id, [])

    def _query(self, user_id: str) -> list[str]:
        params: dict = {"user_id": user_id, "k": self.k, "surface": "home"}
        as_of = self.event_clock()
        if as_of is not None:
            params["as_of"] = repr(float(as_of))
        q = urllib.parse.urlencode(params)
        try:
            body = _get_json(f"{self.url}/retrieve?{q}")
            self.queries += 1
            return [hit["item_id"] for hit in body["items"]]
        except OSError:
            self.failures += 1
            return []

    def load(self, version: str) -> None:
        """Query every user for ``version``, then swap the whole cache in at once."""
        fresh = {u: self._query(u) for u in self.users}
        self.cache, self.version = fresh, version

    def _load_wanted(self) -> None:
        while self.wanted != self.version:  # a newer version may start serving meanwhile
            self.load(self.wanted)

    def refresh_in_background(self, version: str | None) -> None:
        """Load ``version``'s picks in a thread (the newest wins if several arrive meanwhile)."""
        if not version:
            return
        self.wanted = version
        if version == self.version or (self._refreshing is not None and self._refreshing.is_alive()):
            return
        self._refreshing = threading.Thread(target=self._load_wanted, name="served-items", daemon=True)
        self._refreshing.start()


def _is_unengaged_slot(impression_id: str) -> bool:
    """MovieLens impressions named ``imp-<user>-<item>-n<j>`` are the served, not-rated slots."""
    last = impression_id.rsplit("-", 1)[-1]
    return last[:1] == "n" and last[1:].isdigit()


def serve_negatives(events, served, advertiser_of: dict[str, str], shown: dict[str, set[str]] | None = None):
    """Replace each rating's non-engaged impressions by the retriever's picks for that user
    (first ones the user was not shown yet); ids and times stay, so the log stays replayable.
    ``shown`` carries what each user was shown across calls."""
    shown = {} if shown is None else shown
    out = []
    for e in events:
        if isinstance(e, Impression):
            seen = shown.setdefault(e.user_id, set())
            if _is_unengaged_slot(e.impression_id):
                pick = next((i for i in served.for_user(e.user_id) if i not in seen), None)
                if pick is not None:
                    e = replace_event(e, item_id=pick, advertiser_id=advertiser_of.get(pick, e.advertiser_id))
            seen.add(e.item_id)
        out.append(e)
    return out


class LiveSender:
    """``send(batch)`` for ``loop.pacing.SteadyPacer``: served negatives, produce, bookkeeping."""

    def __init__(self, bootstrap: str, topics: Topics, served: ServedItems, advertiser_of: dict[str, str],
                 probes: FeatureProbes, picker: ProbePicker, linger_ms: int = 5) -> None:
        from confluent_kafka import Producer

        # murmur2_random: Java's (and aiokafka's) partitioner for keyed records, so a user's live
        # events land on the partition its warm-up events did
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms,
                                  "partitioner": "murmur2_random", "enable.idempotence": True})
        self.topics, self.served, self.advertiser_of = topics, served, advertiser_of
        self.probes, self.picker = probes, picker
        self.shown: dict[str, set[str]] = {}
        self.sends = SendLog()
        self.errors: list[str] = []

    def _delivery(self, err, _msg) -> None:
        if err is not None:
            self.errors.append(str(err))

    def __call__(self, batch) -> None:
        events = serve_negatives(batch, self.served, self.advertiser_of, self.shown)
        produce, dumps, topics = self.producer.produce, orjson.dumps, self.topics
        for e in events:
            produce(topic_for(e, topics)[0], dumps(event_to_dict(e)), e.user_id.encode(), on_delivery=self._delivery)
        self.producer.poll(0)
        now = time.time()
        self.sends.record(max(e.ts for e in events), now)
        offer = self.picker.offer
        for e in events:
            if offer(e.user_id, e.ts, now):
                self.probes.sent(e.user_id, e.ts, now)

    def close(self) -> None:
        left = self.producer.flush(30)
        if left:
            self.errors.append(f"{left} events still unsent after 30 s")
