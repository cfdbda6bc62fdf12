"""config.yaml: defaults, per-model sections, environment overrides, errors."""

from __future__ import annotations

import pytest

from alectio_core.config import load_config
from alectio_core.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALECTIO_CONFIG", raising=False)
    monkeypatch.delenv("ALECTIO_STORAGE", raising=False)
    config = load_config()
    assert config.storage == "sqlite:///alectio.db"
    assert config.server["host"] == "127.0.0.1" and config.server["port"] == 5000
    assert config.model_config("anything") == {}


def test_values_model_sections_and_env_overrides(tmp_path, monkeypatch):
    path = write(
        tmp_path,
        "storage: sqlite:///x.db\nserver:\n  port: 8080\nmodels:\n  digits_lr:\n    max_iter: 50\n    layers: [1, 2]\n",
    )
    monkeypatch.delenv("ALECTIO_STORAGE", raising=False)
    monkeypatch.setenv("ALECTIO_CONFIG", str(path))
    config = load_config()
    assert config.storage == "sqlite:///x.db" and config.server["port"] == 8080
    section = config.model_config("digits_lr")
    assert section == {"max_iter": 50, "layers": [1, 2]}
    section["max_iter"] = 1  # a hook changing its config does not change the next loop's
    assert config.model_config("digits_lr")["max_iter"] == 50
    monkeypatch.setenv("ALECTIO_STORAGE", "sqlite:///override.db")
    assert load_config(path).storage == "sqlite:///override.db"


@pytest.mark.parametrize(
    "text, message",
    [
        ("storge: x\n", "unknown key 'storge'"),
        ("server:\n  prot: 1\n", "unknown key 'server.prot'"),
        ("server:\n  port: eighty\n", "key 'server.port' must be int, got str 'eighty'"),
        ("server:\n  port: true\n", "key 'server.port' must be int"),
        ("storage: [1]\n", "key 'storage' must be str"),
        ("models:\n  m: 3\n", "key 'models.m' must be a mapping"),
        ("server: 5\n", "key 'server' must be a mapping"),
        ("server:\n  log_level: loud\n", "key 'server.log_level' must be one of"),
        ("server:\n  lease_seconds: 0\n", "key 'server.lease_seconds' must be > 0"),
        ("server:\n  lease_seconds: soon\n", "key 'server.lease_seconds' must be float"),
        ("a: [\n", "not valid YAML"),
        ("!!python/object:os.system {}\n", "not valid YAML"),  # safe_load refuses objects
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")
