"""The ``broker`` marker: conftest gives it to every test that uses the session's broker, and the
tests that start a broker of their own carry it where they are written, so
``pytest -m "not broker"`` runs the suite that needs no Kafka."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPLAY = "tests/streams/replay/test_replay.py"
#: uses the ``broker`` fixture and has no marker written on it
THROUGH_THE_FIXTURE = f"{REPLAY}::test_replay_can_close_with_a_producer_watermark"
#: starts its own broker (``convcg up``), marked where it is written
OWN_BROKER = "tests/system/test_loop_end_to_end.py::test_up_runs_the_whole_loop_and_reports"
PURE = f"{REPLAY}::test_seconds_until_due_paces_by_event_time"


def collected(expression: str) -> set[str]:
    """Test ids that ``pytest -m EXPRESSION`` selects from the two files above."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-m", expression, REPLAY, OWN_BROKER.split("::")[0]],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode in (0, 5), out.stdout + out.stderr  # 5: nothing selected
    return {line.strip() for line in out.stdout.splitlines() if "::" in line}


def test_broker_tests_carry_the_marker_and_pure_ones_do_not():
    marked = collected("broker")
    assert {THROUGH_THE_FIXTURE, OWN_BROKER} <= marked
    assert PURE not in marked
    pure = collected("not broker")
    assert PURE in pure and not pure & {THROUGH_THE_FIXTURE, OWN_BROKER}
