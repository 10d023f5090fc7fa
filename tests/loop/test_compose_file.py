"""docker-compose.yml is checked without a Docker engine: its structure, Kafka in KRaft mode
with 3 partitions, every service's command against the real `convcg` click command tree, and
every CONVCG_* environment variable against the real settings classes (each service's
environment must also validate as those settings). Where `docker compose` and a Docker engine
exist, `docker compose config -q` checks the file as Compose itself reads it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import click
import pytest
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from convcg.contract import Topics
from convcg.http_auth import check_bind, secret
from convcg.kafka.broker import docker_engine_answers
from features.settings import FeaturesSettings
from index_refresher.settings import RefresherSettings
from loop.cli import main
from retrieval.settings import RetrievalSettings
from streams.replay.datasets.settings import ConversionDelaySettings, DatasetSettings
from streams.replay.replay import ReplaySettings
from streams.settings import StreamSettings
from training.config import TrainingSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    StreamSettings, FeaturesSettings, TrainingSettings, RefresherSettings, RetrievalSettings, ReplaySettings,
    DatasetSettings, ConversionDelaySettings)
#: environment variables read outside the settings classes
OTHER_ENV = {"KAFKA_BOOTSTRAP"}
KAFKA_PARTITIONS = 3
#: components every compose deployment must run (command path -> minimum number of services)
REQUIRED_COMMANDS = {("broker",): 1, ("worker",): 2, ("features", "apply"): 1, ("features", "sink"): 1,
                     ("features", "serve"): 1, ("trainer",): 1, ("retrieval", "serve"): 1,
                     ("refresher",): 1, ("replay",): 1}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def convcg_services(services: dict[str, dict]) -> dict[str, dict]:
    """Services built from the project's Dockerfile (the ones that run `convcg`)."""
    return {name: s for name, s in services.items() if "build" in s}


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def resolve_command(words: list[str]) -> tuple[tuple[str, ...], click.Command, list[str]]:
    """Walk the click tree of `convcg` along ``words``: (command path, leaf command, its args)."""
    cmd: click.Command = main
    path: list[str] = []
    rest = list(words)
    while isinstance(cmd, click.Group) and rest:
        while rest and rest[0] in ("-v", "--verbose"):  # the group's own option
            rest.pop(0)
        if not rest:
            break
        sub = cmd.get_command(click.Context(cmd), rest[0])
        assert sub is not None, f"`convcg {' '.join(path + [rest[0]])}` is not a convcg command"
        path.append(rest.pop(0))
        cmd = sub
    assert not isinstance(cmd, click.Group), f"`convcg {' '.join(path)}` is a group, not a command"
    return tuple(path), cmd, rest


def option_names(cmd: click.Command) -> set[str]:
    return {opt for p in cmd.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}


def settings_class_for(var: str) -> type[BaseSettings] | None:
    """The settings class whose env prefix is the longest one starting ``var`` and that has the
    field (the refresher and the retrieval service share ``CONVCG_INDEX_``); with no such
    field, the first class of that prefix."""
    matches = [c for c in SETTINGS_CLASSES if var.startswith(c.model_config["env_prefix"])]
    if not matches:
        return None
    longest = max(len(c.model_config["env_prefix"]) for c in matches)
    matches = [c for c in matches if len(c.model_config["env_prefix"]) == longest]
    return next((c for c in matches if field_path_exists(c, var)), matches[0])


def field_path_exists(cls: type[BaseModel], var: str) -> bool:
    """CONVCG_<COMPONENT>_<FIELD>[__<SUBFIELD>...] names a real (nested) field."""
    parts = var[len(cls.model_config["env_prefix"]):].lower().split("__")
    model: type | None = cls
    for part in parts:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return True


def settings_from_env(cls: type[BaseSettings], env: dict[str, str]) -> BaseSettings:
    """Build ``cls`` from exactly this environment (as the container would)."""
    saved = dict(os.environ)
    try:
        for k in [k for k in os.environ if k.startswith("CONVCG_")]:
            del os.environ[k]
        os.environ.update(env)
        return cls()
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- structure ------------------------------------------------------------------------------------

def test_every_service_has_an_image_or_a_build_and_a_known_dockerfile(compose, services):
    assert set(compose) <= {"name", "services", "volumes", "networks", "configs", "secrets"} | {
        k for k in compose if k.startswith("x-")}
    assert services, "no services"
    for name, s in services.items():
        assert "image" in s or "build" in s, f"{name}: neither image nor build"
        if "build" in s:
            build = s["build"] if isinstance(s["build"], dict) else {"context": s["build"]}
            assert (ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["convcg"\]', dockerfile, re.M)  # a service's command = CLI args


def test_depends_on_points_at_real_services_with_usable_conditions(services):
    for name, s in services.items():
        deps = s.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services and dep != name, f"{name} depends on unknown service {dep}"
            condition = spec.get("condition", "service_started")
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"one-shot {dep} must not restart"


def test_named_volumes_are_declared_and_var_is_shared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, s in services.items():
        for v in s.get("volumes") or []:
            source = (v.split(":")[0] if isinstance(v, str) else v.get("source", ""))
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
    mounts = {name: [v for v in s.get("volumes") or [] if isinstance(v, str) and v.endswith(":/app/var")]
              for name, s in convcg_services(services).items()}
    assert all(len(m) == 1 for m in mounts.values()), mounts
    assert len({m[0].split(":")[0] for m in mounts.values()}) == 1  # one shared var volume
    assert {s.get("working_dir") for s in convcg_services(services).values()} == {"/app"}  # ./var = /app/var


def test_kafka_runs_in_kraft_mode_with_three_partitions_and_topics_are_created(services):
    kafka = services["kafka"]
    assert kafka["image"].split(":")[0] in ("apache/kafka", "bitnami/kafka")
    env = env_of(kafka)
    roles = env.get("KAFKA_PROCESS_ROLES") or env.get("KAFKA_CFG_PROCESS_ROLES")
    voters = env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") or env.get("KAFKA_CFG_CONTROLLER_QUORUM_VOTERS")
    assert set(roles.split(",")) == {"broker", "controller"} and voters
    assert int(env.get("KAFKA_NUM_PARTITIONS") or env.get("KAFKA_CFG_NUM_PARTITIONS")) == KAFKA_PARTITIONS
    assert not any("zookeeper" in n or "ZOOKEEPER" in " ".join(env_of(s)) for n, s in services.items())
    advertised = env.get("KAFKA_ADVERTISED_LISTENERS") or env.get("KAFKA_CFG_ADVERTISED_LISTENERS")
    bootstrap = urlparse(advertised.split(",")[0]).netloc  # PLAINTEXT://kafka:9092 -> kafka:9092

    # the one-shot topics service creates Topics().all() with 3 partitions on that listener
    (topics_name, topics_service), = [(n, s) for n, s in convcg_services(services).items()
                                      if s["command"][0] == "broker"]
    _, cmd, args = resolve_command(topics_service["command"])
    ctx = cmd.make_context("broker", list(args))
    assert ctx.params["partitions"] == KAFKA_PARTITIONS and ctx.params["topic_prefix"] == ""
    assert env_of(topics_service)["KAFKA_BOOTSTRAP"] == bootstrap  # external broker: create topics, exit
    assert topics_service.get("restart") == "no"
    assert len(Topics("").all()) == 12  # 7 + the aggregates' 2 repartition topics and 3 changelogs

    # every component talks to that same listener with the same (empty) topic prefix
    for name, s in convcg_services(services).items():
        for var, value in env_of(s).items():
            if var.endswith("BOOTSTRAP"):
                assert value == bootstrap, f"{name}: {var}={value}, Kafka advertises {bootstrap}"
            if var.endswith("TOPIC_PREFIX"):
                assert value == "", f"{name}: {var}={value!r} would miss the topics service's topics"
        args = s["command"]
        if "--bootstrap" in args:
            assert args[args.index("--bootstrap") + 1] == bootstrap


def test_the_whole_loop_is_deployed_with_two_workers_in_one_consumer_group(services):
    paths: dict[tuple[str, ...], list[str]] = {}
    for name, s in convcg_services(services).items():
        path, _, _ = resolve_command(s["command"])
        paths.setdefault(path, []).append(name)
    for path, minimum in REQUIRED_COMMANDS.items():
        assert len(paths.get(path, [])) >= minimum, f"`convcg {' '.join(path)}`: {paths.get(path)}"
    workers = paths[("worker",)]
    app_ids = {settings_from_env(StreamSettings, env_of(services[w])).app_id for w in workers}
    assert len(workers) == 2 and len(app_ids) == 1  # one Faust app id = one consumer group
    for name in ("redis",):
        assert name in services
    for name in paths[("features", "sink")] + paths[("features", "serve")] + paths[("features", "apply")]:
        s = settings_from_env(FeaturesSettings, env_of(services[name]))
        assert s.online_store == "redis" and s.redis_connection.split(":")[0] == "redis", name


# --- commands and settings against the real CLI -----------------------------------------------------

def test_every_service_command_is_a_real_convcg_command_with_real_options(services):
    for name, s in convcg_services(services).items():
        command = s.get("command")
        assert isinstance(command, list) and all(isinstance(w, str) for w in command), \
            f"{name}: command must be a list of strings (exec form), got {command!r}"
        path, cmd, args = resolve_command(command)
        known = option_names(cmd)
        for word in args:
            if word.startswith("-") and word != "-":
                assert word.split("=", 1)[0] in known, f"{name}: `convcg {' '.join(path)}` has no option {word}"
        # click parses the arguments exactly as the container would (types, choices, arity)
        try:
            cmd.make_context(" ".join(path), list(args))
        except click.ClickException as exc:
            pytest.fail(f"{name}: `convcg {' '.join(command)}`: {exc.format_message()}")


def test_resolve_command_rejects_what_is_not_in_the_cli():
    with pytest.raises(AssertionError, match="not a convcg command"):
        resolve_command(["no-such-command"])
    with pytest.raises(AssertionError, match="is a group"):
        resolve_command(["features"])
    path, cmd, _ = resolve_command(["retrieval", "serve", "--port", "1"])
    assert path == ("retrieval", "serve") and "--nope" not in option_names(cmd)
    with pytest.raises(click.UsageError):
        cmd.make_context("serve", ["--port", "not-a-number"])


def test_every_convcg_env_var_is_a_real_settings_field_and_validates(services):
    for name, s in services.items():
        env = env_of(s)
        used: set[type[BaseSettings]] = set()
        for var in env:
            if not var.startswith("CONVCG_"):
                if "build" in s:
                    assert var in OTHER_ENV, f"{name}: {var} is read by no component"
                continue
            cls = settings_class_for(var)
            assert cls is not None, f"{name}: {var} has no settings class"
            assert field_path_exists(cls, var), f"{name}: {var} is not a field of {cls.__name__}"
            used.add(cls)
        for cls in used:  # values parse as the component would read them
            settings_from_env(cls, env)


def test_env_var_checks_catch_a_misspelt_field():
    assert settings_class_for("CONVCG_DATA_DELAY_MAX_DAYS") is ConversionDelaySettings
    assert field_path_exists(StreamSettings, "CONVCG_STREAMS_RULES__NEGATIVE_WINDOW_S")
    assert not field_path_exists(StreamSettings, "CONVCG_STREAMS_BOOTSTRAP_SERVERS")
    assert not field_path_exists(TrainingSettings, "CONVCG_TRAINING_MODEL__NO_SUCH")
    with pytest.raises(Exception, match="online_store"):
        settings_from_env(FeaturesSettings, {"CONVCG_FEATURES_ONLINE_STORE": "memcached"})


def test_service_urls_point_at_services_listening_on_that_port(services):
    for name, s in convcg_services(services).items():
        for var, value in env_of(s).items():
            if not value.startswith("http://"):
                continue
            url = urlparse(value)
            target = services.get(url.hostname)
            assert target is not None, f"{name}: {var} points at unknown service {url.hostname}"
            _, cmd, args = resolve_command(target["command"])
            assert cmd.make_context("x", list(args)).params.get("port") == url.port, \
                f"{name}: {var}={value}, but {url.hostname} does not listen on {url.port}"


#: HTTP services: command path -> (settings class, its token field, the env var naming it)
HTTP_SERVICES = {("features", "serve"): (FeaturesSettings, "api_token", "CONVCG_FEATURES_API_TOKEN"),
                 ("retrieval", "serve"): (RetrievalSettings, "admin_token", "CONVCG_INDEX_ADMIN_TOKEN")}
REQUIRED_VARIABLE = re.compile(r"^\$\{(\w+):\?[^}]+\}$")  # ${NAME:?message}: compose fails without it


def test_http_services_beyond_loopback_need_tokens_and_their_clients_send_them(services):
    tokens: dict[str, str] = {}  # token env var -> its (uninterpolated) value in the file
    for name, s in convcg_services(services).items():
        path, cmd, args = resolve_command(s["command"])
        if path not in HTTP_SERVICES:
            continue
        cls, field, var = HTTP_SERVICES[path]
        env = env_of(s)
        host = cmd.make_context("x", list(args)).params.get("host") or settings_from_env(cls, env).host
        token = env.get(var, "")
        check_bind(host, token, service=name, token_setting=var)  # the service's own start-up rule
        if host != "127.0.0.1":
            assert REQUIRED_VARIABLE.match(token), f"{name}: {var} must be a required ${{NAME:?...}} value"
        assert secret(getattr(settings_from_env(cls, env), field)) == token
        tokens[var] = token
    assert set(tokens) == {"CONVCG_FEATURES_API_TOKEN", "CONVCG_INDEX_ADMIN_TOKEN"}
    for name, s in convcg_services(services).items():
        env = env_of(s)
        if "CONVCG_INDEX_FEATURES_URL" in env:  # the retrieval service reads user features
            assert env.get("CONVCG_INDEX_FEATURES_TOKEN") == tokens["CONVCG_FEATURES_API_TOKEN"], name
        if resolve_command(s["command"])[0] == ("refresher",):  # it calls /admin/load and /admin/items
            assert secret(settings_from_env(RefresherSettings, env).admin_token) == tokens["CONVCG_INDEX_ADMIN_TOKEN"]


def test_docker_compose_config_accepts_the_file_where_docker_exists():
    """Compose's own validation, where it can run; on a machine without a Docker engine the
    structural checks above are the whole check."""
    if shutil.which("docker") is None or not docker_engine_answers():
        return
    tokens = {"FEATURES_API_TOKEN": "compose-check", "INDEX_ADMIN_TOKEN": "compose-check"}  # the .env
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, **tokens})
    assert result.returncode == 0, result.stderr
