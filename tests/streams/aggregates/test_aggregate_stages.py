"""The scaled-out aggregates without a broker: user / item / advertiser stages over partitioned
in-memory logs give exactly `StreamingAggregator`'s features, whatever the interleaving of
topics and partitions, and a stage partition that crashes (its last state flush cut anywhere,
its feature updates since the last commit lost) and restores from its changelog records plus
the tail from its committed positions still gives exactly those features."""

from __future__ import annotations

import random

import orjson
import pytest

from convcg.contract import Conversion, Engagement, Impression, replace_event
from convcg.partitioning import partition_for
from streams.aggregates.changelog import restore_stage, state_records
from streams.aggregates.settings import AggregateSettings
from streams.aggregates.stage import ADVERTISER, ITEM, STAGES, USER, StageAggregator
from streams.replay.datasets import load_log
from tests.support.streaming_aggregator import StreamingAggregator

KIND = {Impression: 0, Engagement: 1, Conversion: 2}
NEXT = {USER: ITEM, ITEM: ADVERTISER}


def _events(seed: int, n: int = 1500):
    """Cut to 6 days: the dedupe horizon (8 days) runs per stage partition, so an event more
    than that behind the newest one would be refused at different points in one aggregator."""
    log = load_log("synthetic", n_users=120, n_items=80, n_advertisers=9, n_impressions=n, seed=seed, days=3)
    t0 = min(e.ts for e in log.events)
    return [e for e in log.events if e.ts < t0 + 6 * 86400]


def _expected(events, settings=None):
    agg = StreamingAggregator(settings)
    for e in events:
        agg.apply(e, 0)
    return {(u.entity, u.entity_id): (u.event_ts, u.features) for u in agg.drain()}


class Pipeline:
    """Logs per (stage, partition, source); each stage partition reads its sources in random
    chunks, flushes state every few reads, and may crash and restore."""

    def __init__(self, events, partitions: int, rng: random.Random, settings=None) -> None:
        self.p, self.rng, self.settings = partitions, rng, settings
        self.logs = {(s, q, src): [] for s in STAGES for q in range(partitions) for src in range(3)}
        for e in events:
            q = partition_for(e.user_id.encode(), partitions)
            record = [e.event_id, KIND[type(e)], e.ts, e.item_id, getattr(e, "advertiser_id", ""), 0, e.user_id,
                      getattr(e, "impression_id", ""), getattr(e, "dwell_ms", 0)]
            self.logs[(USER, q, KIND[type(e)])].append(record)
        self.stages = {(s, q): StageAggregator(s, settings) for s in STAGES for q in range(partitions)}
        self.read = {(s, q): [0] * StageAggregator(s).n_sources for s in STAGES for q in range(partitions)}
        self.committed = {k: list(v) for k, v in self.read.items()}
        self.changelog = {k: {} for k in self.stages}
        self.uncommitted_updates = {k: [] for k in self.stages}
        self.latest: dict = {}
        self.crashes = 0

    def step(self, key) -> bool:
        stage, pos = self.stages[key], self.read[key]
        sources = [src for src in range(stage.n_sources) if pos[src] < len(self.logs[(key[0], key[1], src)])]
        if not sources:
            return False
        src = self.rng.choice(sources)
        log = self.logs[(key[0], key[1], src)]
        end = min(len(log), pos[src] + self.rng.randint(1, 40))
        for offset in range(pos[src], end):
            eid, kind, ts, item, adv, ingest, *user = log[offset]  # user, impression, dwell at the user stage
            if user:
                stage.apply(eid, kind, ts, user[0], item, adv, ingest, src, offset, user[1], user[2])
            else:
                stage.apply(eid, kind, ts, "", item, adv, ingest, src, offset)
        pos[src] = end
        for fkey, fwd in stage.out:
            self.logs[(NEXT[key[0]], partition_for(fkey.encode(), self.p), 0)].append(fwd)
        stage.out.clear()
        if self.rng.random() < 0.5:
            self._updates(key, stage.drain())
        return True

    def _updates(self, key, updates) -> None:
        self.uncommitted_updates[key].extend(updates)
        for u in updates:
            self.latest[(u.entity, u.entity_id)] = (u.event_ts, u.features)

    def flush_state(self, key, cut: float | None = None) -> None:
        """A state flush; ``cut``: only that share of its records reach the changelog, and the
        commit never happens (a crash during the flush)."""
        stage = self.stages[key]
        self._updates(key, stage.drain())
        records = state_records(stage, list(self.read[key]))
        if cut is not None:
            records = self.rng.sample(records, int(len(records) * cut))
        for k, v in records:
            self.changelog[key][k] = v
        if cut is None:
            self.committed[key] = list(self.read[key])
            self.uncommitted_updates[key] = []

    def crash(self, key) -> None:
        """SIGKILL during a state flush: restore from the changelog, re-read from the commit."""
        self.crashes += 1
        self.flush_state(key, cut=self.rng.random())
        for u in self.uncommitted_updates[key]:  # not delivered: the topic keeps older values
            if self.latest.get((u.entity, u.entity_id)) == (u.event_ts, u.features):
                self.latest.pop((u.entity, u.entity_id))
        self.uncommitted_updates[key] = []
        self.stages[key] = restore_stage(key[0], self.changelog[key], self.settings)
        self.read[key] = list(self.committed[key])

    def run(self, crash_rate: float = 0.0) -> dict:
        keys = list(self.stages)
        while True:
            order = self.rng.sample(keys, len(keys))
            progressed = False
            for key in order:
                if self.step(key):
                    progressed = True
                    if self.rng.random() < 0.2:
                        self.flush_state(key)
                    elif self.rng.random() < crash_rate:
                        self.crash(key)
            if not progressed:
                break
        for key in keys:
            self.flush_state(key)
        return self.latest


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("partitions", [1, 3])
def test_stages_give_exactly_the_features_of_one_aggregator(seed, partitions):
    events = _events(seed)
    rng = random.Random(seed)
    rng.shuffle(events)  # topics and partitions read in any order
    got = Pipeline(events, partitions, rng).run()
    expected = _expected(events)
    assert {e for e, _ in expected} == {USER, ITEM, ADVERTISER}
    assert got == expected


@pytest.mark.parametrize("seed", range(6))
def test_crashes_cut_anywhere_in_a_state_flush_still_give_exactly_the_same_features(seed):
    events = _events(100 + seed)
    rng = random.Random(seed)
    pipeline = Pipeline(events, 2, rng)
    got = pipeline.run(crash_rate=0.15)
    assert pipeline.crashes >= 5
    assert got == _expected(events)


def _with_repeated_engagements(seed: int):
    """Few users, and many engagements engaged again from the same impression (earlier, at the
    same time or later, another dwell): the first-engagement-per-(impression, item) rule and
    its memory (once the first has left the list) have to survive crashes and any read order."""
    rng = random.Random(seed)
    log = load_log("synthetic", n_users=12, n_items=30, n_advertisers=4, n_impressions=1500, seed=seed, days=3)
    t0 = min(e.ts for e in log.events)
    events = [e for e in log.events if e.ts < t0 + 6 * 86400]  # inside one dedupe horizon (see _events)
    for e in list(events):
        if isinstance(e, Engagement) and rng.random() < 0.6:
            events.append(replace_event(e, event_id=f"{e.event_id}-again", ts=e.ts + rng.choice([-30.0, 0.0, 45.0, 1.5 * 86400]),
                                        dwell_ms=e.dwell_ms + 7))
    return events


@pytest.mark.parametrize("seed", range(3))
def test_repeated_engagements_give_the_same_sequence_through_crashes_and_any_read_order(seed):
    events = _with_repeated_engagements(seed)
    settings = AggregateSettings(last_n=3)
    rng = random.Random(seed)
    rng.shuffle(events)
    pipeline = Pipeline(events, 2, rng, settings)
    got = pipeline.run(crash_rate=0.15)
    expected = _expected(events, settings)
    assert pipeline.crashes >= 3 and got == expected
    sequences = [f["last_engaged_items"] for (entity, _), (_, f) in expected.items() if entity == USER]
    assert sum(len(q) == 3 for q in sequences) >= 3  # full lists: the bound was exercised


def test_a_restored_stage_still_leaves_out_a_later_engagement_of_an_impression_gone_from_the_list():
    stage = StageAggregator(USER, AggregateSettings(last_n=2))
    stage.apply("e1", 1, 1000.0, "u", "a", "", 0, 1, 0, "imp-a", 10)
    for k, item in enumerate(("b", "c")):  # push a's entry out of the list of 2
        stage.apply(f"e{k + 2}", 1, 1001.0 + k, "u", item, "", 0, 1, k + 1, f"imp-{item}", 10)
    assert stage.drain()[0].features["last_engaged_items"] == ["c", "b"]
    restored = restore_stage(USER, dict(state_records(stage, [0, 3, 0])), AggregateSettings(last_n=2))
    restored.apply("e9", 1, 1005.0, "u", "a", "", 0, 1, 3, "imp-a", 99)  # imp-a's item again, later
    restored.apply("e10", 1, 1006.0, "u", "a", "", 0, 1, 4, "imp-new", 5)  # a from another impression
    f = restored.drain()[0].features
    assert f["last_engaged_items"] == ["a", "c"] and f["last_engaged_dwell_ms"] == [5.0, 10.0]


def test_a_redelivered_event_at_another_offset_counts_once_and_the_same_record_again_is_no_duplicate():
    stage = StageAggregator(USER)
    stage.apply("e1", 0, 1000.0, "u", "i", "a", 0, 0, 5)
    stage.apply("e1", 0, 1000.0, "u", "i", "a", 0, 0, 9)  # a producer retry: another record
    assert stage.stats["duplicates"] == 1
    restored = restore_stage(USER, dict(state_records(stage, [6, 0, 0])))
    restored.apply("e1", 0, 1000.0, "u", "i", "a", 0, 0, 5)  # read again after the restore
    assert restored.stats == {**restored.stats, "duplicates": 0, "replayed": 1}
    assert restored.drain()[0].features["impressions_1h"] == 1
    assert len(restored.out) == 1  # forwarded again: the item stage dedupes it


def test_buckets_that_leave_the_windows_and_old_seen_ids_are_tombstoned():
    s = AggregateSettings(dedupe_horizon_seconds=8 * 86400)
    stage = StageAggregator(ADVERTISER, s)
    stage.apply("old", 0, 1000.0, "", "i", "a", 0, 0, 0)
    first = dict(state_records(stage, [1]))
    stage.apply("new", 0, 1000.0 + 9 * 86400, "", "i", "a", 0, 0, 1)
    stage.drain()
    second = dict(state_records(stage, [2]))
    old_bucket = next(k for k in first if k.startswith(b"b|"))
    old_seen = next(k for k in first if k.startswith(b"s|"))
    assert second[old_bucket] is None and second[old_seen] is None
    merged = {**first, **second}
    restored = restore_stage(ADVERTISER, merged, s)
    assert list(restored.seen) == ["new"] and list(restored.table["a"].counts) == [int((1000.0 + 9 * 86400) // 300)]


def test_restore_reads_the_state_not_the_log():
    """The changelog of a partition holds one record per live bucket / entity / flush of ids,
    however many events went through it."""
    stage = StageAggregator(ITEM)
    for k in range(5000):  # one item, one bucket, many events
        stage.apply(f"e{k}", 0, 1000.0 + k * 0.01, "", "i", "a", 0, 0, k)
    records = state_records(stage, [5000])
    assert len(records) == 3  # the bucket, the item's advertiser, one batch of seen ids
    restored = restore_stage(ITEM, dict(records))
    restored.touch_all()
    assert restored.drain()[0].features["impressions_1h"] == 5000
    assert orjson.loads(dict(records)[b"m|i"]) == {"a": "a", "k": []}


def test_a_burst_of_seen_ids_is_split_into_records_under_the_broker_limit():
    """One flush after a burst held more ids than one 1 MB record can carry (`convcg up` died on
    MSG_SIZE_TOO_LARGE): the ids go out in records of at most ``seen_ids_per_record``, and the
    restore reads them all."""
    s = AggregateSettings(seen_ids_per_record=1000)
    stage = StageAggregator(ITEM, s)
    for k in range(2500):
        stage.apply(f"e{k}", 0, 1000.0 + k * 0.01, "", "i", "a", 0, 0, k)
    records = state_records(stage, [2500])
    seen = [orjson.loads(v)["ids"] for k, v in records if k.startswith(b"s|")]
    assert [len(ids) for ids in seen] == [1000, 1000, 500]
    restored = restore_stage(ITEM, dict(records), s)
    assert len(restored.seen) == 2500
    restored.apply("e7", 0, 1000.07, "", "i", "a", 0, 0, 7)
    assert restored.stats["replayed"] == 1
