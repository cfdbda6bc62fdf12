"""Labels in, selections out: the formats people label with.

In: a label file (csv with a header naming ``index`` and ``label``, an
optional ``skip`` column; or JSON Lines of ``{"index", "label"}`` /
``{"index", "skip": true}``), or the body of ``POST .../labels``
(``{"labels": {"INDEX": label}, "skip": [INDEX]}``), read into
:class:`LabelRow` s. Every bad row is found before anything is stored:
:class:`BadLabels` lists them all (where, index, why: the rows wrong on
their own and those the experiment refuses, in one report), and
:func:`store_labels` stores all the rows in one step or none.

Out: a loop's selection (the rows of ``Engine.selection``) as csv, JSON
Lines or Label Studio tasks (its import format), classes by name. The
csv and JSON Lines files go back in as they are once their ``label``
column is filled in (typed, or a ``prediction`` copied);
a row left blank is simply not labelled yet.

The CLI, the HTTP API and the labellers all read and write through here.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .errors import InvalidLabels, ValidationError

FORMATS = ("csv", "jsonl", "labelstudio")
EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "labelstudio"}
CSV_COLUMNS = ("index", "reference", "score", "prediction", "label", "skip")
_EXPORTED = {"reference", "score", "prediction"}  # written by export, ignored when read back
_TRUE, _FALSE = {"true", "1", "yes", "y"}, {"false", "0", "no", "n", ""}
MESSAGE_PROBLEMS = 20  # problems spelled out in the one-line message; `problems` has them all
_BAD = object()  # a label cell that is not what it claims to be (reported)


@dataclass(frozen=True)
class LabelRow:
    """One record's label (or skip), and where it came from (``line 3``, ``labels["12"]``)."""

    where: str
    index: int
    label: Any = None
    skip: bool = False


class BadLabels(ValidationError):
    """Rows that cannot be stored; none of the input was."""

    code = "invalid_labels"

    def __init__(self, source: str, problems: Sequence[dict]):
        self.source = source
        self.problems = list(problems)  # {"where", "index", "message"}
        shown = "; ".join(describe(p) for p in self.problems[:MESSAGE_PROBLEMS])
        more = len(self.problems) - MESSAGE_PROBLEMS
        rows = f"{len(self.problems)} bad row{'' if len(self.problems) == 1 else 's'}"
        super().__init__(f"{source}: {rows}, nothing stored: {shown}" + (f"; and {more} more" if more > 0 else ""))


def describe(problem: Mapping[str, Any]) -> str:
    """``line 3 (index 12): why``."""
    index = problem.get("index")
    return f"{problem['where']}{'' if index is None else f' (index {index})'}: {problem['message']}"


class _Problems:
    def __init__(self) -> None:
        self.found: list[dict] = []

    def add(self, where: str, index: Any, message: str) -> None:
        self.found.append({"where": where, "index": index, "message": message})


# -- reading ---------------------------------------------------------------------


def format_of(name: str, text: str = "") -> str:
    """The format a file name's extension says, else what the text looks like."""
    for ext, fmt in EXTENSIONS.items():
        if name.lower().endswith(ext):
            return fmt
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def read_labels(data: bytes | str, name: str = "labels", fmt: str | None = None) -> list[LabelRow]:
    """The labelled and skipped rows of a csv or JSON Lines file (blank
    rows left out); ``BadLabels`` listing every bad row otherwise."""
    rows, problems = parse_file(data, name, fmt)
    if problems:
        raise BadLabels(name, problems)
    return rows


def parse_file(data: bytes | str, name: str = "labels", fmt: str | None = None) -> tuple[list[LabelRow], list[dict]]:
    """The good rows of a csv or JSON Lines file and the bad rows' problems
    (``BadLabels`` at once for a file that is not one at all), so that
    :func:`store_labels` can check the good rows too and report all."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is no part of the header
        except UnicodeDecodeError as exc:
            raise BadLabels(name, [{"where": f"byte {exc.start}", "index": None, "message": "not UTF-8 text"}]) from None
    fmt = fmt or format_of(name, data)
    problems = _Problems()
    if fmt == "csv":
        return _read_csv(data, name, problems), problems.found
    if fmt == "jsonl":
        return _read_jsonl(data, problems), problems.found
    raise ValidationError(f"{name}: labels are read from csv or jsonl files, not {fmt}")


def _read_csv(text: str, name: str, problems: _Problems) -> list[LabelRow]:
    # A segmentation mask exported as JSON is one cell, often over the csv module's
    # 128 kB default; the file is in memory already, so a cell limit guards nothing.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise BadLabels(name, [{"where": "line 1", "index": None, "message": f"not csv: {exc}"}]) from None
    columns = [c.strip().lower() for c in header or []]
    if "index" not in columns or "label" not in columns:
        got = ",".join(header or []) or "nothing"
        raise BadLabels(name, [{"where": "line 1", "index": None, "message": f"the header must name the columns index and label (and optionally skip), got {got!r}"}])
    at = {c: columns.index(c) for c in ("index", "label", "skip") if c in columns}
    rows: list[LabelRow] = []
    seen: dict[int, str] = {}
    while True:
        where = f"line {reader.line_num + 1}"  # where the row starts (a quoted cell may span lines)
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.add(where, None, f"not csv: {exc}")
            break
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            problems.add(where, None, f"{len(cells)} cells, the header has {len(columns)} (quote a label holding commas)")
            continue
        given = {column: cells[i].strip() if i < len(cells) else "" for column, i in at.items()}
        index = _csv_index(given["index"], where, problems)
        label = _csv_label(given["label"], where, index, problems)
        skip = _csv_flag(given.get("skip", ""), where, index, problems)
        if index is None or label is _BAD or skip is None:
            continue
        row = _row(where, index, label, skip, seen, problems)
        if row is not None:
            rows.append(row)
    return rows


def _csv_index(cell: str, where: str, problems: _Problems) -> int | None:
    if not cell:
        problems.add(where, None, "no index")
        return None
    if not cell.isdigit() or not cell.isascii():
        why = "below 0" if cell.startswith("-") and cell[1:].isdigit() else "not an integer"
        problems.add(where, None, f"index {cell!r} is {why}")
        return None
    return int(cell)


def _csv_label(cell: str, where: str, index: int | None, problems: _Problems) -> Any:
    """A JSON list, object or quoted string; any other cell as written, text
    (a class name, or an id or a number the engine reads from it: a bare
    ``1`` may be the class named "1")."""
    if not cell:
        return None
    if cell[0] in "[{\"":
        try:
            return json.loads(cell, parse_constant=_not_json)
        except ValueError as exc:
            problems.add(where, index, f"label {cell!r} is not valid JSON: {exc}")
            return _BAD
    return cell


def _csv_flag(cell: str, where: str, index: Any, problems: _Problems) -> bool | None:
    if cell.lower() in _TRUE | _FALSE:
        return cell.lower() in _TRUE
    problems.add(where, index, f"skip must be true or false, got {cell!r}")
    return None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _read_jsonl(text: str, problems: _Problems) -> list[LabelRow]:
    rows: list[LabelRow] = []
    seen: dict[int, str] = {}
    known = ("index", "label", "skip")
    for line, raw in enumerate(text.splitlines(), start=1):
        where = f"line {line}"
        if not raw.strip():
            continue
        try:
            item = json.loads(raw, parse_constant=_not_json)
        except (ValueError, RecursionError) as exc:
            problems.add(where, None, f"not valid JSON: {exc}")
            continue
        if not isinstance(item, dict):
            problems.add(where, None, 'each line must be an object {"index": ..., "label": ...} or {"index": ..., "skip": true}')
            continue
        index = _json_index(item.get("index"), "index" in item, where, problems)
        unknown = sorted(set(item) - set(known) - _EXPORTED)
        if unknown:
            problems.add(where, index, f"unknown field {unknown[0]!r}; known fields: {', '.join(known)}")
            continue
        skip = item.get("skip", False)
        if not isinstance(skip, bool):
            problems.add(where, index, f"skip must be true or false, got {skip!r}")
            continue
        if index is None:
            continue
        row = _row(where, index, item.get("label"), skip, seen, problems)
        if row is not None:
            rows.append(row)
    return rows


def _json_index(value: Any, present: bool, where: str, problems: _Problems) -> int | None:
    if not present:
        problems.add(where, None, "no index")
    elif isinstance(value, bool) or not isinstance(value, int):
        problems.add(where, None, f"index {json.dumps(value)} is not an integer")
    elif value < 0:
        problems.add(where, None, f"index {value} is below 0")
    else:
        return value
    return None


def _row(where: str, index: int, label: Any, skip: bool, seen: dict[int, str], problems: _Problems) -> LabelRow | None:
    """The row, unless it is blank (neither label nor skip) or wrong as a whole."""
    if label is not None and skip:
        problems.add(where, index, "has both a label and skip; give one")
        return None
    if index in seen:
        problems.add(where, index, f"duplicate row: index {index} is on {seen[index]} too")
        return None
    seen[index] = where
    if label is None and not skip:
        return None
    return LabelRow(where, index, None if skip else label, skip)


def rows_from_body(body: Mapping[str, Any]) -> list[LabelRow]:
    """The rows of ``{"labels": {"INDEX": label}, "skip": [INDEX]}`` (its
    JSON types already checked against the ``LabelsAdd`` schema)."""
    rows, problems = parse_body(body)
    if problems:
        raise BadLabels("labels", problems)
    return rows


def parse_body(body: Mapping[str, Any]) -> tuple[list[LabelRow], list[dict]]:
    """:func:`rows_from_body`'s good rows and the bad entries' problems."""
    problems = _Problems()
    rows: list[LabelRow] = []
    seen: dict[int, str] = {}
    for key, label in body.get("labels", {}).items():
        where = f"labels[{json.dumps(key)}]"
        if not key.isdigit() or not key.isascii():
            problems.add(where, None, f"index {key!r} is not an integer")
        elif label is None:
            problems.add(where, int(key), "label is null; send a label, or the index in skip")
        elif int(key) in seen:
            problems.add(where, int(key), f"duplicate: index {int(key)} is {seen[int(key)]} too")
        else:
            rows.append(LabelRow(where, int(key), label))
            seen[int(key)] = where
    for i, index in enumerate(body.get("skip", [])):
        where = f"skip[{i}]"
        if index in seen:
            also = "label it or skip it" if seen[index].startswith("labels") else "a duplicate"
            problems.add(where, index, f"index {index} is in {seen[index]} too; {also}")
            continue
        rows.append(LabelRow(where, index, skip=True))
        seen[index] = where
    return rows, problems.found


def split_rows(rows: Iterable[LabelRow]) -> tuple[dict[int, Any], list[int]]:
    """``(labels, skip)`` as ``Engine.add_labels`` takes them."""
    labels: dict[int, Any] = {}
    skip: list[int] = []
    for row in rows:
        if row.skip:
            skip.append(row.index)
        else:
            labels[row.index] = row.label
    return labels, skip


def store_labels(
    engine: Any,
    experiment_id: str,
    rows: Sequence[LabelRow],
    *,
    source: str,
    by: str | None = None,
    name: str = "labels",
    problems: Sequence[dict] = (),
) -> dict:
    """Store the rows' labels and skips in one step (``Engine.add_labels``)
    and return its summary; or ``BadLabels`` naming every row the engine
    refuses (unknown or unselected index, a label of the wrong kind) along
    with ``problems`` (those :func:`parse_file` or :func:`parse_body` found
    in the other rows), in the input's order, and nothing stored.
    ``name``: the input's, for the message (a file name)."""
    if not rows and not problems:
        raise ValidationError(f"{name}: no labels or skips to store")
    labels, skip = split_rows(rows)
    refused: list[dict] = []
    try:
        if not problems:
            return engine.add_labels(experiment_id, labels, skip, source=source, by=by)
        from .labels import label_events  # numpy: not at import, the CLI's help stays quick

        # Checked only (the labels mode too, so a wrong mode is said first): with bad rows besides, nothing is stored.
        label_events(engine.storage, engine.get_experiment(experiment_id), labels, skip, source=source, by=by)
    except InvalidLabels as exc:
        where = {row.index: row.where for row in rows}  # one row per index: duplicates were refused on reading
        refused = [
            {"where": where[p["index"]], "index": p["index"], "message": re.sub(rf"^index {p['index']}: ", "", p["message"])}
            for p in exc.problems
        ]
    raise BadLabels(name, sorted([*problems, *refused], key=_line))


def _line(problem: Mapping[str, Any]) -> int:
    """A problem's line in a file (0 for a request body's entries: their order is kept)."""
    found = re.fullmatch(r"line (\d+)", problem["where"])
    return int(found.group(1)) if found else 0


# -- writing ---------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-ready value: numpy scalars and arrays as Python, non-finite floats as None."""
    from .metrics import jsonable  # numpy: not at import, the CLI's help stays quick

    return jsonable(value)


def plain(row: Mapping[str, Any]) -> dict:
    """A selection row or a label event, JSON-ready."""
    return {key: _plain(value) for key, value in row.items()}


def _json(value: Any) -> str:
    return json.dumps(value, default=_plain, allow_nan=False)


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return _json(value)
    return str(value)


def _label_cell(value: Any) -> str:
    """A prediction or label cell: a name the reader would take for JSON (``[x]``) JSON-quoted."""
    return _json(value) if isinstance(value, str) and value[:1] in '[{"' else _cell(value)


def _export_row(row: Mapping[str, Any]) -> dict:
    return {
        "index": int(row["index"]),
        "reference": _plain(row.get("reference")),
        "score": _plain(row.get("score")),
        "prediction": _plain(row.get("prediction")),
        "label": _plain(row.get("label")),
        "skip": bool(row.get("skipped")),
    }


def to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        item = _export_row(row)
        cell = {c: _label_cell(item[c]) if c in ("prediction", "label") else _cell(item[c]) for c in CSV_COLUMNS}
        writer.writerow([*(cell[c] for c in CSV_COLUMNS[:-1]), "true" if item["skip"] else ""])
    return out.getvalue()


def to_jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(_json(_export_row(row)) + "\n" for row in rows)


def labelstudio_tasks(
    experiment: Mapping[str, Any], loop: int, rows: Iterable[Mapping[str, Any]], *, from_name: str = "label", to_name: str = "item"
) -> list[dict]:
    """Label Studio tasks (its import format): ``data`` holds the record's
    ``reference`` and ``alectio_index``; ``predictions`` the model's
    prediction as a pre-annotation (``from_name``/``to_name`` name the
    control and object tags of the project's label config), scored with the
    strategy's score so annotators can sort by it."""
    tasks = []
    version = f"{experiment['id']}/{loop}"
    for row in rows:
        task: dict[str, Any] = {"data": {"reference": _plain(row.get("reference")), "alectio_index": int(row["index"])}}
        result = _labelstudio_result(experiment, row.get("prediction"), from_name, to_name)
        score = _plain(row.get("score"))
        if result or score is not None:
            prediction: dict[str, Any] = {"model_version": version, "result": result}
            if score is not None:
                prediction["score"] = float(score)
            task["predictions"] = [prediction]
        tasks.append(task)
    return tasks


def _labelstudio_result(experiment: Mapping[str, Any], prediction: Any, from_name: str, to_name: str) -> list[dict]:
    """The prediction as Label Studio regions: choices for classes (named),
    a number for regression; none for detection and segmentation, whose
    predictions alectio does not make."""
    prediction = with_names(experiment, prediction)
    if prediction is None:
        return []
    task = experiment.get("task", "classification")
    if task == "classification":
        value, kind = {"choices": [str(prediction)]}, "choices"
    elif task == "multilabel":
        value, kind = {"choices": [str(c) for c in prediction]}, "choices"
    elif task == "regression":
        value, kind = {"number": prediction}, "number"
    else:
        return []
    return [{"from_name": from_name, "to_name": to_name, "type": kind, "value": value}]


def with_names(experiment: Mapping[str, Any], value: Any) -> Any:
    """A classification or multilabel prediction or label JSON-ready, its
    class ids as the experiment's class names: what people type, and read
    back as the same classes (a name before an id). Other values as they are."""
    value = _plain(value)
    names = experiment.get("labels") or []
    task = experiment.get("task", "classification")

    def name(class_id: Any) -> Any:
        return str(names[class_id]) if isinstance(class_id, int) and 0 <= class_id < len(names) else class_id

    if task == "classification":
        return name(value)
    if task == "multilabel" and isinstance(value, list):
        return [name(c) for c in value]
    return value


def dump(experiment: Mapping[str, Any], loop: int, rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """A selection's rows as the text of a ``fmt`` file."""
    if fmt in ("csv", "jsonl"):
        rows = [{**row, "prediction": with_names(experiment, row.get("prediction")), "label": with_names(experiment, row.get("label"))} for row in rows]
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "jsonl":
        return to_jsonl(rows)
    if fmt == "labelstudio":
        return json.dumps(labelstudio_tasks(experiment, loop, rows), indent=2, default=_plain) + "\n"
    raise ValidationError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
