"""Click commands of the retrieval service: ``retrieval serve``.

Heavy imports (FAISS, torch, uvicorn) happen inside the command so ``convcg --help`` is fast.
"""

from __future__ import annotations

import logging

import click

log = logging.getLogger("convcg.retrieval.cli")


def _settings(**overrides):
    from retrieval.settings import RetrievalSettings

    return RetrievalSettings(**{k: v for k, v in overrides.items() if v is not None})


def _set_threads(n: int) -> None:
    """Per-query thread budget of the serving process (FAISS per search thread, torch)."""
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass



@click.group("retrieval")
def retrieval_command() -> None:
    """The retrieval HTTP service (user -> top-k items)."""


@retrieval_command.command("serve")
@click.option("--host", default=None, help="Bind address (CONVCG_INDEX_HOST).")
@click.option("--port", type=int, default=None, help="Port (CONVCG_INDEX_PORT).")
@click.option("--load/--no-load", default=True, show_default=True,
              help="Load the registry's current version (latest index artifact) at start.")
def serve(host: str | None, port: int | None, load: bool) -> None:
    """Serve /retrieve, /health, /metrics and /admin/* ."""
    import uvicorn

    from retrieval.service import build_service, create_app

    settings = _settings(host=host, port=port)
    _set_threads(settings.search_threads)
    service = build_service(settings)
    if load:
        service.loader.load_in_background(None)  # registry's current version, newest artifact
    log.info("retrieval service on http://%s:%d", settings.host, settings.port)
    uvicorn.run(create_app(service), host=settings.host, port=settings.port, log_level="warning")
