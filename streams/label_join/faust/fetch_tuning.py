"""`tune_fetches`: the fetch wait and size of the Faust worker's running aiokafka consumer."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def tune_fetches(app: Any, wait_ms: int, min_bytes: int) -> None:
    """Faust builds its aiokafka consumer with a fixed ``fetch_max_wait_ms=1500`` and
    ``fetch_min_bytes=1``: a fetch per trickle of records. There is no setting for either, so
    the running consumer's fetcher is told directly (aiokafka reads both per fetch request):
    wait for ``min_bytes``, but never longer than ``wait_ms``."""
    thread = getattr(app.consumer, "_thread", None)
    fetcher = getattr(getattr(thread, "_consumer", None), "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms") or not hasattr(fetcher, "_fetch_min_bytes"):
        log.warning("cannot set the consumer's fetch wait (Faust/aiokafka internals changed)")
        return
    fetcher._fetch_max_wait_ms = wait_ms
    fetcher._fetch_min_bytes = min_bytes
