"""``convcg eval --resume``: graded results kept on disk are read back instead of recomputed,
each one under a key that changes with what it depends on; a run too small to validate on says so."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from streams.replay.datasets import load_log
from streams.label_join.joiner import compute_labels
from tests.training.evaluation.test_convergence import small_config
from training.evaluation import run as run_module
from training.evaluation.settings import EvalSettings
from training.evaluation.protocol import HEADLINE
from training.evaluation.graded_runs import (
    GradedResult,
    GradedRunStore,
    frame_fingerprint,
    result_key,
)
from training.history import interactions_from_log
from training.evaluation.convergence import ConvergenceConfig

ONE_EPOCH = ConvergenceConfig(max_epochs=1, refit_full=False)


def same(a, b) -> bool:
    """Equal as JSON (a group with no query has NaN recall on both sides)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def small_log(impressions: int):
    log = load_log("synthetic", n_users=300, n_items=200, n_advertisers=20, n_impressions=impressions)
    return pd.DataFrame([lab.to_dict() for lab in compute_labels(log.events)]), interactions_from_log(log)


@pytest.fixture(scope="module")
def data():
    return small_log(20_000)


def test_an_entry_reads_back_what_was_stored(tmp_path):
    store = GradedRunStore(tmp_path)
    hits = {"m": np.array([0.0, 1.0, 1.0]), "other": np.array([1.0])}
    store.put("k", GradedResult(metrics={"m": {HEADLINE: 0.5}}, hits=hits,
                                meta={"best_epochs": np.int64(3), "chosen": {"ease_lambda": 10.0}}))
    back = store.get("k")
    assert back.metrics == {"m": {HEADLINE: 0.5}}
    assert back.meta == {"best_epochs": 3, "chosen": {"ease_lambda": 10.0}}
    assert set(back.hits) == {"m", "other"} and np.array_equal(back.hits["m"], hits["m"])
    assert store.get("missing") is None
    assert [p.name for p in tmp_path.iterdir()] == ["k.npz"]  # no temporary file left behind


def test_keys_change_with_what_a_result_depends_on():
    base = result_key(kind="model", config=small_config(), training=ONE_EPOCH, labels="abc")
    assert base == result_key(labels="abc", training=ONE_EPOCH, config=small_config(), kind="model")
    assert base != result_key(kind="model", config=small_config(), training=ONE_EPOCH.model_copy(update={"seed": 1}),
                              labels="abc")
    assert base != result_key(kind="model", config=small_config(embedding_dim=16), training=ONE_EPOCH, labels="abc")
    assert base != result_key(kind="model", config=small_config(), training=ONE_EPOCH, labels="abd")
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert frame_fingerprint(frame) == frame_fingerprint(frame.copy())
    assert frame_fingerprint(frame) != frame_fingerprint(frame.assign(a=[1, 3]))
    assert frame_fingerprint(frame) != frame_fingerprint(frame.iloc[::-1])


def test_a_resumed_run_reads_every_graded_result_and_trains_only_what_is_new(tmp_path, data, monkeypatch):
    labels, inter = data
    store = GradedRunStore(tmp_path)
    trained: list[int] = []
    train = run_module.train_to_convergence

    def counting(*args, **kw):
        trained.append(args[4].seed)
        return train(*args, **kw)

    monkeypatch.setattr(run_module, "train_to_convergence", counting)
    run = dict(dataset="synthetic", labels=labels, inter=inter, settings=EvalSettings(), training=ONE_EPOCH,
               base=small_config(), ablations=False, only=("conversion_retriever",), store=store)
    first = run_module.run_evaluation(seeds=1, **run)
    assert trained == [0] and len(list(tmp_path.glob("*.npz"))) == 2  # the baselines, one model

    def refuse(*args, **kw):
        raise AssertionError("the baselines were graded again")

    monkeypatch.setattr(run_module, "baseline_scorers", refuse)
    again = run_module.run_evaluation(seeds=1, **run)
    assert trained == [0]
    for part in ("models", "paired_vs_conversion_retriever", "baselines_chosen_on_validation", "training"):
        assert same(again[part], first[part]), part

    more = run_module.run_evaluation(seeds=2, **run)  # seed 0 is read, seed 1 is trained
    assert trained == [0, 1] and len(more["training"]["conversion_retriever"]["seconds"]) == 2
    other_labels = run_module.run_evaluation(seeds=1, **{**run, "labels": labels.iloc[:-1]})
    assert trained == [0, 1, 0]  # other data, other key
    assert same(other_labels["models"]["popularity"], first["models"]["popularity"])  # baselines read the events


def test_a_validation_slice_without_conversions_is_a_clear_error():
    labels, inter = small_log(6_000)
    with pytest.raises(ValueError, match="validation slice .* holds no conversion query"):
        run_module.run_evaluation("synthetic", labels, inter, EvalSettings(), 1, ONE_EPOCH, base=small_config(),
                                ablations=False, only=("conversion_retriever",))


def test_an_unknown_model_name_is_refused_before_anything_is_graded(data, monkeypatch):
    labels, inter = data

    def refuse(*args, **kw):
        raise AssertionError("the baselines were graded before the names were checked")

    monkeypatch.setattr(run_module, "baseline_scorers", refuse)
    with pytest.raises(ValueError, match="no model variant named"):
        run_module.run_evaluation("synthetic", labels, inter, EvalSettings(), 1, ONE_EPOCH, base=small_config(),
                                ablations=False, only=("ablation: separate heads",))
