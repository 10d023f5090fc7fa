"""Pure parts of bench/experiments/refresh_interval.py (bench/experiments/refresh_schedule.py):
the stream schedule, the data each refresh trains on, and the summary statistics (the experiment
itself is a bench, not a test)."""

import math

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def exp():
    from bench.experiments import refresh_schedule

    return refresh_schedule


def labels(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"label_id": [f"l{i}" for i in range(start, start + n)],
                         "label_ts": np.arange(start, start + n, dtype=float)})


def test_parse_intervals(exp):
    assert exp.parse_intervals("1000, 5_000,never,20000") == [1000, 5000, None, 20000]
    assert exp.parse_intervals("NEVER") == [None]
    for bad in ("", "0", "-5", "1k", "1000,1000", "never,never"):
        with pytest.raises(ValueError):
            exp.parse_intervals(bad)
    assert exp.interval_name(None) == "never" and exp.interval_name(20000) == "20,000"


def test_split_initial_orders_by_label_time(exp):
    frame = pd.DataFrame({"label_id": list("abcdef"), "label_ts": [5.0, 1.0, 3.0, 3.0, 0.0, 9.0]})
    initial, stream = exp.split_initial(frame, 0.5)
    assert initial["label_id"].tolist() == ["e", "b", "c"]  # ties keep their input order
    assert stream["label_id"].tolist() == ["d", "a", "f"]
    assert stream.index.tolist() == [0, 1, 2]
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            exp.split_initial(frame, bad)


def test_refresh_points_and_evaluation_slices(exp):
    assert exp.refresh_points(10_500, 1000) == list(range(1000, 10_001, 1000))
    assert exp.refresh_points(10_000, 5000) == [5000, 10_000]  # refresh on the last label too
    assert exp.refresh_points(3000, 5000) == []
    assert exp.refresh_points(10_000, None) == []
    tiles = exp.evaluation_slices(5000, 1000, 1000)
    assert tiles == [(0, 1000), (1000, 2000), (2000, 3000), (3000, 4000), (4000, 5000)]
    assert exp.evaluation_slices(4500, 1000, 1000)[-1] == (3000, 4000)  # short tail dropped
    assert exp.evaluation_slices(3000, 500, 1000) == [(0, 1000), (500, 1500), (1000, 2000), (1500, 2500),
                                                      (2000, 3000)]
    assert exp.evaluation_slices(500, 1000, 1000) == []
    with pytest.raises(ValueError):
        exp.evaluation_slices(5000, 0, 1000)


def test_schedule_evaluates_the_model_refreshed_on_every_earlier_label(exp):
    stream_len, intervals = 23_000, [1000, 5000, 20000, None]
    plan = exp.schedule(stream_len, intervals, every=1000, window=1000)
    assert [(s.position, s.order) for s in plan] == sorted((s.position, s.order) for s in plan)
    refreshes = [s for s in plan if s.is_refresh]
    assert len(refreshes) == 23 + 4 + 1
    assert sum(not s.is_refresh for s in plan) == 23
    last = {n: 0 for n in intervals}
    for step in plan:  # walk it as the experiment does
        if step.is_refresh:
            assert step.interval is not None and step.position > last[step.interval]
            last[step.interval] = step.position
        else:
            assert step.end == step.position + 1000
            for n in intervals:
                assert step.position - last[n] == exp.model_age(step.position, n)
                if n is not None:
                    assert step.position - last[n] < n


def test_model_age(exp):
    assert exp.model_age(0, 1000) == 0
    assert exp.model_age(12_345, 5000) == 2345
    assert exp.model_age(12_345, None) == 12_345


def test_refresh_inputs_split_like_the_trainer_service(exp):
    initial, stream = labels(100), labels(50, start=100)
    carried = stream.iloc[15:20]  # held out by the previous step (refresh at 20)
    fresh, older = exp.refresh_inputs(initial, stream, carried, last_refresh=20, position=30)
    assert fresh["label_id"].tolist() == [f"l{i}" for i in list(range(115, 120)) + list(range(120, 130))]
    assert len(older) == 100 + 15 and not set(older["label_id"]) & set(fresh["label_id"])
    # together they are exactly what is known at the refresh, nothing lost or doubled
    assert sorted(pd.concat([fresh, older])["label_id"]) == sorted(f"l{i}" for i in range(130))
    fresh, older = exp.refresh_inputs(initial, stream, pd.DataFrame(), last_refresh=0, position=10)
    assert len(fresh) == 10 and len(older) == 100
    with pytest.raises(ValueError):
        exp.refresh_inputs(initial, stream, carried, last_refresh=30, position=30)
    with pytest.raises(ValueError):
        exp.refresh_inputs(initial, stream, carried, last_refresh=20, position=51)


def test_summarize_mean_pooled_and_paired_difference(exp):
    E = exp.Evaluation
    arm = [E(0, 0.5, 10), E(1000, 0.2, 30), E(2000, math.nan, 0), E(3000, 0.8, 10)]
    never = [E(0, 0.4, 10), E(1000, 0.2, 30), E(2000, math.nan, 0), E(3000, 0.5, 10)]
    s = exp.summarize("1,000", arm, never)
    assert s.points == 4
    assert s.mean_recall == pytest.approx(0.5)
    assert s.stderr == pytest.approx(np.std([0.5, 0.2, 0.8], ddof=1) / math.sqrt(3))
    assert s.pooled_recall == pytest.approx((5 + 6 + 8) / 50)
    assert s.diff_vs_never == pytest.approx((0.1 + 0.0 + 0.3) / 3)
    assert s.diff_stderr == pytest.approx(np.std([0.1, 0.0, 0.3], ddof=1) / math.sqrt(3))
    alone = exp.summarize("never", never, None)
    assert math.isnan(alone.diff_vs_never) and alone.mean_recall == pytest.approx(1.1 / 3)
    with pytest.raises(ValueError):
        exp.summarize("x", arm, never[:3])


def test_output_name():
    from bench.experiments.refresh_interval import output_name

    assert output_name("refresh_interval.md", "") == "refresh_interval.md"
    assert output_name("refresh_interval.png", "_nogate") == "refresh_interval_nogate.png"


def test_gain_by_model_age(exp):
    E = exp.Evaluation
    # interval 4000, evaluations every 1000: ages 0, 1000, 2000, 3000, 0, ...
    arm = [E(p, 0.5 + (p % 4000) / 10_000, 10) for p in range(0, 8000, 1000)]
    never = [E(p, 0.5, 10) for p in range(0, 8000, 1000)]
    arm[1] = E(1000, 0.9, 10)  # before the first refresh at 4000: left out
    rows = exp.gain_by_model_age(arm, never, 4000, buckets=2)
    assert [(lo, hi, n) for lo, hi, _, _, n in rows] == [(0, 2000, 2), (2000, 4000, 2)]
    assert rows[0][2] == pytest.approx(0.05) and rows[1][2] == pytest.approx(0.25)
    assert rows[0][3] == pytest.approx(np.std([0.0, 0.1], ddof=1) / math.sqrt(2))
    assert all(n == 0 for *_, n in exp.gain_by_model_age(arm, never, 40_000, buckets=4))
