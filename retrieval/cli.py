"""Click commands of the retrieval service: ``retrieval serve``.

Heavy imports (FAISS, torch, uvicorn) happen inside the command so ``convcg --help`` is fast.
"""

from __future__ import annotations

import logging

import click

from convcg.cli_options import registry_option, with_registry

log = logging.getLogger(__name__)


def _settings(registry=None, **overrides):
    from retrieval.settings import RetrievalSettings

    return with_registry(RetrievalSettings(**{k: v for k, v in overrides.items() if v is not None}), registry)


def _set_threads(n: int) -> None:
    """Per-query thread budget of the serving process (FAISS per search thread, torch)."""
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def nothing_to_load(registry_root, index_root) -> str | None:
    """Why there is no pair to load yet (no model version, or no index artifact for the current
    one), or None when there is one: a start before the first model is routine, not an error."""
    from registry.index_artifact import ArtifactError, find_artifact
    from registry.store import ModelRegistry

    version = ModelRegistry(registry_root).current_version()
    if version is None:
        return f"registry {registry_root} has no model version yet"
    try:
        find_artifact(index_root, version)
    except ArtifactError as exc:
        if exc.reason == "missing":
            return f"no index artifact for model {version} yet"
    return None  # something to load (a bad artifact is the loader's to refuse, and log)


@click.group("retrieval")
def retrieval_command() -> None:
    """The retrieval HTTP service (user -> top-k items)."""


@retrieval_command.command("serve")
@click.option("--host", default=None,
              help="Bind address; beyond loopback it needs CONVCG_INDEX_ADMIN_TOKEN [default: CONVCG_INDEX_HOST, "
                   "else 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: CONVCG_INDEX_PORT, else 8470].")
@registry_option("CONVCG_INDEX_")
@click.option("--load/--no-load", default=True, show_default=True,
              help="Load the registry's current version (latest index artifact) at start.")
def serve(host: str | None, port: int | None, registry, load: bool) -> None:
    """Serve /retrieve, /health, /metrics and /admin/* ."""
    from convcg.http_auth import UnsafeBind, check_bind

    settings = _settings(registry, host=host, port=port)
    try:
        check_bind(settings.host, settings.admin_token, service="retrieval service",
                   token_setting="CONVCG_INDEX_ADMIN_TOKEN")
    except UnsafeBind as exc:
        raise click.ClickException(str(exc)) from None
    import uvicorn

    from retrieval.service import build_service, create_app

    _set_threads(settings.search_threads)
    service = build_service(settings)
    if load:
        missing = nothing_to_load(settings.registry_root, settings.index_root)
        if missing:  # a normal first start: the refresher loads the first pair when it has built it
            log.info("nothing to load at start (%s); serving nothing until a pair is loaded", missing)
        else:
            service.loader.load_in_background(None)  # registry's current version, newest artifact
    log.info("retrieval service on http://%s:%d", settings.host, settings.port)
    uvicorn.run(create_app(service), host=settings.host, port=settings.port, log_level="warning")
