"""Platform mode: an outside platform drives the loops (the seed's protocol).

The platform sends ``POST /one_loop`` with ``experiment_id``, ``project_id``,
``cur_loop``, ``user_id``, ``bucket_name``, ``type``, ``n_rec`` and
``n_loop``. Its bucket holds, under ``{project_id}/{experiment_id}/``, the
records chosen for each loop, ``selected_indices_{k}.json`` (a JSON list of
ints). alectio runs loop ``cur_loop`` of ``platform.model`` on the union of
the selections 0..cur_loop, writes the results beside them:

* ``data_map.json`` (loop 0): ``{index: record reference}``
* ``insights_{k}.json``, ``test_predictions_{k}.json``, ``metrics_{k}.json``
* ``test_ground_truth.json``
* ``infer_outputs_{k}/indices.npy`` (int64) and ``infer_outputs_{k}/outputs.npy``
  (float32, one row per index), uploaded as streams: never all in memory

The infer outputs are written first, then the data map, predictions,
ground truth and insights, and ``metrics_{k}.json`` last, so a platform that
sees the metrics finds everything else there. Then
``POST {platform.backend_url}/end_of_task`` with ``experiment_id,
project_id, user_id, n_rec, n_loop`` and ``Authorization: Bearer
$ALECTIO_PLATFORM_TOKEN``, with a timeout and retries. The outcome shows in
the loop's state (``platform.export``, ``platform.callback``); a loop that
fails sends no callback (the protocol has no way to say it failed), its
state says why. A ``/one_loop`` sent again for a done loop whose export or
callback failed does them again (202); for one whose results were sent it
is a 409.

A selection file is read only when its size is at most
``platform.max_selection_bytes`` (64 MiB by default), and outside the lock
that makes the first requests for an experiment create it once.

The loop itself runs on alectio's own storage like any other, as experiment
``plat-<hash of bucket, project and experiment>`` (``strategy`` None: the
platform chooses). The platform's bucket is reached with boto3's standard
credential chain and ``storage_options.endpoint_url`` when set.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .clock import now
from .config import Config
from .engine import Engine
from .errors import ConfigError, ConflictError, NotFoundError, StorageError, TooLargeError, ValidationError
from .hook_results import as_indices
from .storage import check_id, check_loop

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "ALECTIO_PLATFORM_TOKEN"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}

#: JSON Schema of the ``POST /one_loop`` body. Extra fields are ignored: the
#: platform may send more than alectio uses.
ONE_LOOP_SCHEMA = {
    "type": "object",
    "required": ["experiment_id", "project_id", "cur_loop", "user_id", "bucket_name", "type", "n_rec", "n_loop"],
    "properties": {
        "experiment_id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"},
        "project_id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"},
        "cur_loop": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "user_id": {"type": ["string", "integer"]},
        "bucket_name": {"type": "string", "pattern": _BUCKET.pattern},
        "type": {"type": "string", "maxLength": 200},
        "n_rec": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "n_loop": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    },
}


@dataclass(frozen=True)
class Task:
    """One ``/one_loop`` request, checked."""

    experiment_id: str
    project_id: str
    cur_loop: int
    user_id: Any
    bucket_name: str
    type: str
    n_rec: int
    n_loop: int

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "Task":
        from .server.schemas import validate

        validate(payload, ONE_LOOP_SCHEMA)
        task = cls(**{name: payload[name] for name in cls.__dataclass_fields__})
        check_id(task.experiment_id), check_id(task.project_id, "project id"), check_loop(task.cur_loop)
        if task.cur_loop >= task.n_loop:
            raise ValidationError(f"cur_loop ({task.cur_loop}) must be below n_loop ({task.n_loop})")
        return task

    @property
    def prefix(self) -> str:
        return f"{self.project_id}/{self.experiment_id}"

    @property
    def local_id(self) -> str:
        """The alectio experiment that runs this platform experiment's loops."""
        digest = hashlib.sha256(f"{self.bucket_name}/{self.prefix}".encode()).hexdigest()
        return f"plat-{digest[:24]}"


# ----------------------------------------------------------------------
# The platform's bucket
# ----------------------------------------------------------------------


class PlatformBucket:
    """``s3://{bucket_name}/{project_id}/{experiment_id}/``: selections in, results out."""

    def __init__(self, task: Task, options: Mapping[str, Any]):
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket, self.prefix = task.bucket_name, task.prefix
        self.attempts = int(options.get("max_attempts", 5))
        config = BotoConfig(
            retries={"total_max_attempts": self.attempts, "mode": "standard"},
            connect_timeout=float(options.get("connect_timeout", 5)),
            read_timeout=float(options.get("read_timeout", 30)),
            s3={"addressing_style": options.get("addressing_style", "auto")},
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=options.get("endpoint_url"), region_name=options.get("region_name"), config=config
        )

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}/{name}"

    def _fail(self, exc: Exception, action: str, name: str) -> Exception:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = self.url(name)
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                return NotFoundError(f"{where} does not exist")
            if code == "NoSuchBucket":
                return StorageError(f"the platform's bucket {self.bucket!r} does not exist ({action} {where})")
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StorageError(f"access denied to {where} ({code}) trying to {action}")
            return StorageError(f"S3 error {code} trying to {action} {where}: {exc}")
        if isinstance(exc, NoCredentialsError):
            return StorageError(f"no usable AWS credentials to {action} {where}")
        if isinstance(exc, BotoCoreError):
            return StorageError(f"cannot {action} {where} (after {self.attempts} attempts): {type(exc).__name__}: {exc}")
        return StorageError(f"cannot {action} {where}: {type(exc).__name__}: {exc}")

    def read_selection(self, loop: int, max_bytes: int) -> np.ndarray:
        """Loop ``loop``'s selection; ``TooLargeError``, before reading it,
        when the object is over ``max_bytes``."""
        name = f"selected_indices_{loop}.json"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")
        except Exception as exc:
            raise self._fail(exc, "read", name) from exc
        body = response["Body"]
        try:
            size = int(response.get("ContentLength") or 0)
            if size > max_bytes:
                raise TooLargeError(
                    f"{self.url(name)} is {size:,} bytes, over platform.max_selection_bytes ({max_bytes:,}); "
                    "raise that setting in config.yaml if the selection is right"
                )
            data = body.read()
        except TooLargeError:
            raise
        except Exception as exc:
            raise self._fail(exc, "read", name) from exc
        finally:
            body.close()
        try:
            values = json.loads(data)
        except ValueError as exc:
            raise ValidationError(f"{self.url(name)} is not JSON: {exc}") from None
        return as_indices(values, self.url(name))

    def put_json(self, name: str, value: Any) -> None:
        body = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}", Body=body, ContentType="application/json")
        except Exception as exc:
            raise self._fail(exc, "write", name) from exc

    def put_npy_stream(self, name: str, dtype: str, shape: tuple, pieces: Iterator[np.ndarray]) -> None:
        """One ``.npy`` object from arrays arriving one after the other,
        sent as a multipart upload: a few parts in memory, whatever the size."""
        from boto3.s3.transfer import TransferConfig

        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": tuple(int(s) for s in shape)}
        )
        parts = (memoryview(np.ascontiguousarray(p, dtype=dtype)).cast("B") for p in pieces)
        stream = _StreamReader(_chain([memoryview(header.getvalue())], parts))
        transfer = TransferConfig(multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20, max_concurrency=2)
        try:
            self.client.upload_fileobj(stream, self.bucket, f"{self.prefix}/{name}", Config=transfer)
        except Exception as exc:
            raise self._fail(exc, "write", name) from exc
        expected = header.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
        if stream.sent != expected:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")
            except Exception:
                log.warning("could not remove the malformed %s", self.url(name))
            raise StorageError(f"{self.url(name)}: wrote {stream.sent} bytes, expected {expected}")


def _chain(*iterables):
    for iterable in iterables:
        yield from iterable


class _StreamReader(io.RawIOBase):
    """A read-only file over a sequence of byte buffers."""

    def __init__(self, pieces: Iterator[memoryview]):
        self._pieces, self._current, self.sent = pieces, memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        out, filled = memoryview(buffer).cast("B"), 0
        while filled < out.nbytes:
            if not self._current.nbytes:
                self._current = next(self._pieces, None)
                if self._current is None:
                    self._current = memoryview(b"")
                    break
                continue
            n = min(self._current.nbytes, out.nbytes - filled)
            out[filled : filled + n] = self._current[:n]
            self._current = self._current[n:]
            filled += n
        self.sent += filled
        return filled


# ----------------------------------------------------------------------
# Running a platform loop
# ----------------------------------------------------------------------


class Platform:
    """Starts platform loops as jobs, exports their results, calls back."""

    def __init__(self, engine: Engine, config: Config, submit: Callable[..., Any], backoff: float = 0.5):
        self.engine, self.storage = engine, engine.storage
        self.settings = config.platform
        self.options = dict(config.storage_options)
        self.submit = submit  # JobRunner.submit
        self.backoff = backoff
        self._lock = threading.Lock()

    def _check_configured(self) -> tuple[str, str]:
        model, backend = self.settings.model, self.settings.backend_url
        missing = [k for k, v in (("platform.model", model), ("platform.backend_url", backend)) if not v]
        if missing:
            raise ConfigError(f"platform mode needs {' and '.join(missing)} in config.yaml")
        if not os.environ.get(TOKEN_VARIABLE):
            raise ConfigError(f"platform mode needs the platform's token in ${TOKEN_VARIABLE} for the end_of_task callback")
        return model, backend

    def start(self, payload: Mapping[str, Any]) -> dict:
        """Validate, read the selections, queue the loop; returns at once."""
        task = Task.from_payload(payload)
        model, _ = self._check_configured()
        bucket = PlatformBucket(task, self.options)
        eid = task.local_id
        done = self._done(eid, task.cur_loop)
        if done is not None:
            return self._send_again(task, done, model)
        first = self._selection(bucket, 0)  # before the lock: it may take a while
        with self._lock:  # two first requests for one experiment create it once
            try:
                experiment = self.engine.get_experiment(eid)
            except NotFoundError:
                initial = max(1, int(np.unique(first).size))
                try:
                    experiment = self.engine.create_experiment(
                        model, strategy=None, batch_size=task.n_rec, initial=initial, loops=task.n_loop, experiment_id=eid
                    )
                except ConflictError:  # another server sharing the storage created it first
                    experiment = self.engine.get_experiment(eid)
            if experiment.get("platform") is None:
                platform = {k: v for k, v in asdict(task).items() if k not in ("cur_loop",)}
                experiment = self.storage.update_experiment(eid, {"platform": platform})
        if experiment["model"] != model:
            raise ConflictError(f"experiment {task.prefix} runs model {experiment['model']!r}, not {model!r}")

        def prepare() -> None:
            for k in range(task.cur_loop + 1):
                picked = np.unique(first if k == 0 else self._selection(bucket, k))
                try:
                    stored = self.storage.get_selection(eid, k)
                except NotFoundError:
                    stored = None
                if stored is not None and np.array_equal(np.sort(stored), picked):
                    continue
                if k < task.cur_loop and stored is not None:
                    raise ConflictError(f"{bucket.url(f'selected_indices_{k}.json')} changed after loop {k} ran on it")
                self.engine.record_selection(eid, k, picked)

        self.submit(eid, task.cur_loop, lambda cancel: self.run(task, cancel), prepare=prepare)
        return {"experiment_id": eid, "loop": task.cur_loop, "status": "queued"}

    def _done(self, eid: str, loop: int) -> dict | None:
        """The loop's state when it is done, else None."""
        try:
            state = self.storage.get_loop_state(eid, loop)
        except NotFoundError:
            return None
        return state if state.get("status") == "done" else None

    def _send_again(self, task: Task, state: dict, model: str) -> dict:
        """A done loop asked again: export and call back again what did not
        go through (the platform never heard back); 409 if everything did."""
        eid, loop = task.local_id, task.cur_loop
        experiment = self.engine.get_experiment(eid)
        if experiment["model"] != model:
            raise ConflictError(f"experiment {task.prefix} runs model {experiment['model']!r}, not {model!r}")
        report = state.get("platform") or {}
        export = report.get("export") != "done"
        if not export and report.get("callback") == "sent":
            raise ConflictError(
                f"loop {loop} of platform experiment {task.prefix} is already done; its results were written "
                f"to s3://{task.bucket_name}/{task.prefix}/ and end_of_task was sent at {report.get('callback_at')}"
            )
        pending = {"export": "queued" if export else "done", "callback": "pending", "callback_attempts": 0}
        self.submit(
            eid, loop, lambda cancel: self.deliver(task, export=export),
            prepare=lambda: self._report(eid, loop, state, pending),  # the state says so from the 202 on
            runs_loop=False,
        )
        return {"experiment_id": eid, "loop": loop, "status": "done", "sending_again": ["export", "callback"] if export else ["callback"]}

    def _selection(self, bucket: PlatformBucket, loop: int) -> np.ndarray:
        return bucket.read_selection(loop, self.settings.max_selection_bytes)

    def run(self, task: Task, cancel: threading.Event | None = None) -> dict:
        """The job: the loop, the export, the callback."""
        state = self.engine.run_loop(task.local_id, task.cur_loop, select_next=False, cancel=cancel)
        return self.deliver(task, state)

    def deliver(self, task: Task, state: dict | None = None, export: bool = True) -> dict:
        """Write a done loop's results to the platform's bucket (unless
        ``export`` is False: they are there) and call back."""
        eid, loop = task.local_id, task.cur_loop
        if state is None:
            state = self.storage.get_loop_state(eid, loop)
        report: dict[str, Any] = {"export": "running" if export else "done", "callback": "pending", "callback_attempts": 0}
        self._report(eid, loop, state, report)
        if export:
            try:
                self.export(task, PlatformBucket(task, self.options))
                report["export"] = "done"
            except Exception as exc:
                report.update(export="failed", callback="not sent")
                return self._report(eid, loop, state, report, error=f"results could not be written to the platform's bucket: {exc}")
            self._report(eid, loop, state, report)
        attempts, error = self.callback(task)
        report.update(callback="sent" if error is None else "failed", callback_attempts=attempts)
        if error is not None:
            return self._report(eid, loop, state, report, error=f"end_of_task callback failed after {attempts} attempt(s): {error}")
        report["callback_at"] = now()
        return self._report(eid, loop, state, report)

    def _report(self, eid: str, loop: int, state: dict, report: dict, error: str | None = None) -> dict:
        state = dict(state, platform=dict(report), error=error)  # a done loop's only error is its export's or callback's
        if error is not None:
            state["platform"]["error"] = error
            log.error("experiment %s loop %d: %s", eid, loop, error)
        self.storage.put_loop_state(eid, loop, state)
        return state

    # -- results out ----------------------------------------------------------

    def export(self, task: Task, bucket: PlatformBucket) -> None:
        """The loop's results, metrics last: a platform that sees them
        finds everything else written."""
        eid, k = task.local_id, task.cur_loop
        results = self.engine.results(eid, k)
        self._export_outputs(task, bucket)
        if k == 0:
            bucket.put_json("data_map.json", {str(i): ref for i, ref in enumerate(self.storage.get_index_map(eid))})
        bucket.put_json(f"test_predictions_{k}.json", results["predictions"])
        bucket.put_json("test_ground_truth.json", results["ground_truth"])
        bucket.put_json(f"insights_{k}.json", results["insights"])
        bucket.put_json(f"metrics_{k}.json", results["metrics"])

    def _export_outputs(self, task: Task, bucket: PlatformBucket) -> None:
        eid, k = task.local_id, task.cur_loop
        pool = self.engine.pool_size(eid)
        rows = pool - int(self.engine.labeled(eid, k).size)
        stream = self.storage.iter_outputs(eid, k)
        first = next(stream, None)
        width = first[1].shape[1] if first is not None else 0
        stream.close()
        del first

        def pieces(part: int) -> Iterator[np.ndarray]:
            if rows:
                for chunk in self.storage.iter_outputs(eid, k):  # a fresh stream each time
                    yield chunk[part]

        bucket.put_npy_stream(f"infer_outputs_{k}/indices.npy", "<i8", (rows,), pieces(0))
        bucket.put_npy_stream(f"infer_outputs_{k}/outputs.npy", "<f4", (rows, width), pieces(1))

    # -- the callback -----------------------------------------------------------

    def callback(self, task: Task) -> tuple[int, str | None]:
        """POST end_of_task; returns (attempts made, last error or None)."""
        url = self.settings.backend_url.rstrip("/") + "/end_of_task"
        body = {k: getattr(task, k) for k in ("experiment_id", "project_id", "user_id", "n_rec", "n_loop")}
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {os.environ.get(TOKEN_VARIABLE, '')}"}
        total = 1 + max(0, self.settings.callback_retries)
        error = None
        for attempt in range(1, total + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.settings.callback_timeout) as response:
                    response.read()
                log.info("end_of_task sent for %s loop %d (attempt %d)", task.prefix, task.cur_loop, attempt)
                return attempt, None
            except urllib.error.HTTPError as exc:
                error = f"{url} answered {exc.code} {exc.reason}"
                if exc.code not in _RETRY_STATUSES:
                    return attempt, error
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                error = f"{url} unreachable: {type(reason).__name__}: {reason}"
            log.warning("end_of_task for %s loop %d, attempt %d of %d: %s", task.prefix, task.cur_loop, attempt, total, error)
            if attempt < total:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 30.0))
        return total, error
