"""One CLI vocabulary: every option of every ``convcg`` command says what it does; one name per
concept (``--bootstrap``, ``--topic-prefix``, ``--registry``, ``--online-store``, ``--redis``);
every command that talks to Kafka falls back to ``KAFKA_BOOTSTRAP``; ``--registry`` moves what a
command reads."""

from __future__ import annotations

import click
import orjson
import pytest
from click.testing import CliRunner

from convcg.cli_options import with_registry
from convcg.kafka.io import json_producer
from loop.cli import main

#: commands that read the model registry (or its index artifacts)
READS_A_REGISTRY = {"train", "finetune", "trainer", "registry list", "registry rollback", "refresher",
                    "index build", "index status", "retrieval serve"}
#: commands that talk to Kafka with a settings object's broker
TALKS_TO_KAFKA = {"deadletters", "replay", "worker", "aggregates", "labels", "features sink", "trainer",
                  "refresher"}
#: options that name one concept each, and the spellings that concept must not take
RETIRED_SPELLINGS = {"--store": "--online-store", "--registry-root": "--registry", "--kafka": "--bootstrap",
                     "--prefix": "--topic-prefix", "--redis-connection": "--redis"}


def commands(group: click.Group = main, path: tuple[str, ...] = ()):
    """(name path, command) of ``group`` and of every command and group under it."""
    yield " ".join(path) or "convcg", group
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*path, name))
        else:
            yield " ".join((*path, name)), cmd


def options(cmd: click.Command) -> dict[str, click.Option]:
    return {opt: p for p in cmd.params if isinstance(p, click.Option) for opt in p.opts}


ALL = dict(commands())


def test_the_walk_sees_every_component_command():
    assert {"convcg", "up", "eval", "labels", "deadletters", "features", "features sink", "retrieval serve",
            "index build"} <= set(ALL)
    assert len([c for c in ALL.values() if not isinstance(c, click.Group)]) >= 23


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_option_says_what_it_does(name):
    missing = [p.opts[0] for p in ALL[name].params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not missing, f"convcg {name}: options without help: {missing}"
    assert (ALL[name].help or "").strip(), f"convcg {name} has no description"


def test_the_help_check_sees_a_bare_option():
    @click.command()
    @click.option("--bare")
    def bare(bare):
        """A command."""

    assert [p for p in bare.params if isinstance(p, click.Option) and not p.help]


@pytest.mark.parametrize("name", sorted(ALL))
def test_one_name_per_concept(name):
    opts = options(ALL[name])
    for retired, current in RETIRED_SPELLINGS.items():
        assert retired not in opts, f"convcg {name}: {retired} is spelled {current} everywhere"


@pytest.mark.parametrize("name", sorted(READS_A_REGISTRY))
def test_a_command_that_reads_a_registry_takes_registry(name):
    assert "--registry" in options(ALL[name]), f"convcg {name} reads a registry but has no --registry"


@pytest.mark.parametrize("name", sorted(TALKS_TO_KAFKA))
def test_a_command_that_talks_to_kafka_falls_back_to_the_environment(name):
    bootstrap = options(ALL[name])["--bootstrap"]
    assert not bootstrap.required and bootstrap.default is None
    assert "KAFKA_BOOTSTRAP" in bootstrap.help
    assert "--topic-prefix" in options(ALL[name])


def test_rates_say_their_unit():
    assert "events/s" in options(ALL["up"])["--rate"].help
    assert "event-seconds per wall-clock second" in options(ALL["replay"])["--speed"].help


def test_registry_moves_the_index_artifacts_unless_their_root_is_set(tmp_path, monkeypatch):
    from index_refresher.settings import RefresherSettings
    from training.config import TrainingSettings

    monkeypatch.delenv("CONVCG_INDEX_INDEX_ROOT", raising=False)
    moved = with_registry(RefresherSettings(), tmp_path / "reg")
    assert (moved.registry_root, moved.index_root) == (tmp_path / "reg", tmp_path / "reg" / "indexes")
    pinned = with_registry(RefresherSettings(index_root=tmp_path / "idx"), tmp_path / "reg")
    assert (pinned.registry_root, pinned.index_root) == (tmp_path / "reg", tmp_path / "idx")
    assert with_registry(TrainingSettings(), tmp_path / "t").registry_root == tmp_path / "t"
    assert with_registry(TrainingSettings(), None).registry_root == TrainingSettings().registry_root


def test_labels_and_deadletters_read_the_broker_in_kafka_bootstrap(broker, topics, monkeypatch):
    from convcg.validation import dead_letter

    monkeypatch.setenv("KAFKA_BOOTSTRAP", broker.bootstrap)
    for var in ("CONVCG_STREAMS_KAFKA__BOOTSTRAP", "CONVCG_STREAMS_KAFKA__TOPIC_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    producer = json_producer(broker.bootstrap)
    for label_id, kind in (("a", "negative"), ("b", "conversion"), ("a", "negative")):
        producer.send(topics.labels, value=orjson.dumps({"label_id": label_id, "kind": kind}))
    producer.send(topics.dead_letters, value=dead_letter("trainer", topics.labels, 0, 1, b"{", "malformed_json",
                                                         "bad", 1.0))
    producer.flush()
    runner = CliRunner()
    labels = runner.invoke(main, ["labels", "--topic-prefix", topics.prefix, "--timeout", "10"])
    assert labels.exit_code == 0, labels.output
    assert labels.output.splitlines()[0] == "2 labels (1 redelivered copies dropped)"
    letters = runner.invoke(main, ["deadletters", "--topic-prefix", topics.prefix, "--timeout", "10"])
    assert letters.exit_code == 0, letters.output
    assert letters.output.splitlines()[0] == "1 dead letters"


def test_redis_flag_means_the_redis_store_there(tmp_path):
    from features.cli import _settings
    from loop.online_store import start_online_store

    s = _settings("redis.internal:6380", online_store=None)
    assert (s.online_store, s.redis_connection) == ("redis", "redis.internal:6380")
    with pytest.raises(click.UsageError):
        _settings("redis.internal:6380", online_store="sqlite")
    store = start_online_store("auto", tmp_path, redis="redis.internal:6380")
    assert store.server is None and not (tmp_path / "redis").exists()  # nothing started
    assert store.env == {"CONVCG_FEATURES_ONLINE_STORE": "redis",
                         "CONVCG_FEATURES_REDIS_CONNECTION": "redis.internal:6380"}
    store.stop()
