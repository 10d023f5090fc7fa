"""Which write failures the sink retries, and how a batch that fails on its data is split.

A store that is down, slow or full fails every write the same way until it is back: the sink
keeps the batch and retries it with backoff, committing nothing meanwhile (``is_transient``).
Any other failure is taken to be about the data of some record in the batch (a value no store
type holds, a timestamp no ``datetime`` holds...), and retrying it would fail forever. Such a
batch is bisected (``split_on_data_errors``): the halves that write are written, and each record
that fails alone is handed back, to be dead-lettered with its reason.

Pure: no I/O of its own (the caller's ``write`` does it).
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: OS errors of a store or disk that may heal on their own (space freed, a mount back, a
#: folder repaired); EOVERFLOW / EINVAL, which ``datetime`` raises for a timestamp it cannot
#: hold, are about the data and are not here
TRANSIENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EROFS, errno.ENOTDIR,
    errno.EEXIST, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EMFILE, errno.ENFILE,
    errno.ENOMEM, errno.EINTR, errno.ESTALE, errno.ENOTCONN, errno.EPIPE,
})
#: Redis error replies that say the server, not the command, is the problem for now
TRANSIENT_REDIS_REPLIES = ("OOM", "MISCONF", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN",
                           "CLUSTERDOWN", "NOREPLICAS")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the store (Redis, SQLite, the disk, the broker) is unavailable for
    now, so the same write may succeed later."""
    import redis.exceptions as redis_errors

    if isinstance(exc, (ConnectionError, TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError,
                        sqlite3.OperationalError)):
        return True
    if isinstance(exc, redis_errors.ResponseError):
        return str(exc).startswith(TRANSIENT_REDIS_REPLIES)
    if isinstance(exc, OSError):
        return exc.errno in TRANSIENT_ERRNOS
    try:
        from aiokafka.errors import KafkaError
    except ImportError:  # pragma: no cover - aiokafka is a dependency
        return False
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def split_on_data_errors(items: Sequence[T], write: Callable[[Sequence[T]], R],
                         transient: Callable[[BaseException], bool] = is_transient,
                         ) -> tuple[list[R], list[tuple[T, BaseException]]]:
    """``write(items)``; if it fails on data, ``write`` each half, and so on down to single
    items. Returns the results of the writes that succeeded and each item that failed alone with
    its exception. A transient failure is raised at once (the caller retries the whole batch)."""
    if not items:
        return [], []
    try:
        return [write(items)], []
    except Exception as exc:
        if transient(exc):
            raise
        if len(items) == 1:
            return [], [(items[0], exc)]
    mid = len(items) // 2
    left_done, left_failed = split_on_data_errors(items[:mid], write, transient)
    right_done, right_failed = split_on_data_errors(items[mid:], write, transient)
    return left_done + right_done, left_failed + right_failed
