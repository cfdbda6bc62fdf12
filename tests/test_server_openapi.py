"""``GET /api/v1/openapi.json``: a valid OpenAPI 3.1 document that matches
the app's real routes, and responses that match the documented schemas."""

from __future__ import annotations

import re

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec
from server_support import api, slow_model  # noqa: F401 (fixtures)

BASE = "/api/v1/experiments"


@pytest.fixture
def doc(api):
    response = api.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json


def _documented_schema(doc, path, method, status):
    operation = doc["paths"][path][method]
    content = operation["responses"][str(status)]["content"]["application/json"]
    return {**content["schema"], "components": doc["components"]}


def check_response(doc, path, method, response):
    """The response's body validates against the documented schema for its status."""
    assert str(response.status_code) in doc["paths"][path][method]["responses"], (path, method, response.status_code)
    OAS31Validator(_documented_schema(doc, path, method, response.status_code)).validate(response.json)


def test_the_document_is_valid_openapi(doc):
    validate_spec(doc)
    assert doc["openapi"].startswith("3.")


def test_the_document_describes_exactly_the_apps_routes(api, doc):
    routes = set()
    for rule in api.app.url_map.iter_rules():
        if rule.endpoint.startswith("dashboard."):  # the dashboard's HTML pages, not the API
            continue
        path = re.sub(r"<(?:[a-z]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    documented = {(path, method) for path, item in doc["paths"].items() for method in item if method != "parameters"}
    assert documented == routes
    for path, item in doc["paths"].items():
        declared = {p["name"] for p in item.get("parameters", [])}
        assert declared == set(re.findall(r"{([^}]+)}", path)), path


def test_every_operation_but_health_documents_auth_and_errors(doc):
    assert doc["security"] == [{"bearer": []}, {"session": []}]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if path == "/health":
                assert operation["security"] == []
                continue
            assert "401" in operation["responses"], (path, method)
            if "requestBody" in operation or "{" in path:
                assert {"400", "404"} & set(operation["responses"]), (path, method)


def test_real_responses_match_the_documented_schemas(api, doc):
    check_response(doc, "/health", "get", api.client.get("/health"))
    check_response(doc, "/api/v1/models", "get", api.get("/api/v1/models"))
    check_response(doc, "/api/v1/plugins", "get", api.get("/api/v1/plugins"))
    created = api.post(BASE, json={"model": "slow_test", "initial": 10, "batch_size": 5, "loops": 3})
    check_response(doc, BASE, "post", created)
    eid = created.json["id"]
    check_response(doc, BASE, "post", api.post(BASE, json={"model": 3}))
    check_response(doc, BASE, "post", api.post(BASE, data="{", content_type="application/json"))
    check_response(doc, BASE, "get", api.get(BASE))
    check_response(doc, BASE, "get", api.client.get(BASE))  # 401
    one = f"{BASE}/{{experiment_id}}"
    check_response(doc, one, "get", api.get(f"{BASE}/{eid}"))
    check_response(doc, one, "get", api.get(f"{BASE}/missing"))
    loops = f"{BASE}/{{experiment_id}}/loops"
    check_response(doc, loops, "post", api.start(eid))
    check_response(doc, f"{loops}/{{loop}}", "get", api.get(f"{BASE}/{eid}/loops/0"))
    api.wait_status(eid, 0)
    check_response(doc, f"{loops}/{{loop}}", "get", api.get(f"{BASE}/{eid}/loops/0"))
    check_response(doc, f"{loops}/{{loop}}", "get", api.get(f"{BASE}/{eid}/loops/7"))
    check_response(doc, loops, "get", api.get(f"{BASE}/{eid}/loops"))
    check_response(doc, loops, "post", api.start(eid, selected=[-1]))
    check_response(doc, f"{loops}/{{loop}}/cancel", "post", api.post(f"{BASE}/{eid}/loops/0/cancel"))
    check_response(doc, f"{BASE}/{{experiment_id}}/metrics", "get", api.get(f"{BASE}/{eid}/metrics"))
    check_response(doc, "/api/v1/openapi.json", "get", api.get("/api/v1/openapi.json"))
    check_response(doc, one, "delete", api.client.delete(f"{BASE}/{eid}", headers=api.headers))
    check_response(doc, one, "delete", api.client.delete(f"{BASE}/{eid}", headers=api.headers))  # 404 now
