"""config.yaml: defaults, per-model sections, environment overrides, errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from alectio_core.cli import cli
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
    assert config.server.host == "127.0.0.1" and config.server.port == 5000
    assert config.model_config("anything") == {}


def test_values_model_sections_and_env_overrides(tmp_path, monkeypatch):
    path = write(
        tmp_path,
        "storage: sqlite:///x.db\nserver:\n  port: 8080\nmodels:\n  digits_lr:\n    max_iter: 50\n    layers: [1, 2]\n",
    )
    monkeypatch.delenv("ALECTIO_STORAGE", raising=False)
    monkeypatch.setenv("ALECTIO_CONFIG", str(path))
    config = load_config()
    assert config.storage == "sqlite:///x.db" and config.server.port == 8080
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
        ("server:\n  port:\n", "key 'server.port' must be int, got no value"),  # was None, crashing later
        ("storage:\n", "key 'storage' must be str, got no value"),
        ("storage_options: [1]\n", "key 'storage_options' must be a mapping, got list"),
        ("platform:\n  callback_retries: '3'\n", "key 'platform.callback_retries' must be int, got str '3'"),
        ("platform:\n  max_selection_bytes: 1.5\n", "key 'platform.max_selection_bytes' must be int, got float 1.5"),
        ("platform:\n  backend_url: 8080\n", "key 'platform.backend_url' must be str, got int 8080"),
        # Refused here, not clamped or crashing when the callback is sent.
        ("platform:\n  callback_retries: -1\n", "key 'platform.callback_retries' must be >= 0"),
        ("platform:\n  callback_timeout: 0\n", "key 'platform.callback_timeout' must be > 0"),
        ("platform:\n  max_selection_bytes: 0\n", "key 'platform.max_selection_bytes' must be > 0"),
        ("platform:\n  modle: x\n", r"unknown key 'platform.modle' \(did you mean 'model'\?\)"),
        ("a: [\n", "not valid YAML"),
        ("!!python/object:os.system {}\n", "not valid YAML"),  # safe_load refuses objects
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_sections_are_typed_objects_with_their_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("ALECTIO_STORAGE", raising=False)
    config = load_config(write(tmp_path, "server:\n  lease_seconds: 5\nplatform:\n  model: m\n"))
    assert config.server.lease_seconds == 5.0 and isinstance(config.server.lease_seconds, float)
    assert config.server.workers == 2 and config.server.port == 5000
    assert config.platform.model == "m" and config.platform.backend_url is None
    assert config.platform.callback_retries == 3


def test_a_default_defined_once_is_what_the_server_leases_and_platform_see(tmp_path, monkeypatch):
    """Sections left out of the file (and a hand-made Config) get the
    defaults declared in config.py: the server, the leases and platform
    mode read those, with no defaults of their own."""
    from dataclasses import fields

    from alectio_core.config import Config, PlatformSettings, ServerSettings
    from alectio_core.server import create_app
    from alectio_core.server.one_loop import _platform

    server = {f.name: f.default for f in fields(ServerSettings)}
    platform = {f.name: f.default for f in fields(PlatformSettings)}
    monkeypatch.delenv("ALECTIO_STORAGE", raising=False)
    from_file = load_config(write(tmp_path, "server:\n  host: 0.0.0.0\nplatform:\n  model: m\n"))
    for config in (from_file, Config()):
        app = create_app(config, storage=f"sqlite:///{tmp_path}/a.db")
        ctx = app.extensions["alectio"]
        assert app.config["MAX_CONTENT_LENGTH"] == server["max_body_bytes"]
        assert ctx["runner"].workers == server["workers"]
        assert ctx["engine"].leases.ttl == server["lease_seconds"]
        with app.app_context():
            seen = _platform().settings
        for key in ("callback_timeout", "callback_retries", "max_selection_bytes"):
            assert getattr(seen, key) == platform[key], key
        ctx["runner"].shutdown()


def test_a_value_from_the_file_reaches_the_server_and_the_leases(tmp_path, monkeypatch):
    from alectio_core.server import create_app

    monkeypatch.delenv("ALECTIO_STORAGE", raising=False)
    config = load_config(write(tmp_path, "server:\n  workers: 3\n  lease_seconds: 4\n  max_body_bytes: 1000\n"))
    app = create_app(config, storage=f"sqlite:///{tmp_path}/a.db")
    ctx = app.extensions["alectio"]
    assert (ctx["runner"].workers, ctx["engine"].leases.ttl, app.config["MAX_CONTENT_LENGTH"]) == (3, 4.0, 1000)
    ctx["runner"].shutdown()


def test_the_environment_wins_over_the_file(tmp_path, monkeypatch):
    """$ALECTIO_STORAGE beats config.yaml's storage everywhere a storage is
    opened; --storage beats both; $ALECTIO_CONFIG names the file."""
    from alectio_core.config import environment
    from alectio_core.storage import open_storage

    path = write(tmp_path, f"storage: sqlite:///{tmp_path}/file.db\nserver:\n  port: 8080\n")
    monkeypatch.setenv("ALECTIO_CONFIG", str(path))
    monkeypatch.setenv("ALECTIO_STORAGE", f"sqlite:///{tmp_path}/env.db")
    assert environment().config == str(path)
    config = load_config()
    assert config.storage == f"sqlite:///{tmp_path}/env.db" and config.server.port == 8080
    assert open_storage().path.name == "env.db"
    listed = CliRunner().invoke(cli, ["token", "create", "--name", "ci"])
    assert listed.exit_code == 0, listed.output
    assert (tmp_path / "env.db").exists() and not (tmp_path / "file.db").exists()
    given = CliRunner().invoke(cli, ["token", "create", "--name", "ci", "--storage", f"sqlite:///{tmp_path}/flag.db"])
    assert given.exit_code == 0, given.output
    assert (tmp_path / "flag.db").exists() and not (tmp_path / "file.db").exists()
    monkeypatch.setenv("ALECTIO_HOME", str(tmp_path / "home"))
    assert environment().home == tmp_path / "home"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")


# -- typos below the top level, as `alectio run` shows them --------------------------


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
        f"Error: {path}: unknown key 'storge' (did you mean 'storage'?); known keys: executor, labeller, models, platform, server, stopping, storage, storage_options"
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


# -- labeller: ------------------------------------------------------------------


def test_labeller_section_keeps_its_own_keys_for_the_labeller(tmp_path):
    path = write(
        tmp_path,
        "labeller:\n  name: labelstudio\n  url: http://127.0.0.1:8080\n  auto_next: true\n  poll_seconds: 2\n",
    )
    labeller = load_config(path).labeller
    assert (labeller.name, labeller.auto_next, labeller.poll_seconds) == ("labelstudio", True, 2.0)
    assert labeller.settings == {"url": "http://127.0.0.1:8080"}


def test_no_labeller_by_default(tmp_path):
    assert load_config(write(tmp_path, "storage: sqlite:///x.db\n")).labeller is None
    assert load_config(write(tmp_path, "labeller:\n")).labeller is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("labeller: labelstudio\n", "key 'labeller' must be a mapping, got str"),
        ("labeller:\n  url: http://x\n", "key 'labeller.name' is missing: name the labeller to use"),
        ("labeller:\n  name: 3\n", "key 'labeller.name' must be str, got int 3"),
        ("labeller:\n  name: x\n  auto_next: yes please\n", "key 'labeller.auto_next' must be bool, got str"),
        ("labeller:\n  name: x\n  poll_seconds: 0\n", "key 'labeller.poll_seconds' must be > 0"),
    ],
)
def test_bad_labeller_section_names_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in info.value.message
