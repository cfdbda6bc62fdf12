"""``alectio run``: a whole self-driven experiment from one command."""

from __future__ import annotations

import json
import statistics

import pytest
from click.testing import CliRunner

from alectio_core import Engine, open_storage
from alectio_core.cli import cli


def run(*args, storage):
    return CliRunner().invoke(cli, ["run", *args, "--storage", storage])


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path}/alectio.db"


def test_json_curve_is_all_that_goes_to_stdout(db):
    result = run("digits_lr", "--loops", "3", "--initial", "30", "--batch", "20", "--json", storage=db)
    assert result.exit_code == 0, result.output
    curve = json.loads(result.stdout)
    assert [p["loop"] for p in curve] == [0, 1, 2]
    assert [p["labeled"] for p in curve] == [30, 50, 70]
    assert all(0 < p["metrics"]["accuracy"] <= 1 for p in curve)
    assert "experiment" in result.stderr  # the human part goes to stderr


def test_strategy_picks_from_the_unlabeled_pool_and_is_seeded(db, tmp_path):
    for name in ("a", "b"):
        store = f"sqlite:///{tmp_path}/{name}.db"
        assert run("digits_lr", "--loops", "3", "--initial", "25", "--batch", "15", "--seed", "7", storage=store).exit_code == 0
    picks = []
    for name in ("a", "b"):
        engine = Engine(open_storage(f"sqlite:///{tmp_path}/{name}.db"))
        (experiment,) = engine.storage.list_experiments()
        selections = [engine.storage.get_selection(experiment["id"], k).tolist() for k in range(3)]
        assert [len(s) for s in selections] == [25, 15, 15]
        assert len(set().union(*map(set, selections))) == 55  # never the same record twice
        picks.append(selections)
    assert picks[0] == picks[1]


def test_table_and_plot(db, tmp_path):
    png = tmp_path / "curve.png"
    result = run("digits_lr", "--loops", "2", "--initial", "30", "--batch", "10", "--plot", str(png), storage=db)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[1].split() == ["loop", "labeled", "accuracy"]
    assert lines[2].split()[:2] == ["0", "30"] and lines[3].split()[:2] == ["1", "40"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope"], "Error: unknown model 'nope'; installed models:"),
        (["digits_lr", "--strategy", "psychic"], "Error: unknown strategy 'psychic'; known:"),
        (["digits_lr", "--initial", "5000"], "Error: initial (5000) is larger than the pool (1400 records)"),
        (["digits_lr", "--resume", "nothere"], "Error: unknown experiment 'nothere'"),
        (["digits_lr", "--resume", "../x"], "Error: invalid experiment id '../x'"),
    ],
)
def test_errors_exit_non_zero_with_one_line(db, args, message):
    result = run(*args, storage=db)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(message)


def test_resume_continues_an_interrupted_experiment(db):
    engine = Engine(open_storage(db))
    experiment = engine.create_experiment("digits_lr", strategy="margin", initial=30, batch_size=20, loops=4, seed=1)
    engine.run_loop(experiment["id"], 0)
    engine.run_loop(experiment["id"], 1)
    # a process died in loop 2: it is left "running"
    state = engine.get_loop(experiment["id"], 1)
    engine.storage.put_loop_state(experiment["id"], 2, {**state, "loop": 2, "status": "running", "stage": "train"})

    result = run("digits_lr", "--resume", experiment["id"], "--json", storage=db)
    assert result.exit_code == 0, result.output
    curve = json.loads(result.stdout)
    assert [p["loop"] for p in curve] == [0, 1, 2, 3]
    assert [p["labeled"] for p in curve] == [30, 50, 70, 90]


def test_resume_repicks_a_selection_lost_between_commit_and_pick(db):
    engine = Engine(open_storage(db))
    experiment = engine.create_experiment("digits_lr", strategy="entropy", initial=30, batch_size=20, loops=3)
    engine.run_loop(experiment["id"], 0, select_next=False)  # as if the process died right after the commit
    result = run("digits_lr", "--resume", experiment["id"], "--json", storage=db)
    assert result.exit_code == 0, result.output
    assert [p["labeled"] for p in json.loads(result.stdout)] == [30, 50, 70]


def test_a_failing_loop_says_how_to_resume(db, fake_model):
    fake_model("flaky", test=lambda loop: {"predictions": [0], "labels": [0]} if loop == 0 else 1 / 0)
    result = run("flaky", "--strategy", "random", "--loops", "2", "--initial", "3", "--batch", "2", storage=db)
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: model 'flaky', hook 'test': raised ZeroDivisionError")
    assert "alectio run flaky --resume" in line


def test_uncertainty_beats_random_on_digits(tmp_path):
    """The measured claim in the README: averaged over
    three seeds, entropy and margin reach a higher mean accuracy over the
    curve than random with the same labels (the README table's settings)."""

    def mean_accuracy(strategy):
        means = []
        for seed in (0, 1, 2):
            store = f"sqlite:///{tmp_path}/{strategy}-{seed}.db"
            result = run("digits_lr", "--strategy", strategy, "--seed", str(seed), "--loops", "8",
                         "--initial", "40", "--batch", "40", "--json", storage=store)
            assert result.exit_code == 0, result.output
            means.append(statistics.fmean(p["metrics"]["accuracy"] for p in json.loads(result.stdout)))
        return statistics.fmean(means)

    baseline = mean_accuracy("random")
    assert mean_accuracy("entropy") > baseline
    assert mean_accuracy("margin") > baseline


def test_a_bare_absolute_path_is_that_path(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = tmp_path / "data" / "abs.db"
    result = CliRunner().invoke(cli, ["run", "digits_lr", "--loops", "1", "--initial", "20", "--json", "--storage", str(target)])
    assert result.exit_code == 0, result.output
    assert f"storage {target}" in result.stderr
    assert target.is_file() and list(elsewhere.iterdir()) == []
    assert len(Engine(open_storage(f"sqlite:///{target}")).storage.list_experiments()) == 1  # the same file, by URL


def test_a_bare_relative_path_is_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", "digits_lr", "--loops", "1", "--initial", "20", "--json", "--storage", "sub/rel.db"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sub" / "rel.db").is_file()


@pytest.mark.parametrize("url", ["sqlite:/a.db", "sqlite://a.db", "s3:/bucket/prefix", "sqlite:a.db"])
def test_malformed_storage_urls_show_the_accepted_forms(tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", "digits_lr", "--loops", "1", "--initial", "20", "--storage", url])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: malformed storage URL {url!r}; use one of: sqlite:///relative.db, sqlite:////absolute.db, "
        "a bare path (alectio.db, /abs/alectio.db), s3://bucket/prefix"
    ]
    assert list(tmp_path.iterdir()) == []  # no folder named 'sqlite:', no a.db


def alectio_process(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "alectio_core", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_a_failed_loop_is_said_once(tmp_path):
    """A real process: no log line repeating the Error line."""
    (tmp_path / "config.yaml").write_text("models:\n  digits_lr:\n    max_iter: many\n")
    result = alectio_process("run", "digits_lr", "--loops", "1", "--initial", "20", "--storage", "a.db", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("experiment "), lines
    assert lines[1].startswith("Error: model 'digits_lr', hook 'train': raised ValueError: ")
    assert lines[1].endswith(f"(continue with: alectio run digits_lr --resume {lines[0].split()[1].rstrip(':')})")


def test_a_plugin_error_over_several_lines_is_one_line(db, fake_model):
    def test():
        raise RuntimeError("shape mismatch:\n  expected (10,)\n  got (9,)")

    fake_model("multiline", test=test)
    result = run("multiline", "--strategy", "random", "--loops", "1", "--initial", "3", storage=db)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith(
        "Error: model 'multiline', hook 'test': raised RuntimeError: shape mismatch: expected (10,) got (9,) (continue with:"
    )


def test_an_unwritable_plot_path_fails_before_the_run(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "c.png"
    result = alectio_process("run", "digits_lr", "--loops", "1", "--initial", "20", "--storage", "a.db", "--plot", str(missing), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: cannot write the plot to {str(missing)!r}: folder {str(missing.parent)!r} does not exist"
    ]
    assert not (tmp_path / "a.db").exists()  # nothing ran
