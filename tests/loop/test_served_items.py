"""convcg up's served items ask the retriever as of the replay's event time, and replace only
the unengaged MovieLens slots."""

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loop.freshness import SendLog
from loop.live import ServedItems, _is_unengaged_slot, serve_negatives


@pytest.fixture()
def retrieve_server():
    """An HTTP endpoint answering /retrieve like the retrieval service, recording each query."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            url = urllib.parse.urlsplit(self.path)
            seen.append(dict(urllib.parse.parse_qsl(url.query)))
            body = json.dumps({"items": [{"item_id": "i1"}, {"item_id": "i2"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_queries_carry_the_replay_event_time_as_as_of(retrieve_server):
    url, seen = retrieve_server
    sends = SendLog()
    served = ServedItems(url, 2, ["u1", "u2"], lambda: sends.latest() or 875_000_000.0)
    served.load("v1")
    assert [q["as_of"] for q in seen] == ["875000000.0", "875000000.0"]  # before the first send
    sends.record(889_237_269.5, 1.0)
    served.load("v2")
    assert float(seen[-1]["as_of"]) == 889_237_269.5 and seen[-1]["user_id"] == "u2"
    assert served.for_user("u1") == ["i1", "i2"] and served.queries == 4 and served.failures == 0


def test_without_an_event_clock_the_service_clock_is_used(retrieve_server):
    url, seen = retrieve_server
    ServedItems(url, 2, ["u1"]).load("v1")
    assert "as_of" not in seen[0] and seen[0]["k"] == "2"


def test_only_unengaged_movielens_slots_are_replaced_by_served_items():
    from convcg.contract import Impression

    class Served:
        def for_user(self, user_id):
            return ["i1", "i2", "i3"]

    events = [Impression("e0", "imp-u1-i9", 1.0, "u1", "i9", "a9", "home", 0),
              Impression("e1", "imp-u1-i9-n0", 1.1, "u1", "i5", "a5", "home", 1),
              Impression("e2", "imp-u1-i9-n1", 1.2, "u1", "i6", "a6", "home", 2)]
    out = serve_negatives(events, Served(), {"i1": "a1", "i2": "a2"})
    assert [e.item_id for e in out] == ["i9", "i1", "i2"]
    assert [e.advertiser_id for e in out] == ["a9", "a1", "a2"]
    assert [e.event_id for e in out] == ["e0", "e1", "e2"]  # ids and times unchanged
    assert not _is_unengaged_slot("imp-u1-i9") and _is_unengaged_slot("imp-u1-i9-n12")
