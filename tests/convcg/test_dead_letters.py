"""One dead-letter shape for every writer (the contract), and ``convcg deadletters`` reading it."""

from __future__ import annotations

import base64

import orjson
from click.testing import CliRunner

from convcg.contract import DEAD_LETTER_COMPONENTS, DeadLetter
from convcg.deadletters_cli import group_dead_letters
from convcg.kafka.io import json_producer
from convcg.validation import dead_letter, decode_dead_letter


def test_dead_letter_round_trips_with_the_original_bytes():
    raw = b"\xff\xfe not utf-8 {"
    d = decode_dead_letter(dead_letter("trainer", "labels", 2, 17, raw, "invalid_label", "not JSON", 1.5))
    assert d == DeadLetter("trainer", "labels", 2, 17, "invalid_label", "not JSON",
                           base64.b64encode(raw).decode(), 1.5)
    assert base64.b64decode(d.original_b64) == raw
    assert decode_dead_letter(dead_letter("streams-worker", "t", 0, None, None, "r", "", 0)).offset == -1


def test_dead_letter_bytes_are_the_json_object_of_its_fields_in_order():
    for raw, offset, now in ((b'{"a": 1}', 3, 1700000000.25), (None, None, 0), (b"\x00\xff", 0, -1.0)):
        encoded = dead_letter("streams-worker", "impressions", 1, offset, raw, "dropped", "d\u00e9tail \"q\"", now)
        letter = DeadLetter("streams-worker", "impressions", 1, -1 if offset is None else offset, "dropped",
                            "d\u00e9tail \"q\"", base64.b64encode(raw or b"").decode(), now)
        assert encoded == orjson.dumps(letter.to_dict())
        assert list(orjson.loads(encoded)) == list(DeadLetter.__dataclass_fields__)


def test_groups_by_component_and_reason_largest_first_with_the_newest_example():
    def dl(component, reason, t, detail="", topic="x"):
        return DeadLetter(component, topic, 0, 0, reason, detail, "", t)

    letters = [dl("features-sink", "malformed_json", 1, "old"), dl("streams-worker", "malformed_json", 2),
               dl("features-sink", "malformed_json", 3, "new", topic="y"), dl("trainer", "invalid_label", 0)]
    groups = group_dead_letters(letters)
    assert [(g.component, g.reason, g.count) for g in groups] == [
        ("features-sink", "malformed_json", 2), ("streams-worker", "malformed_json", 1),
        ("trainer", "invalid_label", 1)]
    assert groups[0].example == "new" and groups[0].topics == ("x", "y")
    assert group_dead_letters([]) == []


def test_cli_shows_every_writers_dead_letters_grouped(broker, topics):
    from loop.cli import main

    producer = json_producer(broker.bootstrap)
    for i, component in enumerate(DEAD_LETTER_COMPONENTS * 2):
        producer.send(topics.dead_letters, value=dead_letter(component, topics.labels, 0, i, b"{", "malformed_json",
                                                             f"bad record {i}", float(i)))
    producer.send(topics.dead_letters, value=orjson.dumps({"some": "other shape"}))
    producer.flush()
    result = CliRunner().invoke(main, ["deadletters", "--bootstrap", broker.bootstrap, "--topic-prefix",
                                       topics.prefix, "--timeout", "10"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{2 * len(DEAD_LETTER_COMPONENTS)} dead letters (1 not in the dead-letter shape)"
    for component in DEAD_LETTER_COMPONENTS:
        assert any(component in line and "malformed_json" in line and line.split()[0] == "2" for line in lines)
