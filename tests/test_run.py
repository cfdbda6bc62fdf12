"""``alectio run``: a whole self-driven experiment from one command."""

from __future__ import annotations

import json
import statistics

import pytest
from click.testing import CliRunner
from server_support import slow_model  # noqa: F401 (fixture)

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


#: The seed set of the README's comparisons, chosen before any result was seen
#: (issue 12); never swapped for seeds that happen to agree.
COMPARISON_SEEDS = (20, 21, 22, 23, 24, 25, 26, 27, 28, 29)


def test_margin_beats_random_on_digits_over_the_readme_seeds(tmp_path):
    """The README's digits_lr row at the usual budget (40 initial, 8 loops of
    40): paired seed by seed, margin's mean accuracy over the curve is above
    random's, and the 95% t-interval of the mean difference stays above 0."""
    from scipy.stats import t

    def curve_means(strategy):
        means = []
        for seed in COMPARISON_SEEDS:
            store = f"sqlite:///{tmp_path}/{strategy}-{seed}.db"
            result = run("digits_lr", "--strategy", strategy, "--seed", str(seed), "--loops", "8",
                         "--initial", "40", "--batch", "40", "--json", storage=store)
            assert result.exit_code == 0, result.output
            means.append(statistics.fmean(p["metrics"]["accuracy"] for p in json.loads(result.stdout)))
        return means

    diffs = [m - r for m, r in zip(curve_means("margin"), curve_means("random"))]
    n = len(diffs)
    low = statistics.fmean(diffs) - t.ppf(0.975, n - 1) * statistics.stdev(diffs) / n**0.5
    assert statistics.fmean(diffs) > 0, diffs
    assert low > 0, diffs


def test_the_cli_and_the_server_default_to_one_documented_strategy(db):
    from pathlib import Path

    from alectio_core.schemas import SCHEMAS
    from alectio_core.strategies import DEFAULT_STRATEGY

    # what the paired comparisons over seeds 20-29 chose (README, "Does it pay?"): margin alone fell below random on the 20-topic text
    assert DEFAULT_STRATEGY == "diverse_margin"
    result = run("digits_lr", "--loops", "1", "--initial", "30", "--json", storage=db)
    assert result.exit_code == 0, result.output
    (experiment,) = Engine(open_storage(db)).storage.list_experiments()
    assert experiment["strategy"] == DEFAULT_STRATEGY
    assert SCHEMAS["ExperimentCreate"]["properties"]["strategy"]["default"] == DEFAULT_STRATEGY
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"default strategy is `{DEFAULT_STRATEGY}`" in readme


# -- --resume and the other arguments ----------------------------------------------


@pytest.fixture
def finished(db):
    """A finished 2-loop digits_lr experiment."""
    result = run("digits_lr", "--strategy", "random", "--loops", "2", "--initial", "30", "--batch", "20", "--seed", "4",
                 "--json", storage=db)
    assert result.exit_code == 0, result.output
    (experiment,) = Engine(open_storage(db)).storage.list_experiments()
    return experiment


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "entropy"], "--strategy entropy conflicts with experiment '{id}': it was created with --strategy random"),
        (["--batch", "50"], "--batch 50 conflicts with experiment '{id}': it was created with --batch 20"),
        (["--initial", "10"], "--initial 10 conflicts with experiment '{id}': it was created with --initial 30"),
        (["--seed", "0"], "--seed 0 conflicts with experiment '{id}': it was created with --seed 4"),
    ],
)
def test_resume_refuses_options_that_conflict_with_the_experiment(db, finished, args, message):
    result = run("digits_lr", "--resume", finished["id"], *args, storage=db)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: " + message.format(id=finished["id"])
    assert Engine(open_storage(db)).get_experiment(finished["id"]) == finished  # nothing changed


def test_resume_refuses_another_model(db, finished, fake_model):
    fake_model("other_model")
    result = run("other_model", "--resume", finished["id"], storage=db)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: model other_model conflicts with experiment '{finished['id']}': it was created with model digits_lr"
    )


def test_resume_accepts_options_that_repeat_the_stored_ones(db, finished):
    result = run("digits_lr", "--resume", finished["id"], "--strategy", "random", "--batch", "20", "--initial", "30",
                 "--seed", "4", "--loops", "2", "--json", storage=db)
    assert result.exit_code == 0, result.output
    assert [p["labeled"] for p in json.loads(result.stdout)] == [30, 50]


def test_resume_with_more_loops_extends_a_finished_experiment(db, finished):
    result = run("digits_lr", "--resume", finished["id"], "--loops", "4", "--json", storage=db)
    assert result.exit_code == 0, result.output
    assert [p["labeled"] for p in json.loads(result.stdout)] == [30, 50, 70, 90]
    assert Engine(open_storage(db)).get_experiment(finished["id"])["loops"] == 4


def test_resume_refuses_fewer_loops_than_done(db, finished):
    result = run("digits_lr", "--resume", finished["id"], "--loops", "1", storage=db)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: --loops 1 is fewer than the 2 loops experiment '{finished['id']}' has done"
    )


def test_an_exhausted_pool_ends_the_run_early_and_says_so(db):
    # digits_lr's pool is 1,400 records: 1,000 + 390 + the last 10, then nothing is left for loop 3
    result = run("digits_lr", "--loops", "4", "--initial", "1000", "--batch", "390", "--json", storage=db)
    assert result.exit_code == 0, result.output
    assert [p["labeled"] for p in json.loads(result.stdout)] == [1000, 1390, 1400]
    assert "pool exhausted after loop 2: 1,400 of 1,400 records labelled" in result.stderr.splitlines()


def test_a_run_that_uses_all_its_loops_says_nothing_of_the_pool(db):
    result = run("digits_lr", "--loops", "2", "--initial", "1000", "--batch", "400", "--json", storage=db)
    assert result.exit_code == 0, result.output
    assert [p["labeled"] for p in json.loads(result.stdout)] == [1000, 1400]
    assert "pool exhausted" not in result.stderr


def _run_and_interrupt(tmp_path, when, **config):
    """Start ``alectio run slow_test`` (loop 0 held in train), press Ctrl-C
    once ``when(store, experiment)`` says so (``when=None``: the model
    presses it); return the process's stderr, the experiment, the storage
    URL and the config file."""
    import signal
    import subprocess
    import sys

    from server_support import wait_for

    hold = tmp_path / "train.hold"
    hold.touch()
    config_path = tmp_path / "config.yaml"
    extra = "".join(f"    {key}: {value}\n" for key, value in config.items())
    config_path.write_text(f"models:\n  slow_test:\n    hold_file: {hold}\n    pool_size: 60\n{extra}")
    db = f"sqlite:///{tmp_path}/alectio.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "alectio_core", "run", "slow_test", "--loops", "2", "--initial", "10", "--batch", "10",
         "--config", str(config_path), "--storage", db],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        store = open_storage(db)

        def ready():
            experiments = store.list_experiments()
            return experiments[0] if experiments and (when is None or when(store, experiments[0])) else None

        experiment = wait_for(ready, timeout=120, what="the moment to press Ctrl-C")
        if when is not None:
            process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)  # a process that ignores Ctrl-C fails here
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    hold.unlink()
    return err, experiment, db, config_path


def _in_train_state(store, experiment):
    states = store.list_loop_states(experiment["id"])
    return bool(states) and states[0].get("stage") == "train"


@pytest.mark.parametrize("moment", ["state says train", "train hook running"])
def test_ctrl_c_says_how_to_resume_and_records_the_loop(tmp_path, slow_model, moment):
    # "state says train": right after the stage is stored, while the engine
    # tells listeners and calls the hook; "train hook running": in the hook.
    started = tmp_path / "train.started"
    when = _in_train_state if moment == "state says train" else (lambda store, experiment: started.exists())
    err, experiment, db, config = _run_and_interrupt(tmp_path, when, started_file=started)
    assert "Aborted!" not in err
    assert err.strip().splitlines()[-1] == (
        f"Interrupted in loop 0 (continue with: alectio run slow_test --resume {experiment['id']})"
    )
    state = open_storage(db).get_loop_state(experiment["id"], 0)
    assert (state["status"], state["error"]) == ("cancelled", "interrupted")

    # the command it printed finishes the experiment
    result = CliRunner().invoke(cli, ["run", "slow_test", "--resume", experiment["id"], "--storage", db, "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert [p["labeled"] for p in json.loads(result.stdout)] == [10, 20]


def test_ctrl_c_is_not_lost_when_it_lands_in_a_finalizer(tmp_path, slow_model):
    # Python drops a KeyboardInterrupt raised while a __del__ or a weakref
    # callback runs (the garbage collector, an import's module lock): the
    # Ctrl-C must still stop the run, not leave it training on.
    err, experiment, db, _ = _run_and_interrupt(tmp_path, None, sigint_in_finalizer="true")
    assert err.strip().splitlines()[-1] == (
        f"Interrupted in loop 0 (continue with: alectio run slow_test --resume {experiment['id']})"
    )
    state = open_storage(db).get_loop_state(experiment["id"], 0)
    assert (state["status"], state["error"]) == ("cancelled", "interrupted")


# -- the learning-curve table: the task's headline metric, or --metric ----------------------


@pytest.fixture
def detector(fake_model):
    box = {"boxes": [[0, 0, 10, 10]], "objects": [0]}
    near = {"boxes": [[0, 0, 10, 8]], "objects": [0], "scores": [0.9]}  # IoU 0.8: counted at 0.5, not at 0.95
    fake_model(
        "tiny_detector",
        model_info=lambda: {"task": "object_detection", "labels": ["square", "disc"]},
        test=lambda: {"predictions": [near, near], "labels": [box, box]},
    )
    return "tiny_detector"


def _table(output):
    lines = output.strip().splitlines()
    return lines[1].split(), [line.split() for line in lines[2:]]


def test_the_detection_table_shows_map_50_by_name(db, detector):
    result = run(detector, "--loops", "2", "--initial", "4", "--batch", "4", storage=db)
    assert result.exit_code == 0, result.output
    header, rows = _table(result.stdout)
    assert header == ["loop", "labeled", "mAP_50"]
    curve = Engine(open_storage(db)).learning_curve(Engine(open_storage(db)).storage.list_experiments()[0]["id"])
    assert [float(r[2]) for r in rows] == [round(p["metrics"]["mAP_50"], 4) for p in curve]
    assert curve[0]["metrics"]["mAP"] != curve[0]["metrics"]["mAP_50"]  # the two differ here
    # the detection example's README quotes the same metric as the table
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "examples" / "object_detection" / "README.md").read_text()
    assert "| loop | labeled | mAP_50 |" in readme and "shows test **mAP_50** per loop" in readme


def test_metric_picks_another_column(db, detector):
    result = run(detector, "--loops", "1", "--initial", "4", "--metric", "mAP", storage=db)
    assert result.exit_code == 0, result.output
    header, rows = _table(result.stdout)
    assert header == ["loop", "labeled", "mAP"]
    (experiment,) = Engine(open_storage(db)).storage.list_experiments()
    assert float(rows[0][2]) == round(Engine(open_storage(db)).learning_curve(experiment["id"])[0]["metrics"]["mAP"], 4)


def test_an_unknown_metric_lists_the_available_ones(db, detector):
    result = run(detector, "--loops", "3", "--initial", "4", "--batch", "4", "--metric", "mAP50", storage=db)
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: unknown metric 'mAP50'; available: mAP, mAP_50, mAP_75, precision, recall")
    (experiment,) = Engine(open_storage(db)).storage.list_experiments()
    assert len(Engine(open_storage(db)).learning_curve(experiment["id"])) == 1  # stopped after loop 0, not at the end


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
