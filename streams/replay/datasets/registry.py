"""`load_log(name, **options)`: one entry point for every event log source."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from streams.replay.datasets.event_log import EventLog, read_jsonl

LOADERS: dict[str, str] = {
    "movielens-100k": "streams.replay.datasets.movielens:movielens_100k",
    "movielens-1m": "streams.replay.datasets.movielens_1m:movielens_1m",
    "open-bandit": "streams.replay.datasets.open_bandit:open_bandit",
    "synthetic": "streams.replay.datasets.synthetic:synthetic",
}


def _loader(name: str) -> Callable[..., EventLog]:
    import importlib

    module, _, func = LOADERS[name].partition(":")
    return getattr(importlib.import_module(module), func)


def load_log(name: str, **options) -> EventLog:
    """A named dataset (``movielens-100k``, ``movielens-1m``, ``open-bandit``, ``synthetic``; ``options`` go to
    its loader) or the path of a JSONL event file (``event_type`` field on each line)."""
    if name in LOADERS:
        return _loader(name)(**options)
    path = Path(name)
    if path.is_file():
        if options:
            raise ValueError(f"a JSONL log takes no options, got {sorted(options)}")
        return read_jsonl(path)
    raise ValueError(f"unknown event log {name!r}: not one of {', '.join(LOADERS)} and no such file")
