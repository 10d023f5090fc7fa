"""The retrieval service's HTTP client of the features service: keep-alive, a stale connection
retried once on a fresh one, a timeout not retried, failures never failing the query."""

from __future__ import annotations

import socket
import threading
import time

import orjson
import pytest

from retrieval.user_features import HttpUserFeatureSource

BODY = orjson.dumps({"results": [{"entity_id": "u1", "features": {"ctr_7d": 0.25, "cvr_7d": None}}]})


class RawServer:
    """A socket server answering each request with ``BODY``; ``mode``: ``keep`` (keep-alive),
    ``close`` (answer, then drop the connection without saying so: a keep-alive connection the
    server timed out), ``hang`` (read the request, never answer), ``status:<n>``."""

    def __init__(self, mode: str):
        self.mode = mode
        self.connections = 0
        self.requests = 0
        self.paths: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.requests += 1
                self.paths.append(head.split(b" ")[1].decode())
                if self.mode == "hang":
                    continue
                status = int(self.mode.split(":")[1]) if self.mode.startswith("status:") else 200
                conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (status, len(BODY), BODY))
                if self.mode == "close":
                    conn.close()
                    return

    def close(self) -> None:
        self.sock.close()
        for c in self._open:
            c.close()


@pytest.fixture
def server(request):
    s = RawServer(request.param)
    yield s
    s.close()


@pytest.mark.parametrize("server", ["keep"], indirect=True)
def test_lookups_share_one_keep_alive_connection_per_thread(server):
    source = HttpUserFeatureSource(f"http://127.0.0.1:{server.port}/prefix", timeout_s=5, token="t")
    assert [source.get("u 1") for _ in range(3)] == [{"ctr_7d": 0.25}] * 3  # None dropped
    assert server.connections == 1 and server.requests == 3
    assert server.paths[0] == "/prefix/online-features/user_stream/u%201"
    other = threading.Thread(target=source.get, args=("u2",))
    other.start()
    other.join()
    assert server.connections == 2  # a thread of its own gets its own connection


@pytest.mark.parametrize("server", ["close"], indirect=True)
def test_a_connection_the_server_dropped_is_retried_once_on_a_fresh_one(server):
    failures = []
    source = HttpUserFeatureSource(f"http://127.0.0.1:{server.port}", timeout_s=5,
                                   on_failure=lambda: failures.append(1))
    for _ in range(3):
        assert source.get("u1") == {"ctr_7d": 0.25}
        time.sleep(0.05)  # let the server's close arrive, as an idle timeout's would
    assert failures == [] and server.connections == 3


@pytest.mark.parametrize("server", ["hang"], indirect=True)
def test_a_timeout_is_a_failure_served_without_features_and_not_retried(server):
    failures = []
    source = HttpUserFeatureSource(f"http://127.0.0.1:{server.port}", timeout_s=0.2,
                                   on_failure=lambda: failures.append(1))
    assert source.get("u1") == {}
    assert failures == [1] and server.requests == 1


@pytest.mark.parametrize("server", ["status:404", "status:401"], indirect=True)
def test_404_is_no_features_and_other_statuses_are_failures(server):
    failures = []
    source = HttpUserFeatureSource(f"http://127.0.0.1:{server.port}", timeout_s=5,
                                   on_failure=lambda: failures.append(1))
    assert source.get("u1") == {}
    assert failures == ([] if server.mode == "status:404" else [1])


def test_refuses_a_url_it_cannot_call():
    with pytest.raises(ValueError):
        HttpUserFeatureSource("127.0.0.1:8610")
