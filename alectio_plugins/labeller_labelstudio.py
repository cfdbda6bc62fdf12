"""The ``labelstudio`` labeller: selections become tasks in a Label Studio
project, annotations come back as labels (see :mod:`alectio_core.labelling`).

Needs the extra ``alectio[labelstudio]`` (``label-studio-sdk``), imported
only when the labeller is configured. Settings (``labeller:`` in
``config.yaml``)::

    url: http://127.0.0.1:8080          # the Label Studio server
    api_key_env: LABEL_STUDIO_API_KEY   # the variable holding its access token
    project: "alectio {experiment}"     # title; created when missing, else reused
    label_config: null                  # the interface; made from the task and classes when not given
    object: image                       # what the made interface shows: image or text
    data: "{reference}"                 # the task's image/text: a template of {reference} and {index}
    webhook_url: null                   # alectio as Label Studio reaches it; null: polling only
    webhook_token_env: null             # the variable holding an alectio API token for the webhook
    timeout: 30                         # seconds per request to Label Studio

A project's interface must offer exactly the model's classes. Each task's
data carries ``alectio_experiment``, ``alectio_loop`` and
``alectio_index``; the experiment record's ``labeller.state`` keeps the
project id and the task ids of each loop sent.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from alectio_core.config import parse_section
from alectio_core.errors import ConfigError
from alectio_core.hookspecs import hookimpl

from .labelstudio_format import FormatError, Interface, make_label_config, make_task, read_annotation, read_label_config

ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")


def _one_of(*allowed: str) -> dict:
    return {"rule": (lambda v: v in allowed, f"must be one of {', '.join(allowed)}")}


@dataclass
class LabelStudioSettings:
    url: str = "http://127.0.0.1:8080"
    api_key_env: str = "LABEL_STUDIO_API_KEY"
    project: str = "alectio {experiment}"
    label_config: str | None = None
    object: str = field(default="image", metadata=_one_of("image", "text"))
    data: str = "{reference}"
    webhook_url: str | None = None
    webhook_token_env: str | None = None
    timeout: float = field(default=30.0, metadata={"rule": (lambda v: v > 0, "must be > 0")})


def _variable(name: str, key: str, source: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{source}: key 'labeller.{key}': the variable {name} is not set; put {what} in it")
    return value


class LabelStudio:
    """The labeller (made by :func:`factory`)."""

    def __init__(self, settings: LabelStudioSettings, source: str):
        try:
            from label_studio_sdk import LabelStudio as Client
        except ImportError:
            raise ConfigError(
                f"{source}: key 'labeller.name': the labelstudio labeller needs the Label Studio client: "
                "pip install 'alectio[labelstudio]'"
            ) from None
        self.settings = settings
        api_key = _variable(settings.api_key_env, "api_key_env", source, "Label Studio's access token")
        self.webhook_token = None
        if settings.webhook_url:
            if not settings.webhook_token_env:
                raise ConfigError(
                    f"{source}: key 'labeller.webhook_token_env' is missing: name the variable holding the alectio API "
                    "token Label Studio sends with its webhook (create one with 'alectio token create --name labelstudio')"
                )
            self.webhook_token = _variable(settings.webhook_token_env, "webhook_token_env", source, "an alectio API token")
        # Any: the SDK's generated types change from release to release (2.x); what is used here does not.
        self.client: Any = Client(base_url=settings.url.rstrip("/"), api_key=api_key, timeout=settings.timeout)
        # The client's httpx logs a line per request at INFO: one per poll would drown the server's log.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    def __repr__(self) -> str:  # never the tokens
        return f"<labeller labelstudio {self.settings.url}>"

    # -- the project ------------------------------------------------------------

    def _interface(self, experiment: Mapping[str, Any], label_config: str) -> Interface:
        try:
            return read_label_config(label_config, experiment["task"], experiment.get("labels"))
        except FormatError as exc:
            raise ValueError(f"experiment {experiment['id']}: {exc}") from None

    def _project(self, experiment: Mapping[str, Any], state: dict) -> tuple[int, Interface]:
        """The experiment's project (found by title, else created) and its interface, checked."""
        if "project" in state:
            project = self.client.projects.get(state["project"])
            return project.id, self._interface(experiment, project.label_config)
        title = self.settings.project.format(experiment=experiment["id"], model=experiment["model"])
        found = [p for p in self.client.projects.list(title=title) if p.title == title]
        if found:
            project = self.client.projects.get(found[0].id)
            interface = self._interface(experiment, project.label_config)
            self._webhook(project.id)
            return project.id, interface
        label_config = self.settings.label_config
        if label_config is None:
            try:
                label_config = make_label_config(experiment["task"], experiment.get("labels"), self.settings.object.title())
            except FormatError as exc:
                raise ValueError(f"experiment {experiment['id']}: {exc}") from None
        interface = self._interface(experiment, label_config)
        project = self.client.projects.create(
            title=title,
            label_config=label_config,
            description=f"alectio experiment {experiment['id']} (model {experiment['model']}): label the records it selects",
        )
        self._webhook(project.id)
        return project.id, interface

    def _webhook(self, project: int) -> None:
        """Label Studio calls alectio when an annotation is made or changed
        (a project made by hand, or whose webhook a failed send did not get
        to, gets it here too)."""
        if not self.settings.webhook_url:
            return
        url = f"{self.settings.webhook_url.rstrip('/')}/api/v1/labellers/labelstudio/webhook"
        if any(hook.url == url for hook in self.client.webhooks.list(project=str(project))):
            return
        self.client.webhooks.create(
            url=url,
            project=project,
            send_payload=True,
            send_for_all_actions=False,
            actions=list(ANNOTATION_ACTIONS),
            headers={"Authorization": f"Bearer {self.webhook_token}"},
        )

    def _tasks(self, project: int, fields: str = "task_only") -> list[Any]:
        return list(self.client.tasks.list(project=project, fields=fields, page_size=1000))

    # -- the labeller's four methods ------------------------------------------

    def send(self, experiment: Mapping[str, Any], loop: int, rows: list[dict], state: dict) -> dict:
        """Import the rows not yet in the project as tasks (a send retried
        after a failure half-way does not duplicate tasks)."""
        project, interface = self._project(experiment, state)
        state["project"] = project
        there = {
            int(t.data["alectio_index"]): t.id
            for t in self._tasks(project)
            if t.data.get("alectio_experiment") == experiment["id"] and t.data.get("alectio_loop") == loop
        }
        new = [make_task(experiment, loop, row, interface, self.settings.data) for row in rows if int(row["index"]) not in there]
        if new:
            response = self.client.projects.import_tasks(project, request=new, return_task_ids=True)
            there.update(zip((t["data"]["alectio_index"] for t in new), getattr(response, "task_ids", None) or []))
        state.setdefault("tasks", {})[str(loop)] = {str(i): task for i, task in sorted(there.items())}
        return state

    def collect(self, experiment: Mapping[str, Any], loop: int, state: dict) -> list[dict]:
        if "project" not in state:
            return []
        wanted = set((state.get("tasks") or {}).get(str(loop), {}).values())
        if not wanted:
            return []
        # Only this loop's tasks, not the whole project's, on every poll.
        only = json.dumps({"selectedItems": {"all": False, "included": sorted(wanted)}})
        found = []
        for task in self.client.tasks.list(project=state["project"], fields="all", query=only, page_size=1000):
            if task.id in wanted and task.annotations:
                latest = max(task.annotations, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0))
                found.append(self._annotation(task.data, latest))
        return found

    def receive(self, body: Any) -> list[dict]:
        if not isinstance(body, Mapping) or "action" not in body:
            raise ValueError("the webhook body is not a Label Studio event (no 'action')")
        if body["action"] not in ANNOTATION_ACTIONS:
            return []
        annotations, tasks = body.get("annotation"), body.get("task")
        if isinstance(annotations, Mapping):
            annotations, tasks = [annotations], [tasks]
        by_id = {t.get("id"): t for t in tasks or [] if isinstance(t, Mapping)}
        found = []
        for annotation in annotations or []:
            task = by_id.get(annotation.get("task")) or {}
            data = task.get("data") or {}
            if "alectio_index" in data and "alectio_experiment" in data:
                found.append(self._annotation(data, annotation))
        return found

    def convert(self, experiment: Mapping[str, Any], annotation: Mapping[str, Any]) -> Any:
        return read_annotation(experiment["task"], experiment.get("labels"), annotation["annotation"])

    @staticmethod
    def _annotation(data: Mapping[str, Any], annotation: Mapping[str, Any]) -> dict:
        who = str(annotation.get("created_username") or "").strip().split(",")[0].strip()
        by = who or (f"labelstudio user {annotation['completed_by']}" if annotation.get("completed_by") else None)
        return {"experiment_id": data["alectio_experiment"], "index": data["alectio_index"], "by": by, "annotation": dict(annotation)}


def _template(template: str, key: str, source: str, **fields: Any) -> None:
    """A template naming a field it is not given fails at start-up, not at the first send."""
    try:
        template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"{source}: key 'labeller.{key}': {template!r} is not a template of {', '.join('{%s}' % f for f in fields)} ({exc!r})"
        ) from None


def factory(settings: Mapping[str, Any], source: str) -> LabelStudio:
    checked = parse_section(LabelStudioSettings, dict(settings), "labeller.", source)
    _template(checked.project, "project", source, experiment="e", model="m")
    _template(checked.data, "data", source, reference="r", index=0)
    return LabelStudio(checked, source)


@hookimpl(trylast=True)  # a plugin registering "labelstudio" itself is called first, and wins
def register_labellers(register):
    register("labelstudio", factory)
