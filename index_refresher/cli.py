"""Click commands of the index refresher: ``refresher`` and ``index`` (build, and the admin
calls load / rollback / status it makes to the retrieval service).

Heavy imports (FAISS, torch) happen inside the commands so ``convcg --help`` is fast.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from convcg.cli_options import bootstrap_option, registry_option, topic_prefix_option, with_registry

log = logging.getLogger(__name__)

INDEX_ENV = "CONVCG_INDEX_"
URL_HELP = "Retrieval service URL [default: CONVCG_INDEX_RETRIEVAL_URL, else http://127.0.0.1:8470]."


def _settings(registry=None, **overrides):
    from index_refresher.settings import RefresherSettings

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per admin call otherwise
    return with_registry(RefresherSettings(**{k: v for k, v in overrides.items() if v is not None}), registry)


def _print(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _lower_priority(niceness: int) -> None:
    import os

    if niceness > 0:
        try:
            os.nice(niceness)
            log.info("refresher runs at niceness +%d (builds yield the CPU to serving)", niceness)
        except OSError as exc:
            log.warning("could not lower the refresher's CPU priority: %s", exc)


@click.group("index")
def index_command() -> None:
    """Build index artifacts; inspect and roll back the serving index."""


@index_command.command("build")
@click.option("--model-version", default=None, help="Model version (default: the registry's current).")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False), default=None,
              help="Catalog parquet [default: CONVCG_INDEX_CATALOG_PATH, else var/catalog/items.parquet].")
@registry_option(INDEX_ENV)
@click.option("--load", "push", is_flag=True, help="Then ask the retrieval service to load it.")
def build(model_version: str | None, catalog_path: str | None, registry, push: bool) -> None:
    """Embed the catalog with a model version and write a versioned index artifact."""
    from index_refresher.builder import BuildError, build_artifact
    from index_refresher.refresher import AdminError, RetrievalAdminClient
    from registry.index_artifact import read_manifest
    from registry.serving_model import registry_model_loader

    settings = _settings(registry, catalog_path=catalog_path)
    try:
        model = registry_model_loader(settings.registry_root)(model_version)
        path = build_artifact(model, settings)
    except BuildError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        if type(exc).__name__ == "RegistryError":
            raise click.ClickException(f"model registry: {exc}") from exc
        raise
    manifest = read_manifest(path)
    _print({"path": str(path), **{k: v for k, v in manifest.items() if k != "files"}})
    if push:
        try:
            _print(RetrievalAdminClient.from_settings(settings).load(manifest["model_version"],
                                                                    manifest["index_version"]))
        except AdminError as exc:
            raise click.ClickException(str(exc)) from exc


@index_command.command("rollback")
@click.option("--url", default=None, help=URL_HELP)
def rollback(url: str | None) -> None:
    """Serve the previous (model, index) pair again."""
    from index_refresher.refresher import AdminError, RetrievalAdminClient

    settings = _settings(retrieval_url=url)
    try:
        _print(RetrievalAdminClient.from_settings(settings, timeout_s=30).rollback())
    except AdminError as exc:
        raise click.ClickException(str(exc)) from exc


@index_command.command("load")
@click.option("--model-version", default=None, help="Model version (default: the registry's current).")
@click.option("--index-version", default=None, help="Index version (default: newest for the model).")
@click.option("--url", default=None, help=URL_HELP)
def load_cmd(model_version: str | None, index_version: str | None, url: str | None) -> None:
    """Ask the retrieval service to load and swap in a (model, index) pair."""
    from index_refresher.refresher import AdminError, RetrievalAdminClient
    from registry.containment import OutsideRoot, check_version_name

    for option, value in (("--model-version", model_version), ("--index-version", index_version)):
        try:
            if value is not None:
                check_version_name(value, option)
        except OutsideRoot as exc:
            raise click.BadParameter(str(exc), param_hint=option) from None
    settings = _settings(retrieval_url=url)
    try:
        _print(RetrievalAdminClient.from_settings(settings).load(model_version, index_version))
    except AdminError as exc:
        raise click.ClickException(str(exc)) from exc


@index_command.command("status")
@click.option("--url", default=None, help=URL_HELP)
@registry_option(INDEX_ENV)
def status(url: str | None, registry) -> None:
    """What the retrieval service serves, and the index artifacts on disk."""
    from index_refresher.refresher import AdminError, RetrievalAdminClient
    from registry.index_artifact import list_artifacts, read_manifest

    settings = _settings(registry, retrieval_url=url)
    try:
        service = RetrievalAdminClient.from_settings(settings, timeout_s=5).status()
    except AdminError as exc:
        service = {"error": str(exc)}
    artifacts = []
    root = settings.index_root
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for path in list_artifacts(root, model_dir.name):
            m = read_manifest(path)
            artifacts.append({k: m.get(k) for k in ("model_version", "index_version", "kind", "count",
                                                    "dim", "recall", "build_seconds")})
    _print({"service": service, "artifacts": artifacts})


@click.command("refresher")
@click.option("--once", is_flag=True, help="One registry check (build + push if needed), then exit.")
@bootstrap_option(INDEX_ENV, extra=" whose impressions topic is watched for new items (given: the watch is on; "
                  "unset: only with CONVCG_INDEX_WATCH_NEW_ITEMS=true)")
@topic_prefix_option(INDEX_ENV)
@registry_option(INDEX_ENV)
@click.option("--from-beginning", is_flag=True, help="Scan the impressions topic from its start.")
def refresher_command(once: bool, bootstrap: str | None, topic_prefix: str | None, registry,
                      from_beginning: bool) -> None:
    """Watch the registry (and impressions) and keep the retrieval index current."""
    import threading

    from index_refresher.metrics import RefresherMetrics
    from index_refresher.new_items import NewItemWatcher, known_item_ids
    from index_refresher.refresher import RegistryRefresher, RetrievalAdminClient
    from registry.serving_model import registry_model_loader

    settings = _settings(registry, **({"watch_new_items": True} if bootstrap else {}))
    settings.kafka = settings.kafka.with_overrides(bootstrap, topic_prefix)
    _lower_priority(settings.build_niceness)

    def current_version():
        from registry.store import ModelRegistry

        return ModelRegistry(settings.registry_root).current_version()

    admin = RetrievalAdminClient.from_settings(settings)
    metrics = RefresherMetrics()
    refresher = RegistryRefresher(settings, registry_model_loader(settings.registry_root), current_version, admin,
                                  metrics=metrics)
    if once:
        pushed = refresher.refresh_once()
        _print({"pushed": pushed, "failed": refresher.failed})
        sys.exit(1 if refresher.failed else 0)
    stop = threading.Event()
    threads = []
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=metrics.registry)
    if settings.watch_new_items:
        watcher = NewItemWatcher(settings.kafka.bootstrap, settings.kafka.topics.impressions, admin,
                                 known_item_ids(settings), settings.new_items_path,
                                 settings.new_item_flush_s, settings.new_item_batch, from_beginning,
                                 settings.max_future_s, settings.new_item_max_pending, metrics)
        # supervised: a failure is logged, counted and the watcher restarted, never a silent death
        threads.append(threading.Thread(target=watcher.run_supervised, args=(stop,), name="new-items",
                                        daemon=True))
    else:
        log.info("not watching impressions for new items (no --bootstrap, CONVCG_INDEX_WATCH_NEW_ITEMS off)")
    for t in threads:
        t.start()
    try:
        refresher.run(stop)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
