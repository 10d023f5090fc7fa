"""bench/soak.py's verdict: labels must match and retrieval must have served (issue 13, defect 6:
a run in which retrieval answered 0 of 7,315 queries passed)."""

from __future__ import annotations

from bench.soak import (
    ANSWERED,
    DOWN,
    FAILED,
    NOT_SERVING,
    Query,
    RetrievalCounts,
    count_queries,
    soak_verdict,
)


def queries(*outcomes: str, start: float = 0.0) -> list[Query]:
    return [Query(start + i, o, "boom" if o == FAILED else "") for i, o in enumerate(outcomes)]


def test_nothing_served_fails_even_with_no_failure():
    r = count_queries(queries(*[NOT_SERVING] * 7000, *[DOWN] * 315), kills=[])
    assert (r.answered, r.not_serving, r.down, r.failed_while_up) == (0, 7000, 315, [])
    assert r.while_serving == 0 and r.served_share == 0.0
    why = soak_verdict(lost=0, unexpected=0, retrieval=r)
    assert why == ["retrieval answered no query"]
    assert soak_verdict(0, 0, RetrievalCounts()) == ["retrieval answered no query"]


def test_queries_before_the_first_model_and_while_down_do_not_count_against_it():
    # 503s until the first model, answers, a kill (down, then 503s while it reloads), answers
    r = count_queries(queries(NOT_SERVING, NOT_SERVING, ANSWERED, ANSWERED, DOWN, DOWN, NOT_SERVING, ANSWERED),
                      kills=[])
    assert (r.answered, r.while_serving, r.down, r.not_serving) == (3, 3, 2, 3)
    assert r.served_share == 1.0
    assert soak_verdict(0, 0, r) == []


def test_not_serving_while_a_model_was_loaded_counts_against_the_share():
    r = count_queries(queries(ANSWERED, *[ANSWERED, NOT_SERVING] * 10), kills=[])
    assert (r.answered, r.while_serving) == (11, 21)
    why = soak_verdict(0, 0, r)
    assert len(why) == 1 and "52.4%" in why[0] and "< 95%" in why[0]
    ok = count_queries(queries(*[ANSWERED] * 95, *[NOT_SERVING] * 5), kills=[])
    assert ok.served_share == 0.95 and soak_verdict(0, 0, ok) == []


def test_failures_cut_by_a_kill_are_excluded_and_other_failures_fail():
    qs = queries(ANSWERED, FAILED, DOWN, ANSWERED, FAILED)  # at t = 0..4; the service was killed at 1.5
    r = count_queries(qs, kills=[1.5])
    assert (r.cut_in_flight, r.failed_while_up, r.answered, r.while_serving) == (1, ["boom"], 2, 3)
    assert soak_verdict(0, 0, r) == ["1 retrieval queries failed while it was up",
                                     "retrieval answered 66.7% of the queries sent while it was up with a model "
                                     "loaded (< 95%)"]


def test_label_losses_fail_on_their_own():
    served = count_queries(queries(*[ANSWERED] * 10), kills=[])
    assert soak_verdict(0, 0, served) == []
    assert soak_verdict(2, 1, served) == ["2 labels lost", "1 unexpected labels"]


def test_queries_are_tallied_in_time_order():
    qs = [Query(3.0, NOT_SERVING), Query(1.0, ANSWERED), Query(2.0, DOWN)]
    r = count_queries(qs, kills=[])
    assert (r.answered, r.while_serving, r.not_serving) == (1, 1, 1)
