"""Bad requests, generated: each gets a 4xx with ``{"error": {"code",
"message"}}``, never a 5xx, and leaves every stored row as it was.

The app holds one experiment whose loop 0 is done (so loop 1 has the
strategy's selection); every example is checked against a snapshot of the
whole SQLite database.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS31Validator
from server_support import make_app, slow_model, snapshot  # noqa: F401 (fixtures)

from alectio_core.schemas import SCHEMAS

BASE = "/api/v1/experiments"
POOL = 500
MAX_BODY = 4096
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def world(tmp_path_factory, slow_model):
    tmp = tmp_path_factory.mktemp("bad-input")
    api = make_app(tmp, max_body_bytes=MAX_BODY)
    experiment = api.create(initial=10, batch_size=5, loops=3, seed=1)
    api.start(experiment["id"])
    assert api.wait_status(experiment["id"], 0)["status"] == "done"
    api.eid = experiment["id"]
    api.db = tmp / "alectio.db"
    api.labeled = api.engine.labeled(api.eid, 0).tolist()
    yield api
    api.app.extensions["alectio"]["runner"].shutdown(timeout=5)


def assert_refused(world, response, *statuses):
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:300])
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.json)
    body = response.json
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


class Unchanged:
    def __init__(self, world):
        self.world = world

    def __enter__(self):
        self.before = snapshot(self.world.db)

    def __exit__(self, *exc):
        if exc[0] is None:
            assert snapshot(self.world.db) == self.before, "a refused request changed stored data"


# -- generators ------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=10)

VALID_CREATE = {"model": "slow_test", "strategy": "random", "batch_size": 5, "initial": 10, "loops": 3, "seed": 0, "config": {}}


def _violates(schema):
    """Values the schema refuses."""
    return _json.filter(lambda v: not OAS31Validator(schema).is_valid(v))


@st.composite
def bad_create_bodies(draw):
    body = dict(VALID_CREATE)
    properties = SCHEMAS["ExperimentCreate"]["properties"]
    how = draw(st.sampled_from(["missing", "type", "range", "unknown_field", "unknown_model", "unknown_strategy", "too_many", "not_object"]))
    if how == "missing":
        del body["model"]
    elif how == "type":
        field = draw(st.sampled_from(sorted(properties)))
        body[field] = draw(_violates(properties[field]))
    elif how == "range":
        field = draw(st.sampled_from(["batch_size", "initial", "loops", "seed"]))
        low, high = properties[field]["minimum"], properties[field]["maximum"]
        body[field] = draw(st.integers(max_value=low - 1) | st.integers(min_value=high + 1))
    elif how == "unknown_field":
        key = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in properties))
        body[key] = draw(_json)
    elif how == "unknown_model":
        body["model"] = draw(st.text(min_size=1, max_size=30).filter(lambda m: m not in ("slow_test", "digits_lr", "digits_cnn")))
    elif how == "unknown_strategy":
        body["strategy"] = draw(st.text(min_size=1, max_size=30).filter(lambda s: s not in ("random", "least_confidence", "margin", "entropy", "kcenter", "coreset", "badge", "typiclust", "bald", "mean_entropy", "diverse_margin")))
    elif how == "too_many":
        body["initial"] = draw(st.integers(min_value=POOL + 1, max_value=2**31 - 1))
    else:
        return draw(_json.filter(lambda v: not isinstance(v, dict)))
    return body


@st.composite
def bad_selections(draw, labeled):
    good = draw(st.lists(st.integers(0, POOL - 1).filter(lambda i: i not in labeled), min_size=1, max_size=6, unique=True))
    how = draw(st.sampled_from(["negative", "duplicate", "out_of_pool", "already", "not_int", "empty", "not_list"]))
    if how == "negative":
        return good + [draw(st.integers(max_value=-1))]
    if how == "duplicate":
        return good + [good[0]]
    if how == "out_of_pool":
        return good + [draw(st.integers(min_value=POOL))]
    if how == "already":
        return good + [draw(st.sampled_from(labeled))]
    if how == "not_int":
        return good + [draw(_json.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool))))]
    if how == "empty":
        return []
    return draw(_json.filter(lambda v: not isinstance(v, list)))


# -- the properties ------------------------------------------------------------------


@SETTINGS
@given(body=bad_create_bodies())
def test_bad_experiment_bodies_are_refused(world, body):
    with Unchanged(world):
        response = world.post(BASE, data=json.dumps(body), content_type="application/json")
        assert_refused(world, response, 400)


@SETTINGS
@given(data=st.data())
def test_bad_selections_are_refused(world, data):
    selected = data.draw(bad_selections(world.labeled))
    with Unchanged(world):
        assert_refused(world, world.start(world.eid, selected=selected), 400)


@SETTINGS
@given(body=_json.filter(lambda v: not (isinstance(v, dict) and set(v) <= {"selected"})))
def test_other_loop_bodies_are_refused(world, body):
    with Unchanged(world):
        response = world.post(f"{BASE}/{world.eid}/loops", data=json.dumps(body), content_type="application/json")
        assert_refused(world, response, 400)


def _not_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return True
    return False


@SETTINGS
@given(raw=st.binary(min_size=1, max_size=200).filter(lambda b: b.strip() and _not_json(b)))
def test_malformed_json_is_refused(world, raw):
    with Unchanged(world):
        for path in (BASE, f"{BASE}/{world.eid}/loops"):
            response = world.post(path, data=raw, content_type="application/json")
            assert_refused(world, response, 400)
            assert response.json["error"]["code"] == "malformed_json"


@SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    segments=st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12), min_size=1, max_size=5),
    prefix=st.sampled_from(["/api/v1/", "/api/v1/experiments/", "/", "/api/v2/"]),
)
def test_unknown_routes_methods_and_ids_are_refused(world, method, segments, prefix):
    # "//host/..." would be read by the test client as a URL with a host name.
    path = "/" + (prefix + "/".join(segments)).lstrip("/")
    if world.eid in path:
        return
    with Unchanged(world):
        response = world.client.open(path, method=method, headers=world.headers)
        if response.status_code < 400:  # a real route by chance: only reading is possible here
            assert method == "GET"
            return
        assert_refused(world, response, 400, 404, 405, 409, 415)


@SETTINGS
@given(
    experiment=st.text(min_size=1, max_size=70).filter(lambda s: "/" not in s),
    loop=st.integers(min_value=0, max_value=2**80),
    action=st.sampled_from(["get", "cancel", "start", "metrics", "show", "list"]),
)
def test_unknown_experiments_and_loops_are_404(world, experiment, loop, action):
    if experiment == world.eid:
        experiment += "x"
    if action in ("get", "cancel") and loop > 0:
        experiment = world.eid  # a known experiment, a loop never started
    paths = {
        "get": ("GET", f"{BASE}/{experiment}/loops/{loop}"),
        "cancel": ("POST", f"{BASE}/{experiment}/loops/{loop}/cancel"),
        "start": ("POST", f"{BASE}/{experiment}/loops"),
        "metrics": ("GET", f"{BASE}/{experiment}/metrics"),
        "show": ("GET", f"{BASE}/{experiment}"),
        "list": ("GET", f"{BASE}/{experiment}/loops"),
    }
    method, path = paths[action]
    with Unchanged(world):
        response = world.client.open(path, method=method, headers=world.headers)
        if path.rstrip("/").count("/") != path.count("/") or response.status_code == 405:
            return  # an id such as "." is folded into another route by the URL rules
        assert_refused(world, response, 404)


@SETTINGS
@given(header=st.text(max_size=80))
def test_wrong_authorization_is_401(world, header):
    with Unchanged(world):
        try:
            response = world.client.post(BASE, json=VALID_CREATE, headers={"Authorization": header})
        except ValueError:
            return  # not a valid header value at all
        assert_refused(world, response, 401)


# -- one of each, by name ----------------------------------------------------------


def test_named_bad_requests(world):
    eid = world.eid
    cases = [
        (world.post(BASE, data="{", content_type="application/json"), 400, "malformed_json"),
        (world.post(BASE, data='{"model": "slow_test", "seed": NaN}', content_type="application/json"), 400, "malformed_json"),
        (world.post(BASE, data="[" * 2000 + "]" * 2000, content_type="application/json"), 400, None),
        (world.post(BASE), 400, "invalid"),
        (world.post(BASE, data="model=slow_test", content_type="application/x-www-form-urlencoded"), 415, None),
        (world.post(BASE, json={"model": "slow_test", "config": {"x": "y" * MAX_BODY}}), 413, None),
        (world.post(BASE, json={"model": "no_such_model"}), 400, "unknown_model"),
        (world.post(BASE, json={"model": "slow_test", "strategy": "no_such"}), 400, "unknown_strategy"),
        (world.post(BASE, json={"model": "slow_test", "batch_size": "5"}), 400, "invalid"),
        (world.post(BASE, json={"model": "slow_test", "initial": -1}), 400, "invalid"),
        (world.post(BASE, json={"model": "slow_test", "initial": POOL + 1}), 400, "invalid"),
        (world.post(BASE, json={"model": "slow_test", "id": "bad id"}), 400, "invalid"),
        (world.post(BASE, json={"model": "slow_test", "id": eid}), 409, "conflict"),
        (world.start(eid, selected=[1, 1]), 400, "invalid"),
        (world.start(eid, selected=[-1]), 400, "invalid"),
        (world.start(eid, selected=[POOL]), 400, "invalid"),
        (world.start(eid, selected=[2**64]), 400, "invalid"),
        (world.start(eid, chosen=[1]), 400, "invalid"),
        (world.get(f"{BASE}/nope"), 404, "not_found"),
        (world.get(f"{BASE}/{eid}/loops/1"), 404, "not_found"),
        (world.get(f"{BASE}/{eid}/loops/{2**40}"), 404, "not_found"),
        (world.get(f"{BASE}/{eid}/loops/-1"), 404, "not_found"),
        (world.get(f"{BASE}/{eid}/loops/x"), 404, "not_found"),
        (world.get("/api/v1/nothing"), 404, "not_found"),
        (world.client.patch(f"{BASE}/{eid}", headers=world.headers), 405, "method_not_allowed"),
        (world.client.delete(f"{BASE}/nope", headers=world.headers), 404, "not_found"),
        (world.client.delete(f"{BASE}/{eid}/loops", headers=world.headers), 405, "method_not_allowed"),
        (world.client.put(BASE, headers=world.headers), 405, "method_not_allowed"),
    ]
    before = snapshot(world.db)
    for response, status, code in cases:
        assert_refused(world, response, status)
        if code:
            assert response.json["error"]["code"] == code, response.json
    assert snapshot(world.db) == before


def test_a_refused_body_names_the_field_and_what_is_wrong(world):
    """The messages a user reads: the field by its path, and the rule."""
    eid = world.eid
    cases = [
        (world.post(BASE, json={"model": "slow_test", "batch_size": "5"}), "batch_size must be integer, got a string"),
        (world.post(BASE, json={"model": "slow_test", "loops": 5.0}), "loops must be integer, got a number"),
        (world.post(BASE, json={"model": "slow_test", "initial": 0}), "initial must be between 1 and 2147483647, got 0"),
        (world.post(BASE, json={"model": "slow_test", "id": "bad id"}), "id 'bad id' does not match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"),
        (world.post(BASE, json={"model": "slow_test", "id": "abc\n"}), "id 'abc\\n' does not match"),
        (world.post(BASE, json={"model": ""}), "model must be 1-200 characters long"),
        (world.post(BASE, json={"strategy": "random"}), "body is missing the required field 'model'"),
        (world.post(BASE, json=[1]), "body must be object, got an array"),
        (world.start(eid, selected=[1, 2, "3"]), "selected[2] must be integer, got a string"),
        (world.start(eid, selected=[1, -4]), "selected[1] must be between 0 and 9223372036854775807, got -4"),
        (world.start(eid, selected=[]), "selected must hold at least 1 item(s)"),
        (world.start(eid, chosen=[1]), "body has an unknown field 'chosen'; known fields: selected"),
    ]
    for response, message in cases:
        assert response.status_code == 400 and response.json["error"]["code"] == "invalid", response.json
        assert response.json["error"]["message"].startswith(message), (message, response.json)
