"""docker-compose.yml's convcg services, run here as processes with exactly the file's commands
and environment, only the addresses translated (no Docker engine on this machine): `kafka:9092`
-> the test broker, `redis:6379` -> the session's private Redis, `http://<service>:<port>` and every
listening port -> free local ports, `/app/var` -> a temporary working directory, topics and the
Feast project isolated per test. The replay is limited to the first events of the log.

It shows the compose configuration works, not just parses: the one-shots exit 0, the long-running
services stay up, both label-join workers (one consumer group) get partitions and process events,
labels come out, the aggregates workers count every event, and the features sink writes the
streaming features into Redis where the features HTTP service reads them back.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from convcg.contract import Topics
from convcg.kafka.broker import free_port
from convcg.kafka.io import read_topic
from convcg.metrics_scrape import fetch_samples, metric_sum
from loop.supervisor import Component
from streams.label_join.labels import dedupe
from tests.support.streams_harness import wait_until_members_hold_partitions

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
REPLAY_LIMIT = 3000
ONE_SHOTS = ("topics", "features-apply")
LONG_RUNNING = ("streams-worker-1", "streams-worker-2", "streams-aggregates-1", "streams-aggregates-2", "features-sink",
                "features-serve", "trainer")
PORT_ARGS = ("--port", "--metrics-port")
WAIT_S = 150.0
#: ${NAME}, ${NAME:-default}, ${NAME:?message}: the interpolation forms Compose applies to the file
COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """``value`` with its ``${...}`` references replaced as Compose would from ``variables``
    (the deployment's .env); a required (``:?``) variable that is missing fails."""

    def one(match: re.Match) -> str:
        name, kind, rest = match.groups()
        if variables.get(name):
            return variables[name]
        assert kind != "?", f"compose needs {name}: {rest}"
        return rest if kind == "-" else ""

    return COMPOSE_VARIABLE.sub(one, value)


class LocalCompose:
    """The compose file's services with their addresses translated to this machine."""

    def __init__(self, bootstrap: str, workdir: Path, prefix: str) -> None:
        self.services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
        self.bootstrap, self.workdir, self.prefix = bootstrap, workdir, prefix
        self.ports: dict[tuple[str, int], int] = {}
        self.procs: dict[str, Component] = {}
        #: the .env a deployment writes beside the file (tokens of the HTTP services)
        self.variables = {"FEATURES_API_TOKEN": secrets.token_hex(16), "INDEX_ADMIN_TOKEN": secrets.token_hex(16)}

    def port(self, service: str, port: int) -> int:
        return self.ports.setdefault((service, int(port)), free_port())

    def translate(self, service: str, value: str) -> str:
        value = interpolate(value, self.variables)
        value = value.replace("kafka:9092", self.bootstrap).replace("redis:6379", os.environ["CONVCG_FEATURES_REDIS_CONNECTION"])
        if value.startswith("http://"):
            host, port = value[len("http://"):].split("/")[0].split(":")
            return f"http://127.0.0.1:{self.port(host, int(port))}"
        return value

    def command(self, name: str, extra: tuple[str, ...] = ()) -> list[str]:
        words = [self.translate(name, w) for w in self.services[name]["command"]]
        for i, w in enumerate(words[:-1]):
            if w in PORT_ARGS:
                words[i + 1] = str(self.port(name, int(words[i + 1])))
        if words[0] in ("broker", "replay"):
            extra = ("--topic-prefix", self.prefix, *extra)
        return [*words, *extra]

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVCG_", "KAFKA_BOOTSTRAP"))}
        for key, value in (self.services[name].get("environment") or {}).items():
            value = self.translate(name, str(value))
            if key.endswith("_PORT") and value.isdigit():
                value = str(self.port(name, int(value)))
            env[key] = value
        for prefix in ("STREAMS", "FEATURES", "TRAINING", "INDEX", "REPLAY"):
            env[f"CONVCG_{prefix}_KAFKA__TOPIC_PREFIX"] = self.prefix
        env["CONVCG_FEATURES_PROJECT"] = f"compose_{self.prefix.strip('-')}"  # own Redis keys
        env["CONVCG_STREAMS_APP_ID"] = f"{self.prefix}{env.get('CONVCG_STREAMS_APP_ID', '')}"
        env["CONVCG_TRAINING_CONSUMER_GROUP"] = f"{self.prefix}trainer"
        env["CONVCG_FEATURES_CONSUMER_GROUP"] = f"{self.prefix}sink"
        env["CONVCG_DATA_CACHE"] = str(ROOT / "var" / "cache" / "wheels")  # reuse fetched wheels
        return env

    def popen(self, name: str, extra: tuple[str, ...] = ()) -> Component:
        """The service's command in its own process, with exactly its environment (none of ours)."""
        return Component(name, self.command(name, extra), self.env(name), self.workdir / f"{name}.log",
                         cwd=self.workdir, inherit_env=False, stop_timeout_s=30).start()

    def run_once(self, name: str, extra: tuple[str, ...] = (), timeout: float = 180.0) -> None:
        proc = self.popen(name, extra)
        assert proc.wait(timeout) == 0, f"one-shot {name} failed:\n{self.tail(name)}"

    def start(self, name: str) -> None:
        self.procs[name] = self.popen(name)

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            assert p.alive, f"{name} exited with {p.returncode}:\n{self.tail(name)}"

    def tail(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop_all(self) -> None:
        for p in self.procs.values():  # SIGTERM to all first: they shut down side by side
            p.signal()
        for p in self.procs.values():
            p.wait_stopped()

    def metric(self, service: str, port: int, name: str) -> float:
        return metric_sum(fetch_samples(self.port(service, port), missing_ok=True), name)


def wait_for(predicate, compose: LocalCompose, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        compose.check_alive()
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def test_compose_services_run_with_the_files_commands_and_environment(broker, tmp_path):
    prefix = f"c{uuid.uuid4().hex[:8]}-"
    compose = LocalCompose(broker.bootstrap, tmp_path, prefix)
    topics = Topics(prefix)
    try:
        for name in ONE_SHOTS:
            compose.run_once(name)
        for name in LONG_RUNNING:
            compose.start(name)
        for group, members in ((f"{prefix}convcg-streams", ("streams-worker-1", "streams-worker-2")),
                               (f"{prefix}convcg-aggregates", ("streams-aggregates-1", "streams-aggregates-2"))):
            wait_until_members_hold_partitions(broker.bootstrap, group, 2, [compose.procs[m] for m in members])
        compose.run_once("replay", ("--limit", str(REPLAY_LIMIT)))
        assert (tmp_path / "var" / "catalog" / "items.parquet").exists()  # under the shared var/

        # both workers of the one consumer group process events (3 partitions over 2 workers)
        worker_port = int(compose.services["streams-worker-1"]["environment"]["CONVCG_STREAMS_METRICS_PORT"])
        per_worker = wait_for(lambda: (lambda n: n if all(n) and sum(n) >= REPLAY_LIMIT else None)(
            [compose.metric(w, worker_port, "convcg_stream_events_total")
             for w in ("streams-worker-1", "streams-worker-2")]), compose, "both workers to process the replay")
        assert sum(per_worker) < 2 * REPLAY_LIMIT  # shared, not each reading everything
        # the two aggregates workers of their consumer group share the partitions
        wait_for(lambda: (lambda n: n if all(n) and sum(n) >= REPLAY_LIMIT else None)(
            [compose.metric(w, 9104, "convcg_aggregates_events_total")
             for w in ("streams-aggregates-1", "streams-aggregates-2")]), compose, "both aggregates workers to count the replay")

        labels = wait_for(lambda: dedupe(read_topic(broker.bootstrap, topics.labels, timeout=5, idle=0.5)),
                          compose, "labels")
        assert {l["kind"] for l in labels} & {"engagement", "negative"}

        # the sink wrote the user's streaming features to Redis; features-serve reads them back
        user = labels[0]["user_id"]
        serve_url = f"http://127.0.0.1:{compose.port('features-serve', 8610)}"

        token = compose.env("features-serve")["CONVCG_FEATURES_API_TOKEN"]
        assert token == compose.variables["FEATURES_API_TOKEN"]
        url = f"{serve_url}/online-features/user_stream/{user}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})

        def user_features():
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    body = json.loads(r.read())
            except OSError:
                return None
            values = body["results"][0]["features"] if body.get("results") else {}
            return values if (values.get("impressions_7d") or 0) > 0 else None

        values = wait_for(user_features, compose, f"features of {user} through Redis")
        assert values["impressions_7d"] >= values["engagements_7d"] >= 0
        with pytest.raises(urllib.error.HTTPError, match="401"):  # bound beyond loopback: token needed
            urllib.request.urlopen(url, timeout=5)
        compose.check_alive()
    finally:
        compose.stop_all()
        redis_keys = drop_redis_project(compose.env("features-sink"))
    assert redis_keys > 0  # the online store really was Redis


def drop_redis_project(env: dict[str, str]) -> int:
    """Delete this test's Feast project keys from the shared Redis; returns how many."""
    from features.repo.store import delete_redis_project_keys
    from features.settings import FeaturesSettings

    settings = FeaturesSettings(project=env["CONVCG_FEATURES_PROJECT"],
                                redis_connection=env["CONVCG_FEATURES_REDIS_CONNECTION"], online_store="redis")
    return delete_redis_project_keys(settings)
