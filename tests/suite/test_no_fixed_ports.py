"""The suite assumes no service at a fixed port: conftest's tripwire listens on 6379 and 5432
for the whole session and fails the run if anything connects. These check the tripwire."""

import socket

from tests.conftest import FIXED_PORTS, _tripwire
from tests.support.port_tripwire import PortTripwire


def test_the_session_tripwire_watches_every_fixed_port():
    assert not _tripwire.unwatched, (
        f"something already listens on {sorted(_tripwire.unwatched)}: stop it (e.g. `service redis-server stop`), "
        "the suite starts its own private servers")
    assert _tripwire.watched == sorted(FIXED_PORTS)


def test_a_tripwire_records_a_connection():
    from convcg.kafka.broker import free_port

    port = free_port()
    wire = PortTripwire((port,))
    wire.start()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        import time

        deadline = time.monotonic() + 5
        while not wire.hits and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        wire.stop()
    assert wire.hits == [port]
