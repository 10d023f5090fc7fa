"""The trainer service retrains from scratch in a worker process and goes on fine-tuning."""

import orjson

from registry.store import ModelRegistry
from tests.support.tiny_models import tiny_config
from training.config import OptimConfig, TrainingSettings
from training.trainer.service import TrainerService
from training.synthetic import synthetic_catalog, synthetic_labels


def _accept(service: TrainerService, rows) -> None:
    for row in rows:
        assert service.accept(orjson.dumps(row))


def _service(tmp_path, n_labels: int, seed: int, min_labels_first_train: int) -> tuple[TrainerService, list[dict]]:
    """A trainer service (tiny model, every candidate published, retrain at 2x) and time-ordered labels."""
    catalog = synthetic_catalog(120)
    catalog.to_parquet(tmp_path / "catalog.parquet")
    labels = synthetic_labels(catalog, n_users=30, n_labels=n_labels, seed=seed).sort_values("label_ts")
    settings = TrainingSettings(
        registry_root=tmp_path / "registry", label_store=tmp_path / "store", catalog_path=tmp_path / "catalog.parquet",
        min_labels_first_train=min_labels_first_train, gate_tolerance=1.0, gate_k=20, model=tiny_config(),
        retrain_growth=2.0, optim=OptimConfig(epochs=2, batch_size=128))
    return TrainerService(settings), labels.to_dict("records")


def test_a_due_retrain_runs_beside_the_fine_tunes_then_is_published_and_caught_up(tmp_path):
    service, labels = _service(tmp_path, n_labels=1900, seed=3, min_labels_first_train=300)
    registry = ModelRegistry(service.settings.registry_root)
    try:
        _accept(service, labels[:600])
        assert service.step().published == "v000001"
        assert registry.data_range("v000001")["mode"] == "full"
        assert not service.due()

        # 1,300 stored >= 2 x 600: the retrain starts in the worker, and this step fine-tunes v1 as usual
        _accept(service, labels[600:1300])
        step = service.step()
        assert service.retrainer.running and service.metrics.retraining._value.get() == 1
        assert step.published == "v000002" and registry.data_range("v000002")["mode"] == "finetune"
        snapshot_heldout = set(step.heldout["label_id"])

        # 300 labels arrive while it runs: fewer than the trigger, but a finished retrain makes a step due
        _accept(service, labels[1300:1600])
        assert service.retrainer.wait(timeout=180), "the background retrain did not finish"
        assert service.due()
        # the labels have grown enough again: the step that collects this retrain starts the next
        service.settings = service.settings.model_copy(update={"retrain_growth": 1.1})
        service.step()
        published = [o.published for o in service.outcomes]
        assert published == ["v000001", "v000002", "v000003"], [o.reason for o in service.outcomes]
        retrain = registry.data_range("v000003")
        assert retrain["mode"] == "retrain" and retrain["retrain_base_version"] == "v000001"
        # judged against the version serving when it was collected, not the one it started beside
        assert retrain["base_version"] == "v000002"
        assert registry.metrics("v000003")["base_version"] == "v000002"
        assert retrain["stored_labels"] == 1300  # the snapshot, not the 300 stored after it
        assert registry.current_version() == "v000003"
        # the collecting step fine-tunes it on its held-out slice and everything stored after it
        assert retrain["new_labels"] + retrain["heldout"]["labels"] == len(snapshot_heldout) + 300
        assert retrain["step_started_at"] > 0
        assert service.retrainer.running and service.metrics.retraining._value.get() == 1
        assert len(service.retrainer.job.snapshot_label_ids) == 1600 and service.retrainer.job.base_version == "v000003"
        assert not service.due()
    finally:
        service.close()


def test_labels_doubling_again_while_a_retrain_runs_start_no_second_one(tmp_path):
    service, labels = _service(tmp_path, n_labels=1400, seed=4, min_labels_first_train=100)
    try:
        _accept(service, labels[:150])
        service.step()
        _accept(service, labels[150:350])  # 350 >= 2 x 150: a retrain starts
        service.step()
        job = service.retrainer.job
        assert job is not None and len(job.snapshot_label_ids) == 350
        _accept(service, labels[350:1400])  # 1,400 >= 2 x 350: due again, while the first may still run
        service.step()  # must not fail, and must not replace a running retrain
        assert service.retrainer.job is None or service.retrainer.job is job or \
            len(service.retrainer.job.snapshot_label_ids) == 1400
        assert service.retrainer.wait(timeout=180)
    finally:
        service.close()


def test_a_retrain_catches_up_in_its_worker_on_the_labels_stored_since_its_snapshot(tmp_path):
    from training.trainer.background_retrain import catch_up
    from training.trainer.label_store import LabelStore
    from training.trainer.step import TwoTowerModel

    service, labels = _service(tmp_path, n_labels=1500, seed=5, min_labels_first_train=100)
    service.close()
    settings = service.settings.model_copy(update={"trigger_labels": 100, "retrain_catch_up_rounds": 2})
    store = LabelStore(settings.label_store)
    import pandas as pd

    frame = pd.DataFrame(labels)
    store.append(frame.iloc[:700])
    store.append(frame.iloc[700:])  # stored while the retrain ran
    model = TwoTowerModel(tiny_config())
    trained0 = set(frame["label_id"].iloc[:700])
    caught, trained, rounds = catch_up(model, trained0, settings, "v000001")
    assert rounds >= 1 and caught is not model
    left = set(frame["label_id"]) - trained
    assert trained > trained0 and (len(left) <= 100 or rounds == 2)
    # each round holds out its newest slice, trained on in the next round or the collecting step
    assert left and left <= set(frame["label_id"].iloc[700:])
    # nothing left to catch up on: no round
    _, same, none = catch_up(caught, set(frame["label_id"]), settings, "v000001")
    assert none == 0 and same == set(frame["label_id"])
