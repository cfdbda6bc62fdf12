"""Stopping criteria: each built-in against a straightforward reference, and
``stop`` through the engine, ``alectio run --stop`` and the HTTP API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from server_support import make_app, wait_for  # noqa: F401
from sklearn.metrics import cohen_kappa_score
from test_plugins import registered  # noqa: F401 (fixture)

from alectio_core import Engine, hookimpl, open_storage, plugins
from alectio_core.cli import cli
from alectio_core.config import parse_config
from alectio_core.errors import ContributionError, StoppedError, UnknownStoppingError, ValidationError
from alectio_core.stopping import replay
from alectio_plugins.stopping_stabilizing import cohen_kappa, stop_set

CLASSES = 3


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- a model whose predictions settle down loop by loop ---------------------------

FLIPPED = [0.6, 0.4, 0.2, 0.05, 0.02, 0.0, 0.0, 0.0]  # share of records predicted at random, per loop
SCALE = [0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0]  # how sure the model is, per loop
ACCURACY = [0.50, 0.60, 0.66, 0.67, 0.672, 0.70, 0.701, 0.702]


def settling_logits(indices: np.ndarray, loop: int) -> np.ndarray:
    """Class ``i % 3`` for record i, but a share ``FLIPPED[loop]`` of the
    records (a pure function of record and loop) gets a random class."""
    rng = np.random.default_rng(loop)
    noise = rng.random(100_000)[indices] < FLIPPED[loop]
    random_class = rng.integers(0, CLASSES, 100_000)[indices]
    predicted = np.where(noise, random_class, indices % CLASSES)
    logits = np.zeros((len(indices), CLASSES))
    logits[np.arange(len(indices)), predicted] = SCALE[loop]
    return logits


@pytest.fixture
def settling(fake_model):
    def infer(unlabeled, loop, writer):
        idx = np.asarray(unlabeled)
        writer.extend(idx, settling_logits(idx, loop))

    def test(loop):
        right = round(ACCURACY[loop] * 1000)
        return {"predictions": [0] * 1000, "labels": [0] * right + [1] * (1000 - right)}

    fake_model("settling", pool=300, infer=infer, test=test,
               model_info=lambda: {"task": "classification", "labels": ["a", "b", "c"]})
    return "settling"


def run_all(engine: Engine, experiment: dict) -> list[dict]:
    from alectio_core.driver import drive

    return drive(engine, experiment["id"])


# -- the reference implementations ------------------------------------------------


def kappa_reference(engine: Engine, eid: str, loops: int, window: int, threshold: float):
    """First loop whose last ``window`` kappas (sklearn, on every record both
    loops predicted) average >= threshold, and that mean."""
    predicted = []
    for k in range(loops):
        indices, values = engine.outputs(eid, k)
        predicted.append(dict(zip(indices.tolist(), values.argmax(axis=1).tolist())))
    kappas = []
    for k in range(1, loops):
        common = sorted(set(predicted[k - 1]) & set(predicted[k]))
        a = [predicted[k - 1][i] for i in common]
        b = [predicted[k][i] for i in common]
        kappas.append(1.0 if a == b else cohen_kappa_score(a, b))
        if k >= window and np.mean(kappas[-window:]) >= threshold:
            return k, float(np.mean(kappas[-window:]))
    return None, None


def test_cohen_kappa_matches_scikit_learn():
    rng = np.random.default_rng(3)
    for n, classes in ((50, 2), (500, 3), (1000, 10)):
        a = rng.integers(0, classes, n)
        b = np.where(rng.random(n) < 0.7, a, rng.integers(0, classes, n))
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    # both constant and equal: kappa is 0/0 in the formula; full agreement counts as 1
    assert cohen_kappa(np.zeros(5, int), np.zeros(5, int)) == 1.0
    assert cohen_kappa(np.array([0, 1]), np.array([1, 0])) == pytest.approx(cohen_kappa_score([0, 1], [1, 0]))


def test_the_stop_set_is_fixed_by_the_seed_and_bounded_by_the_pool():
    experiment = {"pool_size": 1000, "seed": 4}
    a, b = stop_set(experiment, 200), stop_set(experiment, 200)
    assert np.array_equal(a, b) and len(np.unique(a)) == 200 and a.max() < 1000
    assert not np.array_equal(a, stop_set({"pool_size": 1000, "seed": 5}, 200))
    assert np.array_equal(stop_set(experiment, 5000), np.arange(1000))


@pytest.mark.parametrize("threshold, window", [(0.8, 2), (0.95, 3), (0.999, 1)])
def test_stabilizing_predictions_fires_where_the_reference_does(engine, settling, threshold, window):
    # the whole pool is the stop set (stop_set > pool), so the reference needs no sampling of its own
    full = engine.create_experiment(settling, strategy="random", initial=20, batch_size=20, loops=8, seed=1)
    run_all(engine, full)
    expected, mean = kappa_reference(engine, full["id"], 7, window, threshold)  # the last loop is never checked
    assert expected is not None, "the reference must fire for this case to test firing"

    settings = {"stabilizing_predictions": {"threshold": threshold, "window": window, "stop_set": 10_000}}
    stopped = engine.create_experiment(settling, strategy="random", initial=20, batch_size=20, loops=8, seed=1,
                                       stop=["stabilizing_predictions"], stopping=settings)
    curve = run_all(engine, stopped)
    assert [p["loop"] for p in curve] == list(range(expected + 1))
    assert "stop" not in curve[-2]
    assert curve[-1]["stop"]["criterion"] == "stabilizing_predictions"
    assert f"mean Cohen's kappa {mean:.4f} >= {threshold}" in curve[-1]["stop"]["reason"]
    assert not engine.has_selection(stopped["id"], expected + 1)  # no selection wasted after the stop
    # the same code, replayed over the full run's stored loops
    assert replay(engine, full["id"], ["stabilizing_predictions"], settings)["stabilizing_predictions"]["loop"] == expected


def test_stabilizing_predictions_does_not_fire_below_the_threshold(engine, settling):
    full = engine.create_experiment(settling, strategy="random", initial=20, batch_size=20, loops=8, seed=1,
                                    stop=["stabilizing_predictions"], stopping={"stabilizing_predictions": {"threshold": 1.0, "window": 7}})
    curve = run_all(engine, full)
    assert len(curve) == 8 and not any("stop" in p for p in curve)


def test_stabilizing_predictions_leaves_out_stop_set_records_labelled_since(engine, settling):
    experiment = engine.create_experiment(settling, strategy="random", initial=100, batch_size=100, loops=3, seed=2,
                                          stop=["stabilizing_predictions"],
                                          stopping={"stabilizing_predictions": {"threshold": -1.0, "window": 1, "stop_set": 150}})
    curve = run_all(engine, experiment)
    records = stop_set(engine.get_experiment(experiment["id"]), 150)
    unlabelled = np.setdiff1d(records, engine.labeled(experiment["id"], 1))
    assert curve[-1]["loop"] == 1
    assert f"on {unlabelled.size:,} unlabelled stop-set records" in curve[-1]["stop"]["reason"]
    assert 0 < unlabelled.size < 150


def test_stabilizing_predictions_compares_multilabel_decisions_label_by_label(engine, fake_model):
    def infer(unlabeled, loop, writer):
        idx = np.asarray(unlabeled)
        logits = settling_logits(idx, loop) - SCALE[loop] / 2  # a label is on where its logit is > 0
        writer.extend(idx, logits)

    fake_model("tagger", pool=300, infer=infer,
               test=lambda: {"predictions": [[0], [1, 2]], "labels": [[0], [2]]},
               model_info=lambda: {"task": "multilabel", "labels": ["a", "b", "c"]})
    full = engine.create_experiment("tagger", strategy="random", initial=20, batch_size=20, loops=8, seed=1)
    run_all(engine, full)
    decisions = []
    for k in range(7):
        indices, values = engine.outputs(full["id"], k)
        decisions.append(dict(zip(indices.tolist(), (values > 0).astype(int).tolist())))
    kappas = []
    for k in range(1, 7):
        common = sorted(set(decisions[k - 1]) & set(decisions[k]))
        a = [v for i in common for v in decisions[k - 1][i]]
        b = [v for i in common for v in decisions[k][i]]
        kappas.append(1.0 if a == b else cohen_kappa_score(a, b))
    expected = next(k for k in range(2, 7) if np.mean(kappas[k - 2 : k]) >= 0.9)
    settings = {"stabilizing_predictions": {"threshold": 0.9, "window": 2}}
    found = replay(engine, full["id"], ["stabilizing_predictions"], settings)["stabilizing_predictions"]
    assert found["loop"] == expected
    assert f"mean Cohen's kappa {np.mean(kappas[expected - 2 : expected]):.4f}" in found["reason"]


@pytest.mark.parametrize("threshold", [0.3, 0.05, 1e-4])
def test_max_uncertainty_fires_where_the_reference_does(engine, settling, threshold):
    full = engine.create_experiment(settling, strategy="random", initial=20, batch_size=20, loops=8, seed=1)
    run_all(engine, full)
    highest = [float((1 - softmax(engine.outputs(full["id"], k)[1]).max(axis=1)).max()) for k in range(7)]
    expected = next((k for k, h in enumerate(highest) if h < threshold), None)
    found = replay(engine, full["id"], ["max_uncertainty"], {"max_uncertainty": {"threshold": threshold}})["max_uncertainty"]
    if expected is None:
        assert found is None
        return
    assert found["loop"] == expected
    assert f"scores {highest[expected]:.4f} (least_confidence) < {threshold}" in found["reason"]


def test_max_uncertainty_takes_another_measure(engine, settling):
    full = engine.create_experiment(settling, strategy="random", initial=20, batch_size=20, loops=8, seed=1)
    run_all(engine, full)
    p = [softmax(engine.outputs(full["id"], k)[1]) for k in range(7)]
    entropy = [float((-(q * np.log(q)).sum(axis=1)).max()) for q in p]
    threshold = (entropy[3] + entropy[4]) / 2
    expected = next(k for k, h in enumerate(entropy) if h < threshold)
    found = replay(engine, full["id"], ["max_uncertainty"], {"max_uncertainty": {"threshold": threshold, "measure": "entropy"}})
    assert found["max_uncertainty"]["loop"] == expected


@pytest.mark.parametrize("patience, min_delta", [(1, 0.005), (2, 0.005), (2, 0.05), (3, 0.001), (2, 0.0)])
def test_plateau_fires_where_the_reference_does(engine, settling, patience, min_delta):
    full = engine.create_experiment(settling, strategy="random", initial=20, batch_size=20, loops=8, seed=1)
    run_all(engine, full)
    accuracy = [p["metrics"]["accuracy"] for p in engine.learning_curve(full["id"])]
    assert accuracy == pytest.approx(ACCURACY)
    expected = None
    for k in range(patience, 7):
        if max(accuracy[k - patience + 1 : k + 1]) - max(accuracy[: k - patience + 1]) < min_delta:
            expected = k
            break
    found = replay(engine, full["id"], ["plateau"], {"plateau": {"patience": patience, "min_delta": min_delta}})["plateau"]
    assert (found and found["loop"]) == expected
    if expected is not None:
        assert found["reason"].startswith("accuracy improved by ")


# -- wiring: names and settings checked at creation ------------------------------------


def test_an_unknown_criterion_is_refused_listing_the_known_ones(engine, settling):
    with pytest.raises(UnknownStoppingError, match=r"unknown stopping criterion 'platoe' \(did you mean 'plateau'\?\); "
                                                   r"known: max_uncertainty, plateau, stabilizing_predictions"):
        engine.create_experiment(settling, stop=["platoe"])
    assert engine.storage.list_experiments() == []


@pytest.mark.parametrize(
    "stopping, message",
    [
        ({"plateau": {"patiense": 2}}, "stopping.plateau.patiense: unknown setting (did you mean 'patience'?); plateau takes: "),
        ({"plateau": {"patience": 1.5}}, "stopping.plateau.patience must be int, got 1.5"),
        ({"plateau": {"patience": 0}}, "stopping criterion 'plateau': patience must be >= 1, got 0"),
        ({"plateau": 3}, "stopping.plateau must be a mapping of settings, got int"),
        ({"max_uncertainty": {"threshold": 0.1}}, "stopping has settings for 'max_uncertainty', which is not in stop (plateau)"),
    ],
)
def test_bad_settings_are_refused_naming_them(engine, settling, stopping, message):
    with pytest.raises(ValidationError) as raised:
        engine.create_experiment(settling, stop=["plateau"], stopping=stopping)
    assert message in str(raised.value)
    assert engine.storage.list_experiments() == []


def test_a_criterion_that_cannot_apply_to_the_task_is_refused_at_creation(engine, fake_model):
    fake_model("regressor", model_info=lambda: {"task": "regression", "labels": None})
    with pytest.raises(ValidationError, match="stopping criterion 'stabilizing_predictions': compares predicted classes, "
                                              "so it works on classification and multilabel models, not 'regression'"):
        engine.create_experiment("regressor", stop=["stabilizing_predictions"])
    engine.create_experiment("regressor", initial=5, stop=["plateau"])  # the metric works for any task


def test_config_yaml_sets_the_defaults_and_the_experiment_overrides_them(tmp_path, settling):
    config = parse_config({"stopping": {"plateau": {"patience": 4, "min_delta": 0.01}}}, "config.yaml")
    engine = Engine(open_storage(f"sqlite:///{tmp_path}/a.db"), config)
    experiment = engine.create_experiment(settling, stop=["plateau"], stopping={"plateau": {"patience": 2}})
    assert experiment["stopping"] == {"plateau": {"patience": 2, "min_delta": 0.01, "metric": None, "mode": "max"}}


@pytest.mark.parametrize(
    "section, message",
    [
        ({"plateau": {"min_delta": "a lot"}}, "config.yaml: key 'stopping.plateau.min_delta' must be float, got 'a lot'"),
        ({"platau": {"patience": 2}}, "config.yaml: key 'stopping.platau': no stopping criterion 'platau' is installed "
                                      "(did you mean 'plateau'?); installed: max_uncertainty, plateau, stabilizing_predictions"),
    ],
)
def test_a_bad_stopping_section_in_config_yaml_is_an_error_naming_the_key(tmp_path, section, message):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"stopping": section}))
    result = run("digits_lr", storage=f"sqlite:///{tmp_path}/alectio.db", config=config)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"Error: {message}".replace("config.yaml", str(config))


# -- a criterion from a plugin --------------------------------------------------------


class Never:
    name = "never"
    settings: dict = {"after": 1}

    def check(self, context):
        return None


class Broken:
    name = "broken"
    settings: dict = {}

    def check(self, context):
        if context.loop >= 1:
            raise RuntimeError("lost count")
        return None


class CriteriaPlugin:
    @hookimpl
    def register_stopping(self, register):
        register(Never())
        register(Broken())


def test_hook_register_stopping(registered, engine, settling):
    """A third-party criterion is usable by name and listed as a plugin."""
    registered("more_criteria", CriteriaPlugin())
    assert isinstance(plugins.get_stopping_criterion("never"), Never)
    assert {p["name"]: p for p in plugins.report()}["more_criteria"]["kind"] == "stopping"
    experiment = engine.create_experiment(settling, strategy="random", initial=20, batch_size=20, loops=3, stop=["never"])
    assert experiment["stop"] == ["never"] and experiment["stopping"] == {"never": {"after": 1}}
    assert len(run_all(engine, experiment)) == 3


def test_a_criterion_that_raises_fails_the_loop_naming_it_and_keeps_what_was_stored(registered, engine, settling):
    registered("more_criteria", CriteriaPlugin())
    experiment = engine.create_experiment(settling, strategy="random", initial=20, batch_size=20, loops=4, stop=["broken"])
    eid = experiment["id"]
    engine.run_loop(eid, 0)
    before = (engine.results(eid, 0), engine.storage.get_selection(eid, 1).tolist(), engine.outputs(eid, 0)[0].tolist())
    with pytest.raises(ContributionError, match=r"stopping criterion 'broken' \(plugin 'more_criteria'\) failed in check: "
                                                r"RuntimeError: lost count"):
        engine.run_loop(eid, 1)
    state = engine.get_loop(eid, 1)
    assert state["status"] == "failed" and "stopping criterion 'broken'" in state["error"]
    assert (engine.results(eid, 0), engine.storage.get_selection(eid, 1).tolist(), engine.outputs(eid, 0)[0].tolist()) == before
    assert engine.results(eid, 1)["metrics"] is None  # the failed attempt published nothing
    assert not engine.has_selection(eid, 2)


# -- alectio run --stop ---------------------------------------------------------------


def run(*args, storage, config=None):
    extra = ["--config", str(config)] if config else []
    return CliRunner().invoke(cli, ["run", *args, "--storage", storage, *extra])


def test_run_stop_ends_early_and_says_which_criterion_and_why(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"stopping": {"plateau": {"patience": 1, "min_delta": 1.0}}}))  # fires at loop 1
    db = f"sqlite:///{tmp_path}/alectio.db"
    result = run("digits_lr", "--loops", "6", "--initial", "30", "--batch", "20", "--stop", "plateau", "--json", storage=db, config=config)
    assert result.exit_code == 0, result.output
    curve = json.loads(result.stdout)
    assert [p["labeled"] for p in curve] == [30, 50]
    gain = curve[1]["metrics"]["accuracy"] - curve[0]["metrics"]["accuracy"]
    assert curve[1]["stop"] == {"criterion": "plateau", "reason": f"accuracy improved by {gain:+.4f} (< 1.0) over the last 1 loops; "
                                f"best {max(p['metrics']['accuracy'] for p in curve):.4f}"}
    assert f"stopped after loop 1 by plateau: {curve[1]['stop']['reason']}" in result.stderr.splitlines()
    engine = Engine(open_storage(db))
    (experiment,) = engine.storage.list_experiments()
    assert experiment["stop"] == ["plateau"] and not engine.has_selection(experiment["id"], 2)
    # resuming a stopped experiment runs nothing more, and says why again
    again = run("digits_lr", "--resume", experiment["id"], "--json", storage=db)
    assert again.exit_code == 0, again.output
    assert len(json.loads(again.stdout)) == 2 and "stopped after loop 1 by plateau" in again.stderr
    with pytest.raises(StoppedError, match="was stopped after loop 1 by plateau: accuracy improved by"):
        engine.run_loop(experiment["id"], 2)


def test_run_with_two_criteria_names_the_one_that_fired(tmp_path):
    db = f"sqlite:///{tmp_path}/alectio.db"
    result = run("digits_lr", "--loops", "3", "--initial", "30", "--batch", "20", "--stop", "max_uncertainty", "--stop", "plateau",
                 "--json", storage=db)
    assert result.exit_code == 0, result.output
    assert [p.get("stop") for p in json.loads(result.stdout)] == [None, None, None]  # neither fires this early
    assert "stopped after" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stop", "nope"], "Error: unknown stopping criterion 'nope'; known: max_uncertainty, plateau, stabilizing_predictions"),
        (["--stop", "plateu"], "Error: unknown stopping criterion 'plateu' (did you mean 'plateau'?); known: "),
    ],
)
def test_run_refuses_an_unknown_criterion(tmp_path, args, message):
    db = f"sqlite:///{tmp_path}/alectio.db"
    result = run("digits_lr", *args, storage=db)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(message)
    assert Engine(open_storage(db)).storage.list_experiments() == []


# -- the HTTP API ---------------------------------------------------------------------


@pytest.fixture
def api(tmp_path, installed_test_model):
    made = make_app(tmp_path)
    yield made
    made.app.extensions["alectio"]["runner"].shutdown(timeout=5)


def test_api_experiment_takes_stop_and_the_loop_and_curve_carry_it(api):
    created = api.create("digits_lr", initial=30, batch_size=20, loops=5, stop=["plateau"],
                         stopping={"plateau": {"patience": 1, "min_delta": 1.0}})
    eid = created["id"]
    assert created["stop"] == ["plateau"] and created["stopping"]["plateau"]["min_delta"] == 1.0
    for loop in (0, 1):
        assert api.start(eid).status_code == 202
        assert api.wait_status(eid, loop)["status"] == "done"
    state = api.loop(eid, 1)
    assert state["stop"]["criterion"] == "plateau" and state["stop"]["reason"].startswith("accuracy improved by")
    assert "stop" not in api.loop(eid, 0)
    curve = api.get(f"/api/v1/experiments/{eid}/metrics").json["curve"]
    assert [p.get("stop") for p in curve] == [None, state["stop"]]
    refused = api.start(eid)
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "stopped"
    assert refused.json["error"]["message"] == (
        f"experiment {eid!r} was stopped after loop 1 by plateau: {state['stop']['reason']}; no loop comes after it"
    )
    assert api.get(f"/api/v1/experiments/{eid}/loops").json["loops"][-1]["loop"] == 1  # nothing queued


@pytest.mark.parametrize(
    "fields, code, message, field",
    [
        ({"stop": ["nope"]}, "unknown_stopping", "unknown stopping criterion 'nope'; known: max_uncertainty, plateau, stabilizing_predictions", "stop"),
        ({"stop": "plateau"}, "invalid", "stop must be array, got a string", "stop"),
        ({"stop": ["plateau"], "stopping": {"plateau": {"patience": "3"}}}, "invalid", "stopping.plateau.patience must be int, got '3'", None),
    ],
)
def test_api_refuses_bad_stop_with_400(api, fields, code, message, field):
    response = api.post("/api/v1/experiments", json={"model": "digits_lr", **fields})
    assert response.status_code == 400
    assert response.json["error"] == {"code": code, "message": message, **({"field": field} if field else {})}
    assert api.get("/api/v1/experiments").json["experiments"] == []


# -- a model declaring mc_samples, and a strategy reading the labeled records ----------

MC_T = 4


@pytest.fixture
def mc_settling(fake_model):
    """``settling`` written as MC_T noisy passes per record, with embeddings;
    records what ``infer`` was asked to score."""
    calls: list[list[int]] = []
    noise = np.random.default_rng(7).normal(0, 1.5, (300, MC_T, CLASSES))  # per record: the same whichever chunk it is in

    def infer(unlabeled, loop, writer):
        calls.append(list(unlabeled))
        idx = np.asarray(unlabeled)
        passes = settling_logits(idx, loop)[:, None, :] + noise[idx]
        writer.extend(idx, passes.reshape(len(idx), MC_T * CLASSES), embeddings=np.stack([idx % 5, idx % 7], axis=1).astype(float))

    fake_model("mc_settling", pool=300, infer=infer,
               model_info=lambda: {"task": "classification", "labels": ["a", "b", "c"], "mc_samples": MC_T})
    return calls


def test_max_uncertainty_reads_one_pass_per_record_from_a_model_declaring_mc_samples(engine, mc_settling):
    full = engine.create_experiment("mc_settling", strategy="random", initial=20, batch_size=20, loops=8, seed=1)
    run_all(engine, full)
    # the reference: each record's T passes averaged as probabilities, least confidence on the mean
    highest = []
    for k in range(7):
        passes = engine.outputs(full["id"], k)[1].reshape(-1, MC_T, CLASSES)
        p = np.exp(passes - passes.max(axis=2, keepdims=True))
        mean = (p / p.sum(axis=2, keepdims=True)).mean(axis=1)
        highest.append(float((1 - mean.max(axis=1)).max()))
    threshold = (highest[2] + highest[3]) / 2
    expected = next(k for k, h in enumerate(highest) if h < threshold)
    stopped = engine.create_experiment("mc_settling", strategy="random", initial=20, batch_size=20, loops=8, seed=1,
                                       stop=["max_uncertainty"], stopping={"max_uncertainty": {"threshold": threshold}})
    curve = run_all(engine, stopped)
    assert len(curve) == expected + 1
    assert f"scores {highest[expected]:.4f} (least_confidence) < {threshold}" in curve[-1]["stop"]["reason"]


def test_a_loop_that_stops_does_not_score_the_labeled_records_it_would_not_use(engine, mc_settling):
    experiment = engine.create_experiment("mc_settling", strategy="coreset", initial=20, batch_size=20, loops=3, seed=1,
                                          stop=["max_uncertainty"], stopping={"max_uncertainty": {"threshold": 1.0}})
    (point,) = run_all(engine, experiment)  # 1 - p_max < 1 always: stops after loop 0
    assert point["stop"]["criterion"] == "max_uncertainty"
    assert [len(c) for c in mc_settling] == [280]  # the pool only, no second infer on the 20 labeled records
    assert list(engine.storage.iter_outputs(experiment["id"], 0, part="labeled")) == []
    assert not engine.has_selection(experiment["id"], 1)


def test_a_loop_that_goes_on_scores_the_labeled_records_for_a_strategy_that_reads_them(engine, mc_settling):
    experiment = engine.create_experiment("mc_settling", strategy="coreset", initial=20, batch_size=20, loops=3, seed=1,
                                          stop=["max_uncertainty"], stopping={"max_uncertainty": {"threshold": 1e-9}})
    engine.run_loop(experiment["id"], 0)
    assert [len(c) for c in mc_settling] == [280, 20]
    assert engine.storage.get_selection(experiment["id"], 1).size == 20


def test_resume_with_the_stop_it_was_created_with_goes_on_and_another_is_refused_naming_both(tmp_path):
    db = f"sqlite:///{tmp_path}/alectio.db"
    first = run("digits_lr", "--loops", "1", "--initial", "30", "--batch", "20", "--stop", "plateau", "--stop", "plateau", storage=db)
    assert first.exit_code == 0, first.output
    (experiment,) = Engine(open_storage(db)).storage.list_experiments()
    eid = experiment["id"]
    assert experiment["stop"] == ["plateau"]
    same = run("digits_lr", "--resume", eid, "--loops", "2", "--stop", "plateau", "--stop", "plateau", storage=db)
    assert same.exit_code == 0, same.output
    other = run("digits_lr", "--resume", eid, "--loops", "3", "--stop", "max_uncertainty", "--stop", "plateau", storage=db)
    assert other.exit_code == 1
    assert other.output.strip().splitlines()[-1] == (
        f"Error: --stop max_uncertainty --stop plateau conflicts with experiment {eid!r}: it was created with --stop plateau"
    )
    none = tmp_path / "none.db"
    run("digits_lr", "--loops", "1", "--initial", "30", "--batch", "20", storage=f"sqlite:///{none}")
    (bare,) = Engine(open_storage(f"sqlite:///{none}")).storage.list_experiments()
    refused = run("digits_lr", "--resume", bare["id"], "--loops", "2", "--stop", "plateau", storage=f"sqlite:///{none}")
    assert refused.output.strip().splitlines()[-1] == (
        f"Error: --stop plateau conflicts with experiment {bare['id']!r}: it was created with no --stop"
    )


def test_an_experiment_extended_past_its_last_loop_picks_with_a_strategy_reading_the_labeled_records(engine, mc_settling):
    from alectio_core.driver import resume

    experiment = engine.create_experiment("mc_settling", strategy="coreset", initial=20, batch_size=20, loops=2, seed=1)
    run_all(engine, experiment)
    resume(engine, experiment["id"], {}, loops=3)  # alectio run --resume ID --loops 3
    curve = run_all(engine, experiment)
    assert [p["labeled"] for p in curve] == [20, 40, 60]
