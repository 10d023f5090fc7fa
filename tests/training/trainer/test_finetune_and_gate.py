"""Incremental fine-tuning, the quality gate, and the `train` / `finetune` commands."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from registry.store import ModelRegistry
from tests.support.tiny_models import tiny_config
from training.cli import finetune_command, train_command
from training.config import OptimConfig, TrainingSettings
from training.evaluation.heldout import heldout_evaluation, model_metrics
from training.evaluation.protocol import HEADLINE, POINT_IN_TIME, STATIC, Queries, metric_name
from training.learn.examples import time_split
from training.synthetic import synthetic_catalog, synthetic_labels
from training.trainer.plots import PLOT_NAME
from training.trainer.publish import (
    finetune_step,
    full_training_step,
    labels_at_last_scratch_training,
    retrain_due,
)
from training.trainer.gate import judge

ENGAGEMENT_100 = metric_name("engagement", 100)


def _queries(task: str, users) -> Queries:
    users = np.asarray(users)
    n = len(users)
    return Queries(task, POINT_IN_TIME, users, np.zeros(n, np.int64), np.zeros(n), np.zeros(n, bool))


def test_gate_refuses_only_a_candidate_shown_worse_on_the_same_queries():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(200), 5)  # 200 users, 5 conversion queries each
    serving = rng.integers(0, 300, len(users))  # ranks of each query's positive
    queries = {("conversion", POINT_IN_TIME): _queries("conversion", users)}
    key = ("conversion", POINT_IN_TIME)
    # the same ranks but a handful moved across k: within the noise -> passes
    nudged = serving.copy()
    nudged[:5] = 500
    v = judge({key: nudged}, {key: serving}, queries, k=100, tolerance=0.0)
    assert v.passed and v.metric == HEADLINE and v.paired.low < 0 < v.paired.high or v.paired.high >= 0
    # a third of the serving model's hits lost: the whole interval below 0 -> refused
    worse = serving.copy()
    hits = np.flatnonzero(serving < 100)
    worse[hits[: len(hits) // 3]] = 1000
    v = judge({key: worse}, {key: serving}, queries, k=100, tolerance=0.0)
    assert not v.passed and v.paired.high < 0 and "fails" in v.reason
    # the same loss is tolerated when the tolerance covers it
    v = judge({key: worse}, {key: serving}, queries, k=100, tolerance=0.5)
    assert v.passed
    assert v.as_metrics()["gate_queries"] == len(users) and v.as_metrics()["gate_users"] == 200


def test_gate_judges_engagements_when_the_slice_has_no_conversion():
    key = ("engagement", POINT_IN_TIME)
    queries = {("conversion", POINT_IN_TIME): _queries("conversion", []), key: _queries("engagement", [1, 2, 3])}
    v = judge({key: np.array([1, 2, 3])}, {key: np.array([1, 2, 300])}, queries, k=100, tolerance=0.0)
    assert v.passed and v.metric == ENGAGEMENT_100
    v = judge({}, {}, {("conversion", POINT_IN_TIME): _queries("conversion", [])}, k=100, tolerance=0.0)
    assert not v.passed and "cannot judge" in v.reason and v.as_metrics() == {}


@pytest.fixture(scope="module")
def data():
    catalog = synthetic_catalog(200)
    labels = synthetic_labels(catalog, n_users=60, n_labels=5000, seed=3)
    cut = int(len(labels) * 0.6)
    return catalog, labels.iloc[:cut].reset_index(drop=True), labels.iloc[cut:].reset_index(drop=True)


def _settings(tmp_path, **kw) -> TrainingSettings:
    base = dict(registry_root=tmp_path / "registry", label_store=tmp_path / "labels",
                catalog_path=tmp_path / "none.parquet", model=tiny_config(), gate_k=20,
                optim=OptimConfig(epochs=3, batch_size=256))
    base.update(kw)
    return TrainingSettings(**base)


def test_finetune_publishes_when_the_gate_passes_and_not_when_it_fails(tmp_path, data):
    catalog, older, new = data
    settings = _settings(tmp_path)
    first = full_training_step(settings, older, catalog, show_progress=False)
    assert first.published == "v000001"
    reg = ModelRegistry(settings.registry_root)
    assert (reg.versions_dir / "v000001" / PLOT_NAME).exists()

    good = finetune_step(settings, new, older, catalog, show_progress=False)
    assert good.published == "v000002", good.reason
    assert good.metrics["gate_passed"] and good.metrics["base_version"] == "v000001"
    # the gate judges point-in-time recall; the static protocol's figure is kept beside it
    recall_20 = metric_name("conversion", 20)
    assert "candidate" in good.reason and recall_20 in good.reason
    assert {recall_20, metric_name("conversion", 20, STATIC), "conversion_queries"} <= set(good.metrics)
    new_train, heldout = time_split(new, settings.holdout_fraction)
    evaluation = heldout_evaluation(pd.concat([older, new_train]), heldout, catalog)
    assert len(evaluation.queries[("conversion", POINT_IN_TIME)]) == good.metrics["conversion_queries"] > 0
    recomputed = model_metrics(reg.load("v000002").model, evaluation, catalog, (20,))
    assert good.metrics[recall_20] == pytest.approx(recomputed[recall_20])
    rng = reg.data_range("v000002")
    assert rng["mode"] == "finetune" and rng["base_version"] == "v000001"
    assert rng["replayed"] == int(rng["new_labels"] * settings.replay_ratio) > 0  # replayed per new label
    assert rng["heldout"]["labels"] == len(new) - rng["new_labels"]
    # the held-out slice is the most recent part of the new labels
    assert rng["heldout"]["impression_ts_min"] >= new["impression_ts"].quantile(0.75)

    # a fine-tune on corrupted new labels (item ids shuffled, except in the held-out slice)
    # scores worse on the held-out slice: refused, the serving version stays
    scrambled = new.copy()
    early = (scrambled["impression_ts"] < scrambled["impression_ts"].quantile(0.8)).to_numpy()
    items = scrambled.loc[early, "item_id"].to_numpy()
    scrambled.loc[early, "item_id"] = np.random.default_rng(0).permutation(items)
    broken = _settings(tmp_path, finetune_learning_rate=0.05, finetune_epochs=10, replay_ratio=0.0,
                       gate_tolerance=0.0)
    bad = finetune_step(broken, scrambled, older, catalog, show_progress=False)
    assert bad.published is None and "fails" in bad.reason, bad.reason
    assert bad.metrics["gate_ci95"][1] < 0  # shown worse on the same queries, not merely lower
    assert reg.current_version() == "v000002" and reg.versions() == ["v000001", "v000002"]


def test_train_and_finetune_commands(tmp_path, data, monkeypatch):
    catalog, older, new = data
    monkeypatch.setenv("CONVCG_TRAINING_MODEL__EMBEDDING_DIM", "8")
    monkeypatch.setenv("CONVCG_TRAINING_MODEL__ITEM_BUCKETS", "512")
    monkeypatch.setenv("CONVCG_TRAINING_MODEL__USER_BUCKETS", "256")
    monkeypatch.setenv("CONVCG_TRAINING_GATE_TOLERANCE", "1.0")
    monkeypatch.setenv("CONVCG_TRAINING_LABEL_STORE", str(tmp_path / "store"))
    older.to_parquet(tmp_path / "older.parquet")
    new.to_csv(tmp_path / "new.csv", index=False)
    catalog.to_parquet(tmp_path / "catalog.parquet")
    runner = CliRunner()
    reg_root = str(tmp_path / "reg")
    out = runner.invoke(train_command, ["--labels", str(tmp_path / "older.parquet"), "--catalog",
                                        str(tmp_path / "catalog.parquet"), "--registry", reg_root, "--epochs", "1"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output[out.output.index("{"):])["published"] == "v000001"
    assert ModelRegistry(reg_root).load().dim == 8 + 1  # settings from the environment, + the conversion bias column
    out = runner.invoke(finetune_command, ["--new", str(tmp_path / "new.csv"), "--older",
                                           str(tmp_path / "older.parquet"), "--catalog",
                                           str(tmp_path / "catalog.parquet"), "--registry", reg_root])
    assert out.exit_code == 0, out.output
    assert ModelRegistry(reg_root).current_version() == "v000002"
    # bad input: a table without label columns gets a clear error, nothing is published
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "junk.parquet")
    out = runner.invoke(finetune_command, ["--new", str(tmp_path / "junk.parquet"), "--registry", reg_root])
    assert out.exit_code != 0 and "lacks columns" in str(out.exception)
    assert ModelRegistry(reg_root).versions() == ["v000001", "v000002"]


def test_retrain_is_due_when_the_labels_have_grown_enough():
    settings = TrainingSettings(retrain_growth=2.0)
    assert not retrain_due(settings, 1_999, 1_000)
    assert retrain_due(settings, 2_000, 1_000)
    assert not retrain_due(TrainingSettings(retrain_growth=None), 10**9, 1)


def test_a_retrain_step_trains_a_new_model_on_every_label_and_is_judged_by_the_gate(tmp_path, data):
    catalog, older, new = data
    # publish whatever the gate says (judged above); every negative kept (sampling: the next test)
    settings = _settings(tmp_path, gate_tolerance=1.0, scratch_negative_share=1.0)
    full_training_step(settings, older, catalog, show_progress=False)
    reg = ModelRegistry(settings.registry_root)
    assert labels_at_last_scratch_training(reg) == len(older)
    finetuned = finetune_step(settings, new.iloc[:500], older, catalog, show_progress=False)
    assert finetuned.published == "v000002"
    # a fine-tune is not a training from scratch: the count stays the full training's
    assert labels_at_last_scratch_training(reg) == len(older)

    rest = new.iloc[500:]
    retrained = finetune_step(settings, rest, pd.concat([older, new.iloc[:500]]), catalog, show_progress=False,
                              from_scratch=True)
    assert retrained.published == "v000003", retrained.reason
    rng = reg.data_range("v000003")
    new_train, heldout = time_split(rest, settings.holdout_fraction)
    # trained on everything but the held-out slice of the new labels, which the gate judged
    assert rng["mode"] == "retrain" and rng["labels"] == len(older) + 500 + len(new_train)
    assert rng["heldout"]["labels"] == len(heldout) and "candidate" in retrained.reason
    assert labels_at_last_scratch_training(reg) == len(older) + len(new)
    # a new model, not the serving one moved further: its weights share nothing with v000002's
    served = reg.load("v000002").model.state_dict()
    fresh = reg.load("v000003").model.state_dict()
    assert all(not torch.equal(served[k], fresh[k]) for k in served if served[k].dtype.is_floating_point
               and served[k].numel() > 1 and served[k].abs().sum() > 0)


def test_a_retrain_with_sampled_negatives_trains_on_fewer_rows_but_counts_every_stored_label(tmp_path, data):
    catalog, older, new = data
    settings = _settings(tmp_path, gate_tolerance=1.0).model_copy(update={"scratch_negative_share": 0.25})
    full_training_step(settings, older, catalog, show_progress=False)
    reg = ModelRegistry(settings.registry_root)
    first = reg.data_range("v000001")
    train, _ = time_split(older, settings.holdout_fraction)
    negatives = int((train["kind"] == "negative").sum())
    assert first["kinds"].get("negative", 0) < 0.5 * negatives  # about a quarter of them kept
    assert first["labels"] == len(train) - negatives + first["kinds"].get("negative", 0)
    assert labels_at_last_scratch_training(reg) == len(older)  # what was stored, not what was kept
    retrained = finetune_step(settings, new, older, catalog, show_progress=False, from_scratch=True)
    assert retrained.published == "v000002", retrained.reason
    assert labels_at_last_scratch_training(reg) == len(older) + len(new)
    assert reg.data_range("v000002")["kinds"]["negative"] < 0.5 * (older["kind"] == "negative").sum()


def test_a_finetune_with_sampled_negatives_keeps_every_positive_and_a_share_of_the_negatives(tmp_path, data):
    catalog, older, new = data
    full = _settings(tmp_path / "all", gate_tolerance=1.0)
    sampled = _settings(tmp_path / "quarter", gate_tolerance=1.0, finetune_negative_share=0.25)
    rows = {}
    for name, settings in (("all", full), ("quarter", sampled)):
        full_training_step(settings, older, catalog, show_progress=False)
        assert finetune_step(settings, new, older, catalog, show_progress=False).published == "v000002"
        rows[name] = ModelRegistry(settings.registry_root).data_range("v000002")["kinds"]
    assert rows["quarter"]["negative"] < 0.5 * rows["all"]["negative"]
    assert {k: v for k, v in rows["quarter"].items() if k != "negative"} == \
        {k: v for k, v in rows["all"].items() if k != "negative"}  # every positive kept


def test_a_model_field_from_the_environment_changes_only_that_field_of_the_online_retriever(monkeypatch):
    from training.learn.recipes import online_model_config

    monkeypatch.setenv("CONVCG_TRAINING_MODEL__EMBEDDING_DIM", "8")
    monkeypatch.setenv("CONVCG_TRAINING_MODEL__LOSS__TEMPERATURE", "0.2")
    model = TrainingSettings().model
    assert model.embedding_dim == 8 and model.loss.temperature == 0.2
    expected = online_model_config().model_dump()
    expected["embedding_dim"], expected["loss"]["temperature"] = 8, 0.2
    assert model.model_dump() == expected  # the sequence encoder, the catalog softmax, the bias... stay
