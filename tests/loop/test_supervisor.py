"""loop.supervisor.Component, the one process launcher: ``python -m`` any module, with extra or
only the given environment, a working directory, output to a log file, exit code and stop."""

from __future__ import annotations

import sys

from loop.supervisor import Component


def test_runs_a_module_with_its_environment_cwd_and_log(tmp_path):
    marker = tmp_path / "on-the-path"
    log = tmp_path / "logs" / "site.log"
    # `python -m site` prints sys.path: the working directory (for -m) and PYTHONPATH show in it
    c = Component("site", [], {"PYTHONPATH": str(marker)}, log, module="site", cwd=tmp_path).start()
    assert c.wait(60) == 0 and c.returncode == 0 and not c.alive
    text = log.read_text()
    assert f"'{marker}'" in text and f"'{tmp_path}'" in text
    assert c.tail(1) == text.splitlines()[-1]


def print_env(name: str, **kw) -> Component:
    """A component whose module (timeit, running one statement) prints CONVCG_SUPERVISOR_TEST."""
    statement = "import os; print('VALUE=' + os.environ.get('CONVCG_SUPERVISOR_TEST', 'absent'))"
    return Component(name, ["-n", "1", "-r", "1", statement], {}, kw.pop("log"), module="timeit", **kw)


def test_env_is_added_to_ours_or_given_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVCG_SUPERVISOR_TEST", "inherited")
    inherited = print_env("inherited", log=tmp_path / "inherited.log").start()
    alone = print_env("alone", log=tmp_path / "alone.log", inherit_env=False).start()
    overridden = print_env("overridden", log=tmp_path / "overridden.log")
    overridden.env = {"CONVCG_SUPERVISOR_TEST": "given"}
    overridden.start()
    assert inherited.wait(60) == alone.wait(60) == overridden.wait(60) == 0
    assert "VALUE=inherited" in (tmp_path / "inherited.log").read_text()
    assert "VALUE=absent" in (tmp_path / "alone.log").read_text()
    assert "VALUE=given" in (tmp_path / "overridden.log").read_text()
    assert alone.command[:3] == [sys.executable, "-m", "timeit"]


def test_stop_ends_a_running_process_and_its_exit_code_shows(tmp_path):
    # `python -m http.server` runs until stopped
    c = Component("http", ["0", "--bind", "127.0.0.1"], {}, tmp_path / "http.log", module="http.server",
                  stop_timeout_s=10).start()
    assert c.alive and c.pid
    c.stop()
    assert not c.alive and c.returncode != 0
    killed = Component("http", ["0", "--bind", "127.0.0.1"], {}, tmp_path / "http2.log", module="http.server").start()
    killed.stop(kill=True)
    assert killed.returncode == -9
