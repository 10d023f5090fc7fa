"""bench/reliability/soak.py's pure parts (bench/rigs/soak_checks.py): labels must match, features must
equal an undisturbed computation, retrieval must have served (issue 13, defect 6: a run in which
retrieval answered 0 of 7,315 queries passed), every component must have been killed."""

from __future__ import annotations

import random
from collections import Counter

from bench.rigs.soak_checks import (
    ANSWERED,
    DOWN,
    FAILED,
    NOT_SERVING,
    FeatureComparison,
    Query,
    RetrievalCounts,
    SoakOutcome,
    compare_features,
    count_queries,
    kill_plan,
    soak_verdict,
    undisturbed_features,
)
from streams.replay.datasets import load_log

COMPONENTS = ["aggregates-1", "aggregates-2", "refresher", "retrieval", "sink", "trainer", "worker"]
SAME = {("user", "u1"): (100.0, {"impressions_1h": 1})}
SAME_FEATURES = compare_features(SAME, SAME, [("user", "u1")], ts_tolerance_s=1e-6)


def verdict(lost: int, unexpected: int, retrieval: RetrievalCounts, features: FeatureComparison = SAME_FEATURES,
            kills: Counter | None = None, **kw) -> list[str]:
    """The verdict of a soak that killed every component once unless told otherwise."""
    return soak_verdict(SoakOutcome(lost, unexpected, retrieval, features, COMPONENTS,
                                    Counter(COMPONENTS) if kills is None else kills, **kw))


def queries(*outcomes: str, start: float = 0.0) -> list[Query]:
    return [Query(start + i, o, "boom" if o == FAILED else "") for i, o in enumerate(outcomes)]


def test_nothing_served_fails_even_with_no_failure():
    r = count_queries(queries(*[NOT_SERVING] * 7000, *[DOWN] * 315), kills=[])
    assert (r.answered, r.not_serving, r.down, r.failed_while_up) == (0, 7000, 315, [])
    assert r.while_serving == 0 and r.served_share == 0.0
    why = verdict(lost=0, unexpected=0, retrieval=r)
    assert why == ["retrieval answered no query"]
    assert verdict(0, 0, RetrievalCounts()) == ["retrieval answered no query"]


def test_queries_before_the_first_model_and_while_down_do_not_count_against_it():
    # 503s until the first model, answers, a kill (down, then 503s while it reloads), answers
    r = count_queries(queries(NOT_SERVING, NOT_SERVING, ANSWERED, ANSWERED, DOWN, DOWN, NOT_SERVING, ANSWERED),
                      kills=[])
    assert (r.answered, r.while_serving, r.down, r.not_serving) == (3, 3, 2, 3)
    assert r.served_share == 1.0
    assert verdict(0, 0, r) == []


def test_not_serving_while_a_model_was_loaded_counts_against_the_share():
    r = count_queries(queries(ANSWERED, *[ANSWERED, NOT_SERVING] * 10), kills=[])
    assert (r.answered, r.while_serving) == (11, 21)
    why = verdict(0, 0, r)
    assert len(why) == 1 and "52.4%" in why[0] and "< 95%" in why[0]
    ok = count_queries(queries(*[ANSWERED] * 95, *[NOT_SERVING] * 5), kills=[])
    assert ok.served_share == 0.95 and verdict(0, 0, ok) == []


def test_failures_cut_by_a_kill_are_excluded_and_other_failures_fail():
    qs = queries(ANSWERED, FAILED, DOWN, ANSWERED, FAILED)  # at t = 0..4; the service was killed at 1.5
    r = count_queries(qs, kills=[1.5])
    assert (r.cut_in_flight, r.failed_while_up, r.answered, r.while_serving) == (1, ["boom"], 2, 3)
    assert verdict(0, 0, r) == ["1 retrieval queries failed while it was up",
                                     "retrieval answered 66.7% of the queries sent while it was up with a model "
                                     "loaded (< 95%)"]


def test_label_losses_fail_on_their_own():
    served = count_queries(queries(*[ANSWERED] * 10), kills=[])
    assert verdict(0, 0, served) == []
    assert verdict(2, 1, served) == ["2 labels lost", "1 unexpected labels"]


def test_queries_are_tallied_in_time_order():
    qs = [Query(3.0, NOT_SERVING), Query(1.0, ANSWERED), Query(2.0, DOWN)]
    r = count_queries(qs, kills=[])
    assert (r.answered, r.while_serving, r.not_serving) == (1, 1, 1)


def test_the_kill_plan_kills_every_component_inside_the_budget_in_rounds():
    for seed in range(20):
        plan = kill_plan(COMPONENTS, budget_s=420.0, rng=random.Random(seed))
        times, names = [t for t, _ in plan], [n for _, n in plan]
        assert len(plan) == 420 // 25
        assert set(names[:len(COMPONENTS)]) == set(COMPONENTS)  # the first round kills each once
        assert times == sorted(times) and 0 < times[0] and times[-1] < 420.0
        assert min(b - a for a, b in zip(times, times[1:])) > 0.4 * 420.0 / len(plan)  # never bunched
    short = kill_plan(COMPONENTS, budget_s=30.0, rng=random.Random(0))  # shorter than one gap each
    assert sorted(n for _, n in short) == sorted(COMPONENTS) and short[-1][0] < 30.0


def test_a_component_never_killed_or_exited_by_itself_fails():
    served = count_queries(queries(*[ANSWERED] * 10), kills=[])
    kills = Counter({n: 1 for n in COMPONENTS if n != "sink"})
    assert verdict(0, 0, served, kills=kills) == ["never killed: sink"]
    assert verdict(0, 0, served, exited=["trainer (exit 1)"]) == ["exited by themselves: trainer (exit 1)"]
    assert verdict(0, 0, served, features_settled=False) == ["the aggregates and the sink never consumed everything"]


def _log_features():
    log = load_log("synthetic", n_users=40, n_items=30, n_advertisers=4, n_impressions=400, seed=3, days=2)
    return undisturbed_features(log.events)


def test_features_identical_to_the_reference_pass_and_every_entity_kind_is_compared():
    expected = _log_features()
    assert {e for e, _ in expected} == {"user", "item", "advertiser"}
    got = {k: (ts + 4e-7, dict(f)) for k, (ts, f) in expected.items()}  # the store keeps microseconds
    c = compare_features(expected, got, [*expected, ("item", "never-shown")], ts_tolerance_s=1e-6)
    assert c.identical and c.mismatches == [] and c.entities == len(expected) and c.looked_up_absent == 1
    assert c.values == sum(1 + len(f) for _, f in expected.values())
    assert verdict(0, 0, count_queries(queries(ANSWERED), kills=[]), features=c) == []


def test_a_changed_missing_or_invented_feature_value_fails():
    expected = _log_features()
    user = next(k for k in expected if k[0] == "user" and expected[k][1]["last_engaged_items"])
    item = next(k for k in expected if k[0] == "item")
    adv = next(k for k in expected if k[0] == "advertiser")
    got = {k: (ts, dict(f)) for k, (ts, f) in expected.items()}
    got[user][1]["last_engaged_items"] = list(reversed(got[user][1]["last_engaged_items"])) + ["x"]
    got[item][1]["impressions_7d"] += 1
    got[adv][1]["ctr_7d"] *= 1 + 1e-6  # a float off by more than float precision
    missing = next(k for k in expected if k[0] == "user" and k != user)
    del got[missing]
    got[("item", "invented")] = (1.0, {"impressions_1h": 1})
    ts_off = next(k for k in expected if k[0] == "item" and k != item)
    got[ts_off] = (got[ts_off][0] + 1.0, got[ts_off][1])
    c = compare_features(expected, got, list(expected), ts_tolerance_s=1e-6)
    assert not c.identical
    assert sorted((m.entity, m.entity_id, m.what) for m in c.mismatches) == sorted([
        (*user, "last_engaged_items"), (*item, "impressions_7d"), (*adv, "ctr_7d"), (*missing, "missing"),
        ("item", "invented", "unexpected"), (*ts_off, "event_ts")])
    why = verdict(0, 0, count_queries(queries(ANSWERED), kills=[]), features=c)
    assert why == ["6 feature values differ from the undisturbed run"]


def test_no_entity_compared_fails():
    c = compare_features({}, {}, [], ts_tolerance_s=1e-6)
    assert not c.identical
    assert verdict(0, 0, count_queries(queries(ANSWERED), kills=[]), features=c) == ["no feature entity compared"]


def test_the_dedupe_horizon_is_set_to_cover_the_replayed_log(monkeypatch):
    from bench.rigs.soak_checks import (
        HORIZON_ENV,
        cover_the_log_with_the_dedupe_horizon,
    )
    from convcg.contract import Impression
    from streams.aggregates.settings import AggregateSettings

    # recorded first, so the value the function writes is undone after the test (a bare
    # delenv of an unset variable records nothing, and the horizon leaked into later tests)
    monkeypatch.setenv(HORIZON_ENV, "")
    monkeypatch.delenv(HORIZON_ENV)
    events = [Impression(f"e{n}", f"i{n}", n * 86_400.0 * 10, "u", "a", "adv", "home", 1) for n in range(5)]
    line = cover_the_log_with_the_dedupe_horizon(events)  # 40 days of event time
    assert "41.0 d" in line and "40.0 d" in line
    # the reference aggregator (and every component started from here) reads the same setting
    assert AggregateSettings().dedupe_horizon_seconds == 41 * 86_400.0
