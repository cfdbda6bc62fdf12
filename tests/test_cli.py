"""The CLI as a user meets it: help, JSON output, one-line errors."""

from __future__ import annotations

import json

from click.testing import CliRunner

from alectio_core.cli import cli


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "plugins", "run"):
        assert command in result.output


def test_serve_help_documents_its_options():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--storage", "--config", "--log-level"):
        assert option in result.output


def test_plugins_prints_json():
    result = CliRunner().invoke(cli, ["plugins", "--all"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["digits_lr"]["kind"] == "model" and rows["sqlite"]["kind"] == "storage"


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("server:\n  port: high\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {bad}: key 'server.port' must be int, got str 'high'"
