"""The one CLI (`convcg ...`) that fronts every component.

Each component owns a `cli` module exposing click commands; their heavy imports (Faust, Feast,
torch, FAISS) happen inside the commands, so `convcg --help` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os

import click

# Feast's metrics module puts PROMETHEUS_MULTIPROC_DIR (a temporary directory it owns) into
# os.environ when it is imported. A component started by a process that had imported Feast (a
# bench, `convcg up`) inherits it and runs prometheus_client in multiprocess mode: every metric
# an mmap-backed file in a directory its parent deletes on exit, each observation several times
# dearer (seen as ~5% of the features sink's CPU). Only Feast's own feature server wants that.
for _var in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
    if os.path.basename(os.environ.get(_var, "").rstrip("/")).startswith("feast_metrics_"):
        del os.environ[_var]

#: component module -> names of the click commands it exports
COMPONENT_COMMANDS: dict[str, tuple[str, ...]] = {
    "convcg.kafka.broker_cli": ("broker",),
    "convcg.deadletters_cli": ("deadletters",),
    "streams.cli": ("replay", "worker", "aggregates", "labels", "watermarks"),
    "features.cli": ("features", "dataset"),
    "training.cli": ("train", "finetune", "trainer", "registry"),
    "index_refresher.cli": ("refresher", "index"),
    "retrieval.cli": ("retrieval",),
    "loop.up": ("up",),
    "loop.eval": ("eval",),
}


class RetriedCoordinatorLookup(logging.Filter):
    """aiokafka logs a failed group-coordinator lookup at ERROR although it retries it; on a new
    broker the first lookup of every group fails so while ``__consumer_offsets`` is created. A
    WARNING, so that a normal start logs no ERROR (a lookup that keeps failing still shows)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "GroupCoordinatorNotAvailableError" in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """convcg: conversion candidate generation, streaming features and labels."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "aiokafka", "faust", "mode", "urllib3", "feast", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    if not any(isinstance(f, RetriedCoordinatorLookup) for f in coordinator.filters):
        coordinator.addFilter(RetriedCoordinatorLookup())


def _register() -> None:
    for module_name, names in COMPONENT_COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # component not built yet
                continue
            raise
        for name in names:
            cmd = getattr(module, f"{name}_command", None) or getattr(module, name, None)
            if isinstance(cmd, click.Command):
                main.add_command(cmd, name=name)


_register()

if __name__ == "__main__":
    main()
