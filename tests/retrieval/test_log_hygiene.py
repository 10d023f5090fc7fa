"""Logs a reader can use: every module logs under its own import path (``logging.getLogger(
__name__)``); a normal start of the retrieval service logs no ERROR and none of FAISS's loader
probing; training progress bars stay off a log file (one INFO line per epoch instead)."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("convcg", "model", "registry", "streams", "features", "training", "index_refresher", "retrieval",
              "loop")


def logger_name_violations(folder: Path) -> list[str]:
    """``getLogger`` calls under ``folder`` that name a project logger other than by ``__name__``:
    a module-level ``log = logging.getLogger(...)`` must pass ``__name__``; a string literal may
    only name a third-party logger (to quiet it)."""
    bad = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        module_level = {id(node.value) for node in tree.body if isinstance(node, ast.Assign)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                    == "getLogger" and node.args):
                continue
            arg = node.args[0]
            where = f"{path.relative_to(folder.parent)}:{node.lineno}"
            if isinstance(arg, ast.Name) and arg.id == "__name__":
                continue
            if id(node) in module_level:
                bad.append(f"{where}: module logger not named __name__")
            elif isinstance(arg, ast.Constant) and str(arg.value).split(".")[0] in (*PRODUCTION, "up", "eval"):
                bad.append(f"{where}: names project logger {arg.value!r}")
    return bad


@pytest.mark.parametrize("package", PRODUCTION)
def test_every_module_logs_under_its_import_path(package):
    bad = logger_name_violations(ROOT / package)
    assert not bad, "\n".join(bad)


def test_the_logger_check_sees_a_hand_named_logger(tmp_path):
    pkg = tmp_path / "streams"
    pkg.mkdir()
    (pkg / "good.py").write_text("import logging\nlog = logging.getLogger(__name__)\n"
                                 "def f():\n    logging.getLogger('httpx').setLevel(30)\n")
    (pkg / "bad.py").write_text("import logging\nlog = logging.getLogger('convcg.streams.output')\n"
                                "def f():\n    return logging.getLogger('streams.other')\n")
    assert logger_name_violations(pkg) == ["streams/bad.py:2: module logger not named __name__",
                                           "streams/bad.py:4: names project logger 'streams.other'"]


def test_training_progress_is_one_info_line_per_epoch_off_a_terminal(capfd, caplog):
    from training.synthetic import synthetic_catalog, synthetic_labels
    from training.trainer.step import train_full

    assert not sys.stderr.isatty()  # as in a component's log file
    catalog = synthetic_catalog(80)
    labels = synthetic_labels(catalog, n_users=30, n_labels=400, seed=0)
    with caplog.at_level(logging.INFO, logger="training.learn.fit"):
        train_full(labels, catalog, _tiny_config(), epochs=3, batch_size=64, evaluate_holdout=False,
                   show_progress=True)
    err = capfd.readouterr().err
    assert "batch/s" not in err and "\r" not in err, err[:300]  # no tqdm frame
    epochs = [r.getMessage() for r in caplog.records if r.name == "training.learn.fit"]
    assert [m.split(":")[0] for m in epochs] == [f"full train epoch {i}/3" for i in (1, 2, 3)]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "training.learn.fit")


def _tiny_config():
    from model.config import ModelConfig, TowerConfig

    tower = TowerConfig(cross_layers=1, mlp_layers=1, mlp_width=32)
    return ModelConfig(embedding_dim=16, id_dim=8, user_buckets=512, item_buckets=1024, advertiser_buckets=128,
                       category_buckets=64, recent_items=5, query_tower=tower, item_tower=tower)


def _trained_registry(root: Path) -> str:
    """A registry with one genuinely trained tiny version and its index artifact."""
    from index_refresher.builder import build_artifact
    from index_refresher.settings import RefresherSettings
    from registry.serving_model import registry_model_loader
    from registry.store import ModelRegistry
    from training.synthetic import synthetic_catalog, synthetic_labels
    from training.trainer.step import train_full

    catalog = synthetic_catalog(120)
    result = train_full(synthetic_labels(catalog, n_users=30, n_labels=400), catalog, _tiny_config(), epochs=1,
                        batch_size=128, evaluate_holdout=False, show_progress=False)
    version = ModelRegistry(root).publish(result.model, result.model.config, result.metrics, result.data_range)
    settings = RefresherSettings(registry_root=root, index_root=root / "indexes")
    build_artifact(registry_model_loader(root)(version), settings, catalog=catalog, progress=False)
    return version


def _serve_and_read_log(registry: Path, log_path: Path, until: str) -> str:
    """Start `convcg retrieval serve --registry ...` with its stderr in ``log_path`` (as `convcg
    up` runs it), wait for ``until`` in the log and for /health, stop it; the log's text."""
    from convcg.kafka.broker import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CONVCG_INDEX_INDEX_ROOT", None)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "loop.cli", "retrieval", "serve", "--registry", str(registry),
                                 "--port", str(port)], stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = log_path.read_text()
            if until in text and _answers(f"http://127.0.0.1:{port}/health"):
                return log_path.read_text()
            assert proc.poll() is None, f"retrieval serve exited {proc.returncode}:\n{text}"
            time.sleep(0.2)
        raise AssertionError(f"{until!r} not logged in 120 s:\n{log_path.read_text()}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    """The server answers HTTP at ``url`` (503 included: serving nothing yet is an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _assert_clean(text: str) -> None:
    assert " ERROR " not in text and "Traceback" not in text, text
    assert "ModuleNotFoundError" not in text and "faiss.loader" not in text, text


def test_retrieval_starts_on_an_empty_registry_without_an_error(tmp_path):
    text = _serve_and_read_log(tmp_path / "registry", tmp_path / "retrieval.log", "retrieval service on")
    assert "nothing to load at start" in text and "no model version yet" in text
    _assert_clean(text)


def test_retrieval_starts_on_a_trained_registry_without_an_error_or_faiss_noise(tmp_path):
    version = _trained_registry(tmp_path / "registry")
    text = _serve_and_read_log(tmp_path / "registry", tmp_path / "retrieval.log", f"serving model {version}")
    _assert_clean(text)


def test_a_trained_registry_without_an_index_yet_is_a_routine_start(tmp_path):
    from registry.store import ModelRegistry
    from retrieval.cli import nothing_to_load

    version = _trained_registry(tmp_path / "registry")
    assert nothing_to_load(tmp_path / "registry", tmp_path / "registry" / "indexes") is None
    assert nothing_to_load(tmp_path / "registry", tmp_path / "elsewhere") == f"no index artifact for model {version} yet"
    assert ModelRegistry(tmp_path / "empty").current_version() is None
    assert "no model version yet" in nothing_to_load(tmp_path / "empty", tmp_path / "empty" / "indexes")


def test_a_retried_coordinator_lookup_is_a_warning_not_an_error(caplog):
    from click.testing import CliRunner

    from loop.cli import main

    assert CliRunner().invoke(main, ["labels", "--help"]).exit_code == 0  # main sets the logging up
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    with caplog.at_level(logging.WARNING, logger="aiokafka.consumer.group_coordinator"):
        coordinator.error("Group Coordinator Request failed: %s", "[Error 15] GroupCoordinatorNotAvailableError")
        coordinator.error("Error sending JoinGroupRequest_v5 to node 1 [Error 7] RequestTimedOutError")
    assert [(r.levelname, r.getMessage()[:12]) for r in caplog.records] == [
        ("WARNING", "Group Coordi"), ("ERROR", "Error sendin")]
