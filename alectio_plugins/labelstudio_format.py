"""Label Studio's formats, as pure functions: the labelling interface
(``label_config``) made from an experiment's task and class names or read
back from a project, the tasks a selection becomes (with the model's
prediction as a pre-annotation), and an annotation turned into a label in
the task's format. No client and no network here
(:mod:`.labeller_labelstudio` does the talking).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Mapping
from xml.sax.saxutils import quoteattr

from alectio_core.labelling import SKIP
from alectio_core.labels_io import labelstudio_tasks

#: The control tag each task is labelled with, and the result ``type`` it gives.
CONTROLS = {
    "classification": ("Choices", "choices"),
    "multilabel": ("Choices", "choices"),
    "object_detection": ("RectangleLabels", "rectanglelabels"),
    "regression": ("Number", "number"),
}
#: Result types alectio does not read yet, and what they are.
NOT_READ = {
    "brushlabels": "brush masks",
    "polygonlabels": "polygons",
    "keypointlabels": "keypoints",
    "ellipselabels": "ellipses",
}
OBJECTS = ("Image", "Text", "HyperText")


class FormatError(ValueError):
    """An interface or an annotation alectio cannot use; the message says why."""


@dataclass(frozen=True)
class Interface:
    """What a project's ``label_config`` labels, and with what."""

    control: str  # the control tag's name (``from_name`` of results)
    to_name: str  # the object tag's name
    data_key: str  # the task data field the object shows (``$image`` -> image)
    labels: tuple[str, ...]  # the choices or labels offered (none for a number)


def _check_task(task: str) -> None:
    if task == "segmentation":
        raise FormatError(
            "segmentation is labelled with brush masks, which the labelstudio labeller does not read yet; "
            "export the selection ('alectio export') and import the masks with 'alectio labels import'"
        )
    if task not in CONTROLS:
        raise FormatError(f"the labelstudio labeller cannot label task {task!r}")


def _class_names(task: str, class_names: Any) -> list[str]:
    if task == "regression":
        return []
    if not class_names:
        raise FormatError(
            "the model gives no class names (model_info 'labels'), so there is nothing to offer annotators; "
            "give the labelling interface as labeller.label_config"
        )
    return [str(name) for name in class_names]


def make_label_config(task: str, class_names: Any, object_tag: str = "Image") -> str:
    """The labelling interface for ``task``: ``object_tag`` showing ``$image``
    (or ``$text``) and one control offering the experiment's classes."""
    _check_task(task)
    names = _class_names(task, class_names)
    key = object_tag.lower()
    control, _ = CONTROLS[task]
    lines = ["<View>", f'  <{object_tag} name="{key}" value="${key}"/>']
    if control == "Number":
        lines.append(f'  <Number name="label" toName="{key}" required="true"/>')
    else:
        extra = ' choice="single" required="true"' if task == "classification" else ' choice="multiple"' if control == "Choices" else ""
        lines.append(f'  <{control} name="label" toName="{key}"{extra}>')
        item = "Choice" if control == "Choices" else "Label"
        lines += [f"    <{item} value={quoteattr(name)}/>" for name in names]
        lines.append(f"  </{control}>")
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def read_label_config(label_config: str, task: str, class_names: Any) -> Interface:
    """The interface of ``label_config``, checked against the experiment: its
    control must suit ``task`` and offer exactly the model's classes. A
    label the model does not have, or a class left out, is named."""
    _check_task(task)
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as exc:
        raise FormatError(f"the label config is not valid XML: {exc}") from None
    tag, _ = CONTROLS[task]
    controls = [node for node in root.iter() if node.tag == tag]
    if len(controls) != 1:
        found = sorted({node.tag for node in root.iter() if node.get("toName")}) or ["none"]
        raise FormatError(f"the label config needs exactly one <{tag}> for task {task!r}; it has {', '.join(found)}")
    (node,) = controls
    name, to_name = node.get("name") or "", node.get("toName") or ""
    objects = {o.get("name"): o for o in root.iter() if o.tag in OBJECTS}
    if not name or to_name not in objects:
        raise FormatError(f"the label config's <{tag}> needs a name and a toName naming an {'/'.join(OBJECTS)} tag")
    value = objects[to_name].get("value") or ""
    if not value.startswith("$"):
        raise FormatError(f"the label config's <{objects[to_name].tag} name={to_name!r}> needs value=\"$field\"")
    offered = tuple(item.get("value") or "" for item in node if item.tag in ("Choice", "Label"))
    names = _class_names(task, class_names)
    extra = [label for label in offered if label not in names]
    if extra:
        raise FormatError(
            f"the Label Studio project offers the label {extra[0]!r}, which is not one of the model's classes: {', '.join(names)}"
        )
    missing = [label for label in names if label not in offered]
    if missing:
        raise FormatError(f"the Label Studio project does not offer the model's class {missing[0]!r}")
    return Interface(control=name, to_name=to_name, data_key=value[1:], labels=offered)


# ----------------------------------------------------------------------
# A selection out: tasks
# ----------------------------------------------------------------------


def make_task(experiment: Mapping[str, Any], loop: int, row: Mapping[str, Any], interface: Interface, data: str) -> dict:
    """One selected record as a Label Studio task: the task ``alectio
    export --format labelstudio`` writes (the previous loop's prediction as
    a pre-annotation, scored with the strategy's score, sortable in the
    Data Manager), plus what the interface shows (``data``: a template of
    ``{reference}`` and ``{index}``) and the ``alectio_*`` fields that
    bring an annotation back to its record."""
    (task,) = labelstudio_tasks(experiment, loop, [row], from_name=interface.control, to_name=interface.to_name)
    task["data"].update(
        {
            interface.data_key: data.format(reference=task["data"]["reference"], index=row["index"]),
            "alectio_experiment": experiment["id"],
            "alectio_loop": loop,
        }
    )
    return task


# ----------------------------------------------------------------------
# Labels in: an annotation as a label
# ----------------------------------------------------------------------

def _class_id(name: Any, class_names: list[str]) -> int:
    if name not in class_names:
        raise FormatError(f"label {name!r} is not one of the model's classes: {', '.join(class_names)}")
    return class_names.index(name)


def read_annotation(task: str, class_names: Any, annotation: Mapping[str, Any]) -> Any:
    """The label an annotation gives, in the task's format, or :data:`SKIP`.

    Choices become class ids; rectangles (in percent of the image) become
    ``{"boxes": [[x1, y1, x2, y2]], "objects": [ids]}`` in pixels, from
    each result's ``original_width``/``original_height``."""
    if annotation.get("was_cancelled"):
        return SKIP
    results = [r for r in annotation.get("result") or [] if isinstance(r, Mapping)]
    for result in results:
        if result.get("type") in NOT_READ:
            raise FormatError(f"{NOT_READ[result['type']]} are not read yet (only choices, rectangles and numbers)")
    _check_task(task)
    names = _class_names(task, class_names)
    _, kind = CONTROLS[task]
    mine = [r for r in results if r.get("type") == kind]
    if task == "object_detection":
        return {"boxes": [_box(r) for r in mine], "objects": [_class_id(_one(r, "rectanglelabels"), names) for r in mine]}
    if not mine:
        raise FormatError(f"the annotation has no {kind} result")
    if task == "regression":
        number = mine[-1].get("value", {}).get("number")
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise FormatError(f"the annotation's number is {number!r}, not a finite number")
        return number
    chosen = [c for r in mine for c in r.get("value", {}).get("choices") or []]
    ids = [_class_id(name, names) for name in chosen]
    if task == "multilabel":
        return sorted(set(ids))
    if len(ids) != 1:
        raise FormatError(f"the annotation has {len(ids)} choices; a classification record takes one")
    return ids[0]


def _one(result: Mapping[str, Any], key: str) -> Any:
    labels = result.get("value", {}).get(key) or []
    if len(labels) != 1:
        raise FormatError(f"a rectangle needs exactly one label, this one has {len(labels)}")
    return labels[0]


def _box(result: Mapping[str, Any]) -> list[float]:
    value = result.get("value") or {}
    if value.get("rotation"):
        raise FormatError(f"a rectangle is rotated by {value['rotation']} degrees; alectio's boxes are upright")
    width, height = result.get("original_width"), result.get("original_height")
    if not (isinstance(width, (int, float)) and width > 0 and isinstance(height, (int, float)) and height > 0):
        raise FormatError("a rectangle comes without the image's original_width and original_height")
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"a rectangle needs numbers x, y, width, height, got {dict(value)!r}") from None
    return [x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100]
