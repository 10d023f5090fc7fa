"""Model versions and index artifacts are read only from inside their roots: bad version names
and symbolic links that lead outside are refused (registry, index artifacts, `/admin/load`,
`convcg registry rollback`, `convcg index load`), over real tiny models and real FAISS."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from loop.cli import main
from registry.containment import OutsideRoot, check_version_name, contained
from registry.index_artifact import (
    INDEX_FILE,
    ArtifactError,
    find_artifact,
    list_artifacts,
    load_artifact,
)
from registry.store import CURRENT, WEIGHTS, ModelRegistry, RegistryError
from retrieval.service import build_service, create_app
from tests.support.index_rigs import tiny_registry
from tests.support.tiny_models import train_tiny_model_for_tests

BAD_NAMES = ["../x", "..", ".", "/etc", "/", "", "a/b", "v1/../../x", ".hidden", "v\x00", "a\\..\\b", "~root",
             " v1", "v1\n", "x" * 200]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("containment")
    settings, catalog, paths = tiny_registry(base / "root", n_items=150)
    outside = base / "outside"  # a valid registry and index tree, outside the configured roots
    shutil.copytree(settings.registry_root, outside / "registry")
    return settings, catalog, [p.parent.name for p in paths], [p.name for p in paths], outside


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_are_not_plain_version_names_are_refused(tmp_path, name):
    with pytest.raises(OutsideRoot, match="not a plain version name"):
        check_version_name(name)
    with pytest.raises(OutsideRoot):
        contained(tmp_path, name)


def test_plain_names_stay_inside_and_links_out_are_caught(tmp_path):
    for name in ("v000001", "ix20250101T000000000000", "model-2.1_b"):
        assert contained(tmp_path, name) == tmp_path / name
    (tmp_path / "elsewhere").mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "v000001").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutsideRoot, match="leads outside"):
        contained(root, "v000001")
    linked_root = tmp_path / "linked-root"  # a root that is itself a link is fine
    linked_root.symlink_to(root)
    (root / "v000002").mkdir()
    assert contained(linked_root, "v000002") == linked_root / "v000002"


@pytest.mark.parametrize("name", ["../outside/registry/versions/v000001", "/etc", ".."])
def test_registry_load_refuses_names_leading_outside(world, name):
    settings = world[0]
    with pytest.raises(RegistryError, match="not a plain version name"):
        ModelRegistry(settings.registry_root).load(name)


def test_registry_refuses_a_version_folder_linking_outside_and_rollback_skips_it(world, tmp_path):
    settings, catalog, (v1, v2), _, outside = world
    root = tmp_path / "registry"
    shutil.copytree(settings.registry_root, root, symlinks=True)
    v3 = train_tiny_model_for_tests(root, catalog, seed=3)  # current: v3; before it v2, v1
    shutil.rmtree(root / "versions" / v2)
    (root / "versions" / v2).symlink_to(outside / "registry" / "versions" / v2)  # loadable, but outside
    registry = ModelRegistry(root)
    assert ModelRegistry(outside / "registry").load(v2).version == v2  # a genuine model there
    with pytest.raises(RegistryError, match="leads outside"):
        registry.load(v2)
    with pytest.raises(RegistryError, match="leads outside"):
        registry.set_current(v2)
    result = CliRunner().invoke(main, ["registry", "rollback", "--registry", str(root)])
    assert result.exit_code == 0, result.output
    assert f"current version is now {v1}" in result.output  # v2 skipped: it leads outside
    assert registry.current_version() == v1 != v3


def test_registry_refuses_a_weights_file_linking_outside_and_a_tampered_current(world, tmp_path):
    settings, _, (v1, v2), _, outside = world
    root = tmp_path / "registry"
    shutil.copytree(settings.registry_root, root)
    weights = root / "versions" / v1 / WEIGHTS
    weights.unlink()
    weights.symlink_to(outside / "registry" / "versions" / v1 / WEIGHTS)  # same bytes, checksum matches
    with pytest.raises(RegistryError, match="links outside its folder"):
        ModelRegistry(root).load(v1)
    tampered = "../../outside/registry/versions/v000001"
    (root / CURRENT).write_text(tampered + "\n")
    with pytest.raises(RegistryError, match="not a plain version name"):
        ModelRegistry(root).load(tampered)
    # the current version cannot be loaded: the newest loadable one inside serves instead (v1
    # links outside: skipped); nothing outside the root is read
    assert ModelRegistry(root).load().version == v2


def test_index_artifacts_are_found_only_inside_the_index_root(world, tmp_path):
    settings, _, (v1, _), (ix1, _), outside = world
    index_root = tmp_path / "indexes"
    shutil.copytree(settings.index_root, index_root)
    outside_artifact = outside / "registry" / "indexes" / v1 / ix1
    assert load_artifact(outside_artifact, v1).count == 150  # a genuine artifact there
    for bad in ("../x", "/tmp", f"../../outside/registry/indexes/{v1}/{ix1}"):
        with pytest.raises(ArtifactError) as err:
            find_artifact(index_root, v1, bad)
        assert err.value.reason == "outside_root"
    with pytest.raises(ArtifactError):
        find_artifact(index_root, "../outside", None)
    # an artifact folder that is a link to the outside copy
    (index_root / v1 / "ix-linked").symlink_to(outside_artifact)
    with pytest.raises(ArtifactError, match="leads outside") as err:
        find_artifact(index_root, v1, "ix-linked")
    assert err.value.reason == "outside_root"
    assert [p.name for p in list_artifacts(index_root, v1)] == [ix1]  # the link is not listed
    # a file inside a real artifact that links outside (same bytes: checksums would match)
    own = index_root / v1 / ix1 / INDEX_FILE
    own.unlink()
    own.symlink_to(outside_artifact / INDEX_FILE)
    with pytest.raises(ArtifactError, match="links outside") as err:
        load_artifact(index_root / v1 / ix1, v1)
    assert err.value.reason == "outside_root"


def test_admin_load_refuses_names_and_links_leading_outside_with_4xx(world, tmp_path):
    settings, _, (v1, v2), (ix1, ix2), outside = world
    (settings.index_root / v2 / "ix-escape").symlink_to(outside / "registry" / "indexes" / v2 / ix2)
    try:
        service = build_service(settings)
        service.loader.load(v1)
        with TestClient(create_app(service)) as client:
            for body in ({"model_version": "../outside"}, {"model_version": "/etc"},
                         {"model_version": v2, "index_version": "../" + ix1}, {"index_version": "a\x00b"},
                         {"model_version": 7}, {"model_version": ""}):
                r = client.post("/admin/load", json=body)
                assert r.status_code == 400 and "plain version name" in r.json()["error"], (body, r.text)
            r = client.post("/admin/load", json={"model_version": v2, "index_version": "ix-escape"})
            assert r.status_code == 409 and r.json()["reason"] == "outside_root", r.text
            assert "leads outside" in r.json()["error"]
            assert service.state.current.model_version == v1  # still serving what it served
    finally:
        (settings.index_root / v2 / "ix-escape").unlink()


def test_index_load_command_refuses_bad_names_before_calling_the_service():
    runner = CliRunner()
    for option, value in (("--model-version", "../x"), ("--index-version", "/etc/passwd")):
        # the URL answers nothing: the refusal happens before any call
        result = runner.invoke(main, ["index", "load", option, value, "--url", "http://127.0.0.1:9"])
        assert result.exit_code == 2, result.output
        assert "plain version name" in result.output and "unreachable" not in result.output
