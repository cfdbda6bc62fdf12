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


# -- typos below the top level, as `alectio run` shows them --------------------------

from click.testing import CliRunner  # noqa: E402

from alectio_core.cli import cli  # noqa: E402


def run_with(tmp_path, text, model="digits_lr"):
    path = write(tmp_path, text)
    result = CliRunner().invoke(
        cli, ["run", model, "--loops", "1", "--initial", "3", "--strategy", "random", "--config", str(path), "--storage", f"sqlite:///{tmp_path}/a.db"]
    )
    return path, result


def test_a_top_level_typo_suggests_the_key(tmp_path):
    path, result = run_with(tmp_path, "storge: x.db\n")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {path}: unknown key 'storge' (did you mean 'storage'?); known keys: models, platform, server, storage, storage_options"
    ]


def test_a_section_for_a_model_that_is_not_installed_is_an_error(tmp_path):
    path, result = run_with(tmp_path, "models:\n  digits_lrr:\n    max_iter: 5\n")
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith(
        f"Error: {path}: key 'models.digits_lrr': no model 'digits_lrr' is installed (did you mean 'digits_lr'?); installed models: "
    )
    assert "digits_lr" in line.split("installed models: ")[1].split(", ")


def test_storage_options_for_a_backend_that_takes_none_are_an_error(tmp_path):
    path, result = run_with(tmp_path, "storage_options:\n  endpoint_url: http://127.0.0.1:9000\n")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: storage_options 'endpoint_url' given, but the sqlite backend takes none (sqlite:///{tmp_path}/a.db)"
    ]


@pytest.fixture
def declaring_model(fake_model):
    """A model that declares its settings in model_info."""
    seen = []

    def train(labeled, config):
        seen.append(dict(config))
        return {"labels": [i % 2 for i in labeled]}

    fake_model("declared", train=train, model_info=lambda: {"task": "classification", "settings": {"epochs": 10, "lr": 0.1}})
    return seen


def test_a_misspelled_model_setting_names_the_key_the_model_and_the_file(tmp_path, declaring_model):
    path, result = run_with(tmp_path, "models:\n  declared:\n    epocs: 3\n", model="declared")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {path}: unknown key 'models.declared.epocs' (did you mean 'epochs'?); model 'declared' has the settings: epochs, lr"
    ]
    assert declaring_model == []  # nothing ran


def test_declared_settings_fill_in_their_defaults(tmp_path, declaring_model):
    path, result = run_with(tmp_path, "models:\n  declared:\n    lr: 0.5\n", model="declared")
    assert result.exit_code == 0, result.output
    assert declaring_model == [{"epochs": 10, "lr": 0.5}]


def test_an_experiments_own_config_is_checked_too(engine, declaring_model):
    from alectio_core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^experiment config: unknown key 'epoch' \(did you mean 'epochs'\?\); model 'declared'"):
        engine.create_experiment("declared", config={"epoch": 1})
