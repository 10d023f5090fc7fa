"""The label rules as pure functions: windows, late data, duplicates, out-of-order, corrections,
attribution fallback. No broker: `LabelJoiner` is pure."""

from __future__ import annotations

import math
import random

import pytest

from convcg.contract import Conversion, Engagement, Impression
from streams.label_join.joiner import LabelJoiner, compute_labels
from streams.label_join.rules import LabelRules, engagement_weight, last_touch

T0 = 1_700_000_000.0
H = 3600.0
RULES = LabelRules(negative_window_s=H, attribution_window_s=30 * 86400, allowed_lateness_s=60)


def imp(i, ts, user="u1", item="i1", adv="a1"):
    return Impression(f"e-imp-{i}", f"imp{i}", ts, user, item, adv, "home", 0)


def eng(i, ts, dwell=5000, user="u1", item="i1", eid=None):
    return Engagement(eid or f"e-eng-{i}-{ts}", f"imp{i}", ts, user, item, "click", dwell)


def conv(eid, ts, imp_id=None, user="u1", item="i1", value=10.0):
    return Conversion(eid, ts, user, item, "a1", "checkout", value, imp_id)


def kinds(labels):
    return sorted((l.impression_id, l.kind) for l in labels)


def run(events, rules=RULES):
    return compute_labels(events, rules)


# --- pure rules --------------------------------------------------------------------------


def test_engagement_weight_grows_with_dwell_and_is_capped():
    w = [engagement_weight(ms, 5.0) for ms in (0, 1000, 10_000, 30_000, 10**9)]
    assert w[0] == 1.0
    assert w == sorted(w) and len(set(w)) == 5
    assert w[-1] == 5.0
    assert engagement_weight(-5, 5.0) == 1.0
    assert engagement_weight(1000, 5.0) == pytest.approx(1 + math.log1p(1.0))


def test_last_touch_picks_latest_engagement_inside_window():
    cands = [(T0 + 10, T0, "a"), (T0 + 50, T0 + 40, "b"), (T0 + 500, T0 + 400, "c")]
    assert last_touch(cands, T0 + 100, RULES) == "b"          # c engaged after the conversion
    assert last_touch(cands, T0 + 1000, RULES) == "c"
    assert last_touch(cands, T0 + 5, RULES) is None
    far = T0 + 400 + RULES.attribution_window_s + 1
    assert last_touch(cands, far, RULES) is None              # every impression's window closed


# --- the join ----------------------------------------------------------------------------


def test_engaged_impression_gives_one_engagement_label_with_weight():
    labels = run([imp(1, T0), eng(1, T0 + 10, dwell=30_000), eng(1, T0 + 20, dwell=1, eid="second")])
    assert kinds(labels) == [("imp1", "engagement")]
    (l,) = labels
    assert l.engagement == 1 and l.engagement_weight == pytest.approx(engagement_weight(30_000, 5.0))
    assert l.label_ts == T0 + 10 and l.impression_ts == T0 and l.label_id == "imp1:engagement"


def test_unengaged_impression_is_negative_at_deadline_not_before():
    j = LabelJoiner(RULES)
    j.add(imp(1, T0))
    j.advance(T0 + H - 1)
    assert j.drain().labels == []
    j.advance(T0 + H)
    (l,) = j.drain().labels
    assert l.kind == "negative" and l.label_ts == T0 + H and l.engagement == 0


def test_engagement_exactly_at_deadline_counts_and_after_deadline_is_late():
    assert kinds(run([imp(1, T0), eng(1, T0 + H)])) == [("imp1", "engagement")]
    # engaged after the negative window: the negative stands, the engagement is still labelled
    assert kinds(run([imp(1, T0), eng(1, T0 + H + 1)])) == [("imp1", "engagement"), ("imp1", "negative")]


def test_conversion_by_click_id_and_correction_of_fake_negative():
    labels = run([imp(1, T0), eng(1, T0 + 5), conv("c1", T0 + 2 * H, "imp1"),
                  imp(2, T0 + 10, item="i2"), conv("c2", T0 + 5 * H, "imp2", item="i2", value=3.0)])
    assert kinds(labels) == [("imp1", "conversion"), ("imp1", "engagement"),
                             ("imp2", "correction"), ("imp2", "negative")]
    corr = next(l for l in labels if l.kind == "correction")
    assert corr.conversion == 1 and corr.conversion_value == 3.0 and corr.engagement == 0
    assert corr.label_id == "imp2:correction:c2"


def test_conversion_before_negative_deadline_prevents_negative():
    labels = run([imp(1, T0), conv("c1", T0 + 60, "imp1")])
    assert kinds(labels) == [("imp1", "conversion")]


def test_attribution_fallback_is_last_engaged_touch_of_user_and_item():
    events = [imp(1, T0), eng(1, T0 + 5), imp(2, T0 + 100), eng(2, T0 + 110),
              imp(3, T0 + 200),  # not engaged: not a touch
              imp(4, T0 + 300, item="other"), eng(4, T0 + 305, item="other"),
              conv("c1", T0 + 1000)]
    labels = run(events)
    conv_labels = [l for l in labels if l.kind == "conversion"]
    assert [l.impression_id for l in conv_labels] == ["imp2"]


def test_conversion_without_any_touch_or_past_window_is_dropped_with_reason():
    j = LabelJoiner(RULES)
    late = T0 + RULES.attribution_window_s + 10
    for e in [imp(1, T0), eng(1, T0 + 5), conv("none", T0 + 10, user="u2"),
              conv("late-id", late, "imp1"), conv("late-fallback", late + 1)]:
        j.add(e)
    j.advance(math.inf)
    out = j.drain()
    reasons = sorted((e.event_id, r) for e, r in out.dropped)
    assert reasons == [("late-fallback", "no_engaged_impression_in_attribution_window"),
                       ("late-id", "impression_unknown_or_past_attribution_window"),
                       ("none", "no_engaged_impression_in_attribution_window")]
    assert j.counters["dropped:no_engaged_impression_in_attribution_window"] == 2
    assert "imp1" not in j.impressions  # forgotten once its attribution window closed


def test_conversion_on_last_second_of_window_counts():
    edge = T0 + RULES.attribution_window_s
    labels = run([imp(1, T0), eng(1, T0 + 1), conv("c", edge, "imp1")])
    assert ("imp1", "conversion") in kinds(labels)


def test_duplicates_change_nothing():
    base = [imp(1, T0), eng(1, T0 + 5), conv("c1", T0 + 50, "imp1"), imp(2, T0 + 9, item="i2")]
    doubled = base + [imp(1, T0), eng(1, T0 + 5), conv("c1", T0 + 50, "imp1"), imp(2, T0 + 9, item="i2")]
    assert kinds(run(doubled)) == kinds(run(base))
    # redelivery after the original was applied (not in the buffer any more)
    j = LabelJoiner(RULES)
    for e in base:
        j.add(e)
    j.advance(T0 + 100)
    first = j.drain().labels
    for e in base:
        j.add(e)
    j.advance(math.inf)
    assert [l.kind for l in j.drain().labels] == ["negative"]  # only imp2's pending negative
    assert kinds(first) == [("imp1", "conversion"), ("imp1", "engagement")]


def test_out_of_order_within_lateness_gives_same_labels():
    events = [imp(1, T0), eng(1, T0 + 5), imp(2, T0 + 6, item="i2"), conv("c", T0 + 7)]
    expected = kinds(run(events))
    for seed in range(20):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        j = LabelJoiner(RULES)
        for e in shuffled:
            j.add(e)
            j.advance(max(x.ts for x in shuffled[: shuffled.index(e) + 1]) - RULES.allowed_lateness_s)
        j.advance(math.inf)
        assert kinds(j.drain().labels) == expected


def test_engagement_before_its_impression_waits_as_orphan():
    j = LabelJoiner(RULES)
    j.add(eng(1, T0 + 5), token="t-eng")
    j.advance(T0 + 100)  # the impression is later than the lateness allows
    assert j.drain().released == []  # held: not acked while it waits
    j.add(imp(1, T0), token="t-imp")
    j.advance(T0 + 200)
    out = j.drain()
    assert kinds(out.labels) == [("imp1", "engagement")]
    assert sorted(out.released) == ["t-eng", "t-imp"]
    assert j.counters["late_events"] == 1


def test_orphan_engagement_expires_with_reason():
    j = LabelJoiner(RULES)
    j.add(eng(9, T0), token="t")
    j.advance(T0 + RULES.orphan_ttl_s + 1)
    out = j.drain()
    assert [r for _, r in out.dropped] == ["engagement_for_unknown_impression"] and out.released == ["t"]


def test_mismatched_engagement_is_dropped():
    j = LabelJoiner(RULES)
    j.add(imp(1, T0))
    j.add(eng(1, T0 + 5, user="someone-else"))
    j.advance(T0 + 10)
    assert [r for _, r in j.drain().dropped] == ["engagement_does_not_match_impression"]


def test_release_only_after_watermark_and_tokens_follow():
    j = LabelJoiner(RULES)
    j.add(imp(1, T0), token=1)
    j.add(imp(2, T0 + 100), token=2)
    j.advance(T0 + 50)
    assert j.drain().released == [1]
    assert j.buffered == 1
    j.advance(T0 + 40)  # never backwards
    assert j.watermark == T0 + 50


def test_restore_from_persisted_states_continues_identically():
    events = [imp(1, T0), eng(1, T0 + 5), imp(2, T0 + 10, item="i2"), imp(3, T0 + 20, item="i3"),
              conv("c1", T0 + 2 * H, "imp2", item="i2"), conv("c2", T0 + 3 * H, item="i1")]
    reference = kinds(run(events))
    j = LabelJoiner(RULES)
    for e in events[:4]:
        j.add(e)
    j.advance(T0 + 30)
    out = j.drain()
    saved = {k: (None if v is None else v.to_dict()) for k, v in out.changed.items()}
    j2 = LabelJoiner(RULES)
    j2.restore([v for v in saved.values() if v is not None], watermark=j.watermark)
    for e in events[4:]:
        j2.add(e)
    j2.advance(math.inf)
    assert sorted(kinds(out.labels) + kinds(j2.drain().labels)) == reference


def _random_log(seed: int, n: int, step: float, users: int, items: int, engaged: float, engage_within: float,
                converted: float, convert_within: float, by_click_id: float) -> list:
    """A seeded log of ``n`` impressions, ``step`` seconds apart, some engaged, some converted
    (``by_click_id`` of the conversions name their impression), in no particular order."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ts = T0 + i * step
        u, it = f"u{rng.randrange(users)}", f"i{rng.randrange(items)}"
        events.append(imp(i, ts, user=u, item=it))
        if rng.random() < engaged:
            events.append(eng(i, ts + rng.uniform(1, engage_within), user=u, item=it))
        if rng.random() < converted:
            events.append(conv(f"c{i}", ts + rng.uniform(10, convert_within),
                               f"imp{i}" if rng.random() < by_click_id else None, user=u, item=it))
    return events


def test_label_ids_unique_over_random_logs():
    events = _random_log(7, 300, 30, users=5, items=8, engaged=0.4, engage_within=2 * H, converted=0.2,
                         convert_within=3 * 86400, by_click_id=0.5)
    labels = run(sorted(events, key=lambda e: e.ts))
    ids = [l.label_id for l in labels]
    assert len(ids) == len(set(ids))
    per_imp = {}
    for l in labels:
        per_imp.setdefault(l.impression_id, []).append(l.kind)
    assert len(per_imp) == 300  # every impression gets a decision
    for ks in per_imp.values():
        assert ks.count("engagement") <= 1 and ks.count("negative") <= 1
        if "correction" in ks:
            assert "negative" in ks


def test_buffer_merge_keeps_the_buffer_sorted_for_any_arrival_order():
    from streams.label_join.joiner import _merge_sorted

    rng = random.Random(3)
    for _ in range(200):
        buffer = sorted((rng.uniform(0, 100), rng.randrange(3), i) for i in range(rng.randrange(0, 50)))
        arrived = [(rng.uniform(-10, 150), rng.randrange(3), 1000 + i) for i in range(rng.randrange(1, 30))]
        expected = sorted(buffer + arrived)
        _merge_sorted(buffer, arrived)
        assert buffer == expected


def test_batched_arrivals_out_of_order_give_the_offline_labels():
    """Events in batches of random size, shuffled within lateness, watermark advanced per batch:
    the labels equal the offline run's over the time-ordered log."""
    rng = random.Random(11)
    events = _random_log(11, 400, 7, users=6, items=9, engaged=0.5, engage_within=40, converted=0.2,
                         convert_within=2 * H, by_click_id=0.0)
    ordered = sorted(events, key=lambda e: e.ts)
    expected = sorted((l.label_id, l.kind) for l in run(ordered))
    arrival = sorted(ordered, key=lambda e: e.ts + rng.uniform(0, RULES.allowed_lateness_s / 2))
    j, newest, k = LabelJoiner(RULES), -math.inf, 0
    while k < len(arrival):
        batch = arrival[k:k + rng.randrange(1, 40)]
        k += len(batch)
        for e in batch:
            j.add(e)
            newest = max(newest, e.ts)
        j.advance(newest - RULES.allowed_lateness_s)
    j.advance(math.inf)
    assert sorted((l.label_id, l.kind) for l in j.drain().labels) == expected
    assert len(expected) > 400
