"""The paired bootstrap over users (``training.evaluation.paired_bootstrap``)."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.paired_bootstrap import (
    REPRODUCED,
    REVERSED,
    WITHIN_NOISE,
    paired_bootstrap,
)


def test_a_clear_gain_is_reproduced_and_its_mirror_reversed():
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(300), 10)
    b = (rng.random(3000) < 0.5).astype(float)
    a = np.maximum(b, (rng.random(3000) < 0.2))  # A finds all B finds, and more
    gain = paired_bootstrap(a, b, users)
    assert gain.verdict == REPRODUCED and gain.low > 0
    assert gain.difference == pytest.approx(a.mean() - b.mean())
    assert paired_bootstrap(b, a, users).verdict == REVERSED


def test_identical_models_are_within_noise_with_a_zero_width_interval():
    users = np.repeat(np.arange(50), 4)
    hits = (np.arange(200) % 3 == 0).astype(float)
    same = paired_bootstrap(hits, hits, users)
    assert same.verdict == WITHIN_NOISE and same.low == same.high == 0.0


def test_users_not_queries_are_resampled():
    # one user holds all of A's extra hits: per-query resampling would call it a sure gain,
    # per-user resampling sees that it rests on one user out of twenty
    users = np.repeat(np.arange(20), 50)
    b = np.zeros(1000)
    a = np.where(users == 0, 1.0, 0.0)
    result = paired_bootstrap(a, b, users)
    assert result.low == 0.0 and result.verdict == WITHIN_NOISE
    assert result.high > result.difference


def test_mismatched_queries_are_refused():
    with pytest.raises(ValueError, match="same non-empty queries"):
        paired_bootstrap(np.ones(3), np.ones(2), np.arange(3))
