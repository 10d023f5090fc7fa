"""The on-disk model registry: publish, load, embed, rollback, refusing broken versions."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from model.towers import TwoTowerModel
from registry.store import MANIFEST, WEIGHTS, ModelRegistry, RegistryError
from tests.support.tiny_models import tiny_config, train_tiny_model_for_tests
from training.cli import registry_command
from training.evaluation.protocol import HEADLINE
from training.synthetic import synthetic_catalog


@pytest.fixture(scope="module")
def catalog():
    return synthetic_catalog(120)


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory, catalog):
    root = tmp_path_factory.mktemp("registry")
    train_tiny_model_for_tests(root, catalog, seed=0)
    return root


def test_tiny_model_is_published_and_embeds(trained_root, catalog):
    reg = ModelRegistry(trained_root)
    assert reg.versions() == ["v000001"] and reg.current_version() == "v000001"
    model = reg.load()
    assert model.version == "v000001" and model.dim == 16
    emb = model.embed_items(catalog, batch_size=50)  # several batches
    assert emb.shape == (len(catalog), 16) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # row order is catalog order
    reversed_emb = model.embed_items(catalog.iloc[::-1].reset_index(drop=True))
    assert np.allclose(reversed_emb[::-1], emb, atol=1e-6)
    # streaming item features change the embedding only if the model was trained with them
    q = model.embed_queries([{"user_id": "u1", "surface": "home"},
                             {"user_id": "nobody", "surface": "related", "recent_items": ["i3", "i9"]}])
    assert q.shape == (2, 16) and np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(q[0], q[1])
    assert model.embed_queries([]).shape == (0, 16)


def test_item_features_are_joined_by_item_id(tmp_path, catalog):
    config = tiny_config(item_features=["item__impressions_1d"])
    reg = ModelRegistry(tmp_path)
    reg.publish(TwoTowerModel(config), config, {}, {})
    model = reg.load()
    features = catalog[["item_id"]].assign(item__impressions_1d=np.arange(len(catalog)) * 10.0)
    with_f = model.embed_items(catalog, features.iloc[::-1])  # order of features does not matter
    without = model.embed_items(catalog)
    assert with_f.shape == without.shape
    assert np.allclose(with_f[0], without[0], atol=1e-6)  # feature value 0 == missing
    assert not np.allclose(with_f[5], without[5])


def test_publish_rollback_and_versions_order(tmp_path):
    config = tiny_config()
    reg = ModelRegistry(tmp_path)
    assert reg.current_version() is None and reg.versions() == []
    with pytest.raises(RegistryError, match="no current version"):
        reg.load()
    ids = [reg.publish(TwoTowerModel(config), config, {"i": i}, {"labels": i}) for i in range(3)]
    assert ids == ["v000001", "v000002", "v000003"] == reg.versions()
    assert reg.current_version() == "v000003"
    assert reg.load().metrics == {"i": 2} and reg.load("v000001").data_range == {"labels": 0}
    assert reg.rollback() == "v000002" and reg.current_version() == "v000002"
    assert reg.rollback() == "v000001"
    with pytest.raises(RegistryError, match="no loadable version before"):
        reg.rollback()
    assert reg.current_version() == "v000001"
    # a new publish gets a fresh number and becomes current
    assert reg.publish(TwoTowerModel(config), config, {}, {}) == "v000004"


def test_corrupted_weights_are_refused_and_current_stays(tmp_path):
    config = tiny_config()
    reg = ModelRegistry(tmp_path)
    good = reg.publish(TwoTowerModel(config), config, {}, {})
    bad = reg.publish(TwoTowerModel(config), config, {}, {})
    weights = reg.versions_dir / bad / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="checksum mismatch"):
        reg.load(bad)
    with pytest.raises(RegistryError):
        reg.set_current(bad)
    # a checksum forged to match garbage is still refused (unreadable tensors)
    weights.write_bytes(b"not a safetensors file")
    manifest = json.loads((reg.versions_dir / bad / MANIFEST).read_text())
    import hashlib
    manifest["weights_sha256"] = hashlib.sha256(b"not a safetensors file").hexdigest()
    (reg.versions_dir / bad / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="unreadable"):
        reg.load(bad)
    assert reg.rollback() == good
    assert reg.load().version == good


def test_incompatible_checkpoints_are_refused(tmp_path):
    config = tiny_config()
    reg = ModelRegistry(tmp_path)
    v = reg.publish(TwoTowerModel(config), config, {}, {})
    folder = reg.versions_dir / v
    cfg = json.loads((folder / "config.json").read_text())
    cfg["embedding_dim"] = 32  # weights no longer fit the config
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RegistryError, match="incompatible"):
        reg.load(v)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["format_version"] = 999
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="format 999"):
        reg.load(v)
    with pytest.raises(RegistryError, match="does not exist"):
        reg.load("v999999")


def test_registry_cli_list_and_rollback(tmp_path):
    config = tiny_config()
    reg = ModelRegistry(tmp_path)
    reg.publish(TwoTowerModel(config), config, {HEADLINE: 0.5}, {"mode": "full"})
    reg.publish(TwoTowerModel(config), config, {HEADLINE: 0.6}, {"mode": "finetune"})
    runner = CliRunner()
    out = runner.invoke(registry_command, ["list", "--registry", str(tmp_path)])
    assert out.exit_code == 0, out.output
    lines = out.output.rstrip().splitlines()
    assert lines[0].startswith("  v000001") and "0.5000" in lines[0]
    assert lines[1].startswith("* v000002") and "mode=finetune" in lines[1]
    out = runner.invoke(registry_command, ["rollback", "--registry", str(tmp_path)])
    assert out.exit_code == 0 and "v000001" in out.output
    out = runner.invoke(registry_command, ["rollback", "--registry", str(tmp_path)])
    assert out.exit_code != 0 and "no loadable version" in out.output
    assert reg.current_version() == "v000001"
