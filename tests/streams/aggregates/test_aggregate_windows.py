"""Streaming aggregates: windows over event time (boundaries, out-of-order, expiry), Beta
smoothing, last-N engaged items, duplicates, coalesced drains and redelivery; plus
a randomized comparison with a brute-force recount."""

from __future__ import annotations

import json
import random

import pytest

from convcg.contract import STREAM_FEATURES, Conversion, Engagement, Impression
from streams.aggregates.sequence import insert_recent
from streams.aggregates.settings import AggregateSettings
from streams.aggregates.windows import smoothed_rate
from tests.support.streaming_aggregator import StreamingAggregator

H, D = 3600, 86400
EXACT = AggregateSettings(bucket_seconds=1)


def imp(eid, ts, user="u1", item="i1", adv="a1"):
    return Impression(eid, f"imp-{eid}", float(ts), user, item, adv, "home", 1)


def eng(eid, ts, user="u1", item="i1", dwell=1000):
    return Engagement(eid, f"imp-{eid}", float(ts), user, item, "click", dwell)


def conv(eid, ts, user="u1", item="i1", adv="a1"):
    return Conversion(eid, float(ts), user, item, adv, "checkout", 10.0)


def updates_by_key(agg):
    return {(u.entity, u.entity_id): u for u in agg.drain()}


def run(events, settings=EXACT, ingest_ms=0):
    agg = StreamingAggregator(settings)
    for e in events:
        agg.apply(e, ingest_ms)
    return agg, updates_by_key(agg)


# --- windows --------------------------------------------------------------------------------------

T = 1_000 * D  # a whole number of days: every bucket grid lines up with it


def test_window_edges_are_half_open_exact_with_one_second_buckets():
    events = [imp("old", T - 7 * D), imp("w7", T - 7 * D + 1), imp("d", T - D), imp("d1", T - D + 1),
              imp("h", T - H), imp("h1", T - H + 1), imp("now", T)]
    _, ups = run(events)
    f = ups[("user", "u1")].features
    assert (f["impressions_1h"], f["impressions_1d"], f["impressions_7d"]) == (2, 4, 6)
    assert ups[("user", "u1")].event_ts == T


def test_five_minute_buckets_round_the_far_edge_to_the_grid():
    s = AggregateSettings()  # 300 s buckets
    now = T + 150  # mid-bucket: the 1h window starts at the bucket 11 buckets back
    events = [imp("a", T - H + 299), imp("b", T - H + 300), imp("c", now)]
    _, ups = run(events, s)
    assert ups[("item", "i1")].features["impressions_1h"] == 2  # b and c; a's bucket is out
    _, ups = run([imp("a", T - H + 299), imp("c", T + 299)], s)
    assert ups[("item", "i1")].features["impressions_1h"] == 1


def test_out_of_order_event_inside_the_window_counts_without_moving_time_back():
    _, ups = run([imp("new", T), imp("older", T - 30 * 60), eng("e-older", T - 2 * H)])
    u = ups[("user", "u1")]
    assert u.event_ts == T
    assert (u.features["impressions_1h"], u.features["engagements_1h"], u.features["engagements_1d"]) == (2, 0, 1)


def test_a_jump_past_every_window_between_drains_keeps_the_new_events():
    agg = StreamingAggregator(EXACT)
    agg.apply(imp("a", T), 0)
    agg.drain()
    agg.apply(imp("b", T + 8 * D), 0)
    agg.apply(imp("c", T + 8 * D + 10), 0)
    agg.apply(imp("d", T + 2 * D), 0)  # older than b, c but within 7d of them
    f = updates_by_key(agg)[("item", "i1")].features
    assert (f["impressions_1h"], f["impressions_1d"], f["impressions_7d"]) == (2, 2, 3)


def test_events_expire_as_event_time_advances_and_buckets_are_pruned():
    agg = StreamingAggregator(EXACT)
    agg.apply(imp("a", T), 0)
    agg.apply(imp("b", T + H), 0)
    f = updates_by_key(agg)[("item", "i1")].features
    assert (f["impressions_1h"], f["impressions_7d"]) == (1, 2)
    agg.apply(imp("c", T + 7 * D), 0)  # a is exactly 7d old: out; b still in
    f = updates_by_key(agg)[("item", "i1")].features
    assert (f["impressions_1h"], f["impressions_1d"], f["impressions_7d"]) == (1, 1, 2)
    assert sorted(agg._state["item"]["i1"].counts) == [T + H, T + 7 * D]  # a's bucket dropped
    agg.apply(imp("d", T + 30 * D), 0)
    f = updates_by_key(agg)[("item", "i1")].features
    assert (f["impressions_1h"], f["impressions_7d"]) == (1, 1)


def test_wall_clock_plays_no_part():
    """A log 50 years old aggregates like a current one: only event time counts."""
    _, ups = run([imp("a", 100.0), imp("b", 100.0 + H - 1)])
    assert ups[("user", "u1")].features["impressions_1h"] == 2


# --- routing ----------------------------------------------------------------------------------------

def test_each_event_type_counts_for_the_right_entities():
    agg, ups = run([imp("i", T, item="i1", adv="a1"), eng("e", T + 1, item="i1"),
                    conv("c", T + 2, item="i1", adv="a1"), eng("e2", T + 3, user="u2", item="i9")])
    assert set(ups) == {("user", "u1"), ("user", "u2"), ("item", "i1"), ("item", "i9"), ("advertiser", "a1")}
    for key in [("user", "u1"), ("item", "i1"), ("advertiser", "a1")]:
        f = ups[key].features
        assert (f["impressions_1h"], f["engagements_1h"], f["conversions_1h"]) == (1, 1, 1), key
    assert ups[("item", "i9")].features["engagements_1h"] == 1
    assert agg.stats["no_advertiser"] == 1  # i9 never seen with an advertiser


def test_an_engagement_read_before_its_items_impression_still_counts_for_the_advertiser():
    """Topics are read side by side (and a rebuild reads whole logs), so an engagement can come
    in before any impression of its item: it waits for the item's advertiser, then counts."""
    agg = StreamingAggregator(EXACT)
    agg.apply(eng("e1", T + 5, item="i7"), 0)
    agg.apply(eng("e2", T + 6, user="u2", item="i7"), 0)
    first = updates_by_key(agg)
    assert ("advertiser", "a7") not in first and first[("item", "i7")].features["engagements_1h"] == 2
    agg.apply(imp("i", T, user="u3", item="i7", adv="a7"), 0)
    f = updates_by_key(agg)[("advertiser", "a7")].features
    assert (f["impressions_1h"], f["engagements_1h"]) == (1, 2)
    agg.apply(conv("c", T + 9, item="i7", adv="a7"), 0)  # known now: nothing replayed twice
    assert updates_by_key(agg)[("advertiser", "a7")].features["engagements_1h"] == 2


def test_features_do_not_depend_on_the_order_events_are_read_in():
    from streams.replay.datasets import load_log

    log = load_log("synthetic", n_users=60, n_items=600, n_advertisers=6, n_impressions=1500, seed=4, days=2)
    t0 = min(e.ts for e in log.events)
    events = [e for e in log.events if e.ts < t0 + 5 * D]  # inside the dedupe horizon
    reference = {k: (u.event_ts, u.features) for k, u in run(events, AggregateSettings())[1].items()}
    rng = random.Random(0)
    for _ in range(3):
        shuffled = events[:]
        rng.shuffle(shuffled)
        got = {k: (u.event_ts, u.features) for k, u in run(shuffled, AggregateSettings())[1].items()}
        assert got == reference


def test_engagement_advertiser_can_be_seeded_from_the_catalog():
    agg = StreamingAggregator(EXACT)
    agg.remember_item_advertiser("i9", "a9")
    agg.apply(eng("e", T, item="i9"), 0)
    assert updates_by_key(agg)[("advertiser", "a9")].features["engagements_1h"] == 1


def test_update_carries_exactly_the_contract_features():
    _, ups = run([imp("i", T), eng("e", T + 1)])
    for (entity, _), u in ups.items():
        assert sorted(u.features) == sorted(STREAM_FEATURES[entity])
    json.dumps([u.to_dict() for u in ups.values()])


# --- smoothing ----------------------------------------------------------------------------------------

def test_beta_smoothed_rates():
    s = AggregateSettings(bucket_seconds=1, ctr_prior_alpha=1, ctr_prior_beta=49, cvr_prior_alpha=2, cvr_prior_beta=8)
    events = [imp(f"i{k}", T + k) for k in range(10)] + [eng(f"e{k}", T + 20 + k) for k in range(5)]
    events.append(conv("c", T + 40))
    _, ups = run(events, s)
    f = ups[("user", "u1")].features
    assert f["ctr_7d"] == pytest.approx((5 + 1) / (10 + 50))
    assert f["cvr_7d"] == pytest.approx((1 + 2) / (5 + 10))
    _, ups = run([conv("c", T)], s)  # no impressions, no engagements: prior means
    assert ups[("user", "u1")].features["ctr_7d"] == pytest.approx(1 / 50)
    assert ups[("user", "u1")].features["cvr_7d"] == pytest.approx(3 / 10)


def test_smoothed_rate_is_capped_at_one():
    assert smoothed_rate(100, 1, 1, 1) == 1.0
    assert smoothed_rate(0, 0, 1, 3) == 0.25


# --- last N engaged items -------------------------------------------------------------------------------

def test_last_engaged_sequence_newest_first_with_repeats_and_bounded():
    s = AggregateSettings(bucket_seconds=1, last_n=3)
    events = [eng("e1", T + 1, item="a", dwell=100), eng("e2", T + 2, item="b", dwell=200),
              eng("e3", T + 3, item="c", dwell=300),
              eng("e4", T + 4, item="a", dwell=400),  # re-engaged from another impression: a second entry
              eng("e5", T + 2.5, item="d", dwell=250),  # out of order: slots between c and b
              eng("e6", T + 0.5, item="z")]  # older than all 3 kept: ignored
    _, ups = run(events, s)
    f = ups[("user", "u1")].features
    assert f["last_engaged_items"] == ["a", "c", "d"]
    assert f["last_engaged_ts"] == [T + 4, T + 3, T + 2.5]
    assert f["last_engaged_dwell_ms"] == [400.0, 300.0, 250.0]


def test_only_the_first_engagement_of_an_impression_and_item_is_in_the_sequence():
    first = Engagement("e1", "imp-x", float(T + 10), "u1", "a", "click", 100)
    later = Engagement("e2", "imp-x", float(T + 20), "u1", "a", "click", 900)  # same impression, item
    other = Engagement("e3", "imp-y", float(T + 30), "u1", "b", "click", 50)
    _, ups = run([first, later, other], AggregateSettings(bucket_seconds=1, last_n=2))
    f = ups[("user", "u1")].features
    assert f["last_engaged_items"] == ["b", "a"] and f["last_engaged_dwell_ms"] == [50.0, 100.0]
    assert f["engagements_1h"] == 3  # the windows count every engagement
    # the earlier one read last still wins, even after the later one was pushed out of the list
    _, ups = run([later, other, Engagement("e4", "imp-z", float(T + 40), "u1", "c", "click", 1), first],
                 AggregateSettings(bucket_seconds=1, last_n=2))
    assert ups[("user", "u1")].features["last_engaged_items"] == ["c", "b"]
    _, ups = run([later, first], AggregateSettings(bucket_seconds=1, last_n=2))
    assert ups[("user", "u1")].features["last_engaged_ts"] == [T + 10]


def test_insert_recent_orders_by_time_item_impression_and_keeps_the_first_of_a_pair():
    recent = [[10.0, "x", 1.0, "i1", "e1"], [5.0, "y", 2.0, "i2", "e2"]]
    insert_recent(recent, [10.0, "x", 3.0, "i1", "e0"], 5)  # same pair, same time, smaller id: replaces
    assert recent == [[10.0, "x", 3.0, "i1", "e0"], [5.0, "y", 2.0, "i2", "e2"]]
    insert_recent(recent, [12.0, "x", 9.0, "i1", "e9"], 5)  # same pair, later: ignored
    insert_recent(recent, [10.0, "x", 4.0, "i0", "e4"], 5)  # same time and item, smaller impression: older
    insert_recent(recent, [10.0, "w", 4.0, "i3", "e5"], 5)  # same time, smaller item: older
    assert [(e[0], e[1], e[3]) for e in recent] == [(10.0, "x", "i1"), (10.0, "x", "i0"), (10.0, "w", "i3"),
                                                    (5.0, "y", "i2")]
    before = [list(e) for e in recent]
    insert_recent(recent, [10.0, "w", 4.0, "i3", "e5"], 5)  # the same entry again
    assert recent == before


def test_items_and_advertisers_have_no_last_engaged_list():
    _, ups = run([imp("i", T), eng("e", T + 1)])
    assert "last_engaged_items" not in ups[("item", "i1")].features
    assert ups[("user", "u1")].features["last_engaged_items"] == ["i1"]


# --- duplicates, lateness, drains -------------------------------------------------------------------------

def test_redelivered_event_counts_once():
    agg, ups = run([imp("x", T), imp("x", T), eng("y", T + 1), eng("y", T + 1), imp("z", T + 2)])
    assert ups[("user", "u1")].features["impressions_1h"] == 2
    assert ups[("user", "u1")].features["engagements_1h"] == 1
    assert agg.stats["duplicates"] == 2
    agg.apply(imp("x", T), 0)  # after the drain too
    assert agg.drain() == [] and agg.stats["duplicates"] == 3


def test_events_older_than_the_dedupe_horizon_are_refused():
    s = AggregateSettings(bucket_seconds=1, dedupe_horizon_seconds=8 * D)
    agg = StreamingAggregator(s)
    agg.apply(imp("a", T), 0)
    agg.drain()
    agg.apply(imp("late", T - 8 * D - 1, item="i2"), 0)
    agg.apply(imp("ok", T - 8 * D + 1, item="i3"), 0)
    assert agg.stats["too_late"] == 1
    assert {u.entity_id for u in agg.drain() if u.entity == "item"} == {"i3"}


def test_seen_ids_are_forgotten_only_behind_the_horizon():
    s = AggregateSettings(bucket_seconds=1, dedupe_horizon_seconds=7 * D, max_seen=15_000)
    agg = StreamingAggregator(s)
    old = [imp(f"old{k}", T + k) for k in range(12_000)]
    new = [imp(f"new{k}", T + 7 * D + 20_000 + k) for k in range(20_000)]
    for e in old + new:
        agg.apply(e, 0)
    agg.drain()
    assert len(agg._seen) <= 2 * 15_000  # pruned when doubled: at most twice max_seen
    assert all(f"new{k}" in agg._seen for k in range(5_000, 20_000))  # the latest ids are kept
    assert not any(f"old{k}" in agg._seen for k in range(12_000))
    before = dict(agg.stats)
    for e in old[:10] + new[-10:]:  # redeliveries: too late, or remembered
        agg.apply(e, 0)
    assert agg.stats["too_late"] == before["too_late"] + 10
    assert agg.stats["duplicates"] == before["duplicates"] + 10
    assert agg.drain() == []


def test_the_seen_set_stays_bounded_by_the_horizon_without_drains():
    """A rebuild applies the whole retained log before its first drain: the seen-set is
    pruned as it grows, to the ids inside the dedupe horizon (and at most ``max_seen``)."""
    from streams.aggregates.windows import SEEN_PRUNE_MIN

    step = 60.0  # one event a minute: 10,080 ids inside a 7-day horizon
    s = AggregateSettings(bucket_seconds=1, dedupe_horizon_seconds=7 * D)
    agg = StreamingAggregator(s)
    in_horizon = int(7 * D / step) + 1
    largest = 0
    for k in range(60_000):  # 41 days of events, never drained
        agg.apply(imp(f"e{k}", T + k * step, item=f"i{k % 50}"), 0)
        largest = max(largest, len(agg._seen))
    assert largest <= 2 * max(in_horizon, SEEN_PRUNE_MIN)
    assert f"e{59_999 - in_horizon + 2}" in agg._seen  # inside the horizon: remembered
    capped = StreamingAggregator(AggregateSettings(bucket_seconds=1, dedupe_horizon_seconds=7 * D, max_seen=5_000))
    for k in range(30_000):
        capped.apply(imp(f"c{k}", T + k, item="i1"), 0)  # all inside the horizon
    assert len(capped._seen) <= 2 * max(5_000, SEEN_PRUNE_MIN)


def test_drain_coalesces_one_update_per_entity_with_max_ingest_time():
    agg = StreamingAggregator(EXACT)
    agg.apply(imp("a", T), 1000)
    agg.apply(imp("b", T + 5), 3000)
    agg.apply(imp("c", T + 2), 2000)
    ups = agg.drain()
    assert sorted((u.entity, u.entity_id) for u in ups) == [("advertiser", "a1"), ("item", "i1"), ("user", "u1")]
    assert all(u.ingest_ms == 3000 and u.event_ts == T + 5 for u in ups)
    assert agg.drain() == []
    agg.apply(imp("d", T + 1, user="u2"), 500)
    ups = updates_by_key(agg)
    assert ups[("item", "i1")].ingest_ms == 500  # since the last drain only
    assert ups[("item", "i1")].event_ts == T + 5 and ups[("item", "i1")].features["impressions_1h"] == 4
    assert ("user", "u1") not in ups


def test_drained_values_equal_features_read_back():
    agg = StreamingAggregator()
    for e in random_events(500, seed=9):
        agg.apply(e, 0)
    for u in agg.drain():
        assert u.features == agg.features(u.entity, u.entity_id)


def test_settings_validation():
    with pytest.raises(ValueError, match="bucket_seconds"):
        AggregateSettings(bucket_seconds=7)
    with pytest.raises(ValueError, match="horizon"):
        AggregateSettings(dedupe_horizon_seconds=D)


# --- state -------------------------------------------------------------------------------------------------

def random_events(n, seed, span=10 * D):
    rng = random.Random(seed)
    out = []
    for k in range(n):
        ts = T + rng.uniform(0, span)
        user, item = f"u{rng.randrange(20)}", f"i{rng.randrange(30)}"
        adv = f"a{int(item[1:]) % 5}"
        kind = rng.random()
        if kind < 0.7:
            out.append(imp(f"i{k}", ts, user, item, adv))
        elif kind < 0.93:
            out.append(eng(f"e{k}", ts, user, item))
        else:
            out.append(conv(f"c{k}", ts, user, item, adv))
    out.sort(key=lambda e: e.ts)
    # local disorder: swap neighbours (out of order by up to a few hours)
    for k in range(0, n - 1, 3):
        out[k], out[k + 1] = out[k + 1], out[k]
    return out


def test_an_overlapping_redelivery_continues_identically():
    """A consumer that restarts from an older offset redelivers events already counted: the
    counts go on as if each event had come once."""
    events = random_events(3000, seed=1)
    straight = StreamingAggregator()
    for e in events:
        straight.apply(e, int(e.ts))
    expected = straight.drain()

    redelivered = StreamingAggregator()
    for e in events[:1700]:
        redelivered.apply(e, int(e.ts))
    for e in events[1500:]:  # overlapping redelivery of 200 events
        redelivered.apply(e, int(e.ts))
    assert redelivered.drain() == expected
    assert redelivered.stats["duplicates"] == 200


def test_engagements_parked_for_an_unknown_advertiser_are_bounded_per_item():
    from streams.aggregates.windows import MAX_PARKED_PER_ITEM

    agg = StreamingAggregator(EXACT)
    extra = 5
    for k in range(MAX_PARKED_PER_ITEM + extra):
        agg.apply(eng(f"e{k}", T + k % 100, item="i7"), 0)
    assert agg.stats["parked_dropped"] == extra
    agg.apply(imp("i", T, item="i7", adv="a7"), 0)
    f = updates_by_key(agg)[("advertiser", "a7")].features
    assert (f["impressions_1h"], f["engagements_1h"]) == (1, MAX_PARKED_PER_ITEM)


def brute_force(events, settings):
    """Recount every entity's windows straight from the event list."""
    res = settings.bucket_seconds
    advertiser_of = {}
    rows = []  # (entity, key, ts, kind)
    for e in events:
        if isinstance(e, Engagement):
            adv = advertiser_of.get(e.item_id)
            kind = "engagements"
        else:
            adv = e.advertiser_id
            if isinstance(e, Impression) or e.item_id not in advertiser_of:
                advertiser_of[e.item_id] = adv
            kind = "impressions" if isinstance(e, Impression) else "conversions"
        rows += [("user", e.user_id, e.ts, kind), ("item", e.item_id, e.ts, kind)]
        if adv:
            rows.append(("advertiser", adv, e.ts, kind))
    newest = {}
    for entity, key, ts, _ in rows:
        newest[(entity, key)] = max(ts, newest.get((entity, key), ts))
    out = {}
    for (entity, key), t in newest.items():
        counts = {}
        for w, seconds in (("1h", H), ("1d", D), ("7d", 7 * D)):
            for what in ("impressions", "engagements", "conversions"):
                counts[f"{what}_{w}"] = sum(
                    1 for en, k, ts, kind in rows
                    if en == entity and k == key and kind == what and int(ts // res) > int(t // res) - seconds // res)
        out[(entity, key)] = (t, counts)
    return out


@pytest.mark.parametrize("bucket_seconds,drain_every,span_days", [
    (1, 97, 10), (300, 97, 10), (3600, 97, 10), (300, 1, 10), (300, 700, 60), (1, 1499, 40)])
def test_windows_match_a_brute_force_recount(bucket_seconds, drain_every, span_days):
    s = AggregateSettings(bucket_seconds=bucket_seconds)
    events = random_events(1500, seed=bucket_seconds + drain_every, span=span_days * D)
    agg = StreamingAggregator(s)
    got = {}
    for k, e in enumerate(events):
        agg.apply(e, 0)
        if k % drain_every == 0:  # drain now and then: later drains must still be right
            got.update(updates_by_key(agg))
    got.update(updates_by_key(agg))
    expected = brute_force(events, s)
    assert set(got) == set(expected)
    for key, (t, counts) in expected.items():
        assert got[key].event_ts == t
        assert {k: got[key].features[k] for k in counts} == counts, key


def test_evicting_inactive_entities_changes_no_result():
    early = random_events(400, seed=5, span=D)
    late = [imp("far", T + 40 * D, "u1", "i1", "a1")]
    comeback = [imp("back", T + 40 * D + 10, "u7", "i7", "a2"), eng("back-e", T + 40 * D + 11, "u7", "i3")]
    kept, evicting = StreamingAggregator(), StreamingAggregator()
    for agg in (kept, evicting):
        for e in early:
            agg.apply(e, 0)
        agg.drain()
        for e in late:
            agg.apply(e, 0)
    n = evicting.evict_inactive()
    assert n > 0 and len(evicting._state["user"]) < len(kept._state["user"])
    assert "u1" in evicting._state["user"]  # touched, not drained yet: kept
    for agg in (kept, evicting):
        for e in comeback:
            agg.apply(e, 0)
    assert kept.drain() == evicting.drain()
