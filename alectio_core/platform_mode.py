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
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import urllib3

from . import s3
from .clock import now
from .config import Config
from .engine import Engine
from .errors import ConfigError, ConflictError, NotFoundError, StorageError, TooLargeError, ValidationError
from .hook_results import as_indices
from .schemas import ONE_LOOP_SCHEMA, validate
from .storage import check_id, check_loop

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "ALECTIO_PLATFORM_TOKEN"
#: end_of_task answers worth another try: the platform is busy or restarting.
RETRY_STATUSES = (408, 425, 429, 500, 502, 503, 504)


@dataclass(frozen=True)
class OneLoopRequest:
    """One ``/one_loop`` request, checked. (Named for the route, not
    "task": that word is the ML task, classification and the like.)"""

    experiment_id: str
    project_id: str
    cur_loop: int
    user_id: Any
    bucket_name: str
    type: str
    n_rec: int
    n_loop: int

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "OneLoopRequest":
        validate(payload, ONE_LOOP_SCHEMA)
        request = cls(**{name: payload[name] for name in cls.__dataclass_fields__})
        check_id(request.experiment_id), check_id(request.project_id, "project id"), check_loop(request.cur_loop)
        if request.cur_loop >= request.n_loop:
            raise ValidationError(f"cur_loop ({request.cur_loop}) must be below n_loop ({request.n_loop})")
        return request

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

    def __init__(self, request: OneLoopRequest, options: Mapping[str, Any]):
        self.bucket, self.prefix = request.bucket_name, request.prefix
        self.attempts = s3.max_attempts(options)
        self.client = s3.make_client(options)

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}/{name}"

    def _fail(self, exc: Exception, action: str, name: str) -> Exception:
        if s3.is_missing(exc):
            return NotFoundError(f"{self.url(name)} does not exist")
        endpoint = self.client.meta.endpoint_url
        return s3.storage_error(exc, action, self.url(name), bucket=self.bucket, endpoint=endpoint, attempts=self.attempts)

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

        body = s3.NpyBody(dtype, shape, pieces)
        transfer = TransferConfig(multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20, max_concurrency=2)
        try:
            self.client.upload_fileobj(body, self.bucket, f"{self.prefix}/{name}", Config=transfer)
        except Exception as exc:
            raise self._fail(exc, "write", name) from exc
        if body.tell() != body.size:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")
            except Exception:
                log.warning("could not remove the malformed %s", self.url(name))
            raise StorageError(f"{self.url(name)}: wrote {body.tell()} bytes, expected {body.size}")


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
        if not model or not backend:
            missing = [k for k, v in (("platform.model", model), ("platform.backend_url", backend)) if not v]
            raise ConfigError(f"platform mode needs {' and '.join(missing)} in config.yaml")
        if not os.environ.get(TOKEN_VARIABLE):
            raise ConfigError(f"platform mode needs the platform's token in ${TOKEN_VARIABLE} for the end_of_task callback")
        return model, backend

    def start(self, payload: Mapping[str, Any]) -> dict:
        """Validate, read the selections, queue the loop; returns at once."""
        request = OneLoopRequest.from_payload(payload)
        model, _ = self._check_configured()
        bucket = PlatformBucket(request, self.options)
        eid = request.local_id
        done = self._done(eid, request.cur_loop)
        if done is not None:
            return self._send_again(request, done, model)
        max_bytes = self.settings.max_selection_bytes
        first = bucket.read_selection(0, max_bytes)  # before the lock: it may take a while
        with self._lock:  # two first requests for one experiment create it once
            try:
                experiment = self.engine.get_experiment(eid)
            except NotFoundError:
                initial = max(1, int(np.unique(first).size))
                try:
                    experiment = self.engine.create_experiment(
                        model, strategy=None, batch_size=request.n_rec, initial=initial, loops=request.n_loop, experiment_id=eid
                    )
                except ConflictError:  # another server sharing the storage created it first
                    experiment = self.engine.get_experiment(eid)
            if experiment.get("platform") is None:
                platform = {k: v for k, v in asdict(request).items() if k not in ("cur_loop",)}
                experiment = self.storage.update_experiment(eid, {"platform": platform})
        if experiment["model"] != model:
            raise ConflictError(f"experiment {request.prefix} runs model {experiment['model']!r}, not {model!r}")

        def prepare() -> None:
            for k in range(request.cur_loop + 1):
                picked = np.unique(first if k == 0 else bucket.read_selection(k, max_bytes))
                try:
                    stored = self.storage.get_selection(eid, k)
                except NotFoundError:
                    stored = None
                if stored is not None and np.array_equal(np.sort(stored), picked):
                    continue
                if k < request.cur_loop and stored is not None:
                    raise ConflictError(f"{bucket.url(f'selected_indices_{k}.json')} changed after loop {k} ran on it")
                self.engine.record_selection(eid, k, picked)

        self.submit(eid, request.cur_loop, lambda cancel: self.run(request, cancel), prepare=prepare)
        return {"experiment_id": eid, "loop": request.cur_loop, "status": "queued"}

    def _done(self, eid: str, loop: int) -> dict | None:
        """The loop's state when it is done, else None."""
        try:
            state = self.storage.get_loop_state(eid, loop)
        except NotFoundError:
            return None
        return state if state.get("status") == "done" else None

    def _send_again(self, request: OneLoopRequest, state: dict, model: str) -> dict:
        """A done loop asked again: export and call back again what did not
        go through (the platform never heard back); 409 if everything did."""
        eid, loop = request.local_id, request.cur_loop
        experiment = self.engine.get_experiment(eid)
        if experiment["model"] != model:
            raise ConflictError(f"experiment {request.prefix} runs model {experiment['model']!r}, not {model!r}")
        report = state.get("platform") or {}
        export = report.get("export") != "done"
        if not export and report.get("callback") == "sent":
            raise ConflictError(
                f"loop {loop} of platform experiment {request.prefix} is already done; its results were written "
                f"to s3://{request.bucket_name}/{request.prefix}/ and end_of_task was sent at {report.get('callback_at')}"
            )
        pending = {"export": "queued" if export else "done", "callback": "pending", "callback_attempts": 0}
        self.submit(
            eid, loop, lambda cancel: self.deliver(request, export=export),
            prepare=lambda: self._report(eid, loop, state, pending),  # the state says so from the 202 on
            runs_loop=False,
        )
        return {"experiment_id": eid, "loop": loop, "status": "done", "sending_again": ["export", "callback"] if export else ["callback"]}

    def run(self, request: OneLoopRequest, cancel: threading.Event | None = None) -> dict:
        """The job: the loop, the export, the callback."""
        state = self.engine.run_loop(request.local_id, request.cur_loop, select_next=False, cancel=cancel)
        return self.deliver(request, state)

    def deliver(self, request: OneLoopRequest, state: dict | None = None, export: bool = True) -> dict:
        """Write a done loop's results to the platform's bucket (unless
        ``export`` is False: they are there) and call back."""
        eid, loop = request.local_id, request.cur_loop
        if state is None:
            state = self.storage.get_loop_state(eid, loop)
        report: dict[str, Any] = {"export": "running" if export else "done", "callback": "pending", "callback_attempts": 0}
        self._report(eid, loop, state, report)
        if export:
            try:
                self.export(request, PlatformBucket(request, self.options))
                report["export"] = "done"
            except Exception as exc:
                report.update(export="failed", callback="not sent")
                return self._report(eid, loop, state, report, error=f"results could not be written to the platform's bucket: {exc}")
            self._report(eid, loop, state, report)
        attempts, error = self.callback(request)
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

    def export(self, request: OneLoopRequest, bucket: PlatformBucket) -> None:
        """The loop's results, metrics last: a platform that sees them
        finds everything else written."""
        eid, k = request.local_id, request.cur_loop
        results = self.engine.results(eid, k)
        self._export_outputs(request, bucket)
        if k == 0:
            bucket.put_json("data_map.json", {str(i): ref for i, ref in enumerate(self.storage.get_index_map(eid))})
        bucket.put_json(f"test_predictions_{k}.json", results["predictions"])
        bucket.put_json("test_ground_truth.json", results["ground_truth"])
        bucket.put_json(f"insights_{k}.json", results["insights"])
        bucket.put_json(f"metrics_{k}.json", results["metrics"])

    def _export_outputs(self, request: OneLoopRequest, bucket: PlatformBucket) -> None:
        eid, k = request.local_id, request.cur_loop
        pool = self.engine.pool_size(eid)
        rows = pool - int(self.engine.labeled(eid, k).size)
        stream = self.storage.iter_outputs(eid, k)
        first = next(stream, None)
        width = first[1].shape[1] if first is not None else 0
        close = getattr(stream, "close", None)  # a generator's; the interface promises only an iterator
        if close is not None:
            close()
        del first

        def pieces(part: int) -> Iterator[np.ndarray]:
            if rows:
                for chunk in self.storage.iter_outputs(eid, k):  # a fresh stream each time
                    yield chunk[part]

        bucket.put_npy_stream(f"infer_outputs_{k}/indices.npy", "<i8", (rows,), pieces(0))
        bucket.put_npy_stream(f"infer_outputs_{k}/outputs.npy", "<f4", (rows, width), pieces(1))

    # -- the callback -----------------------------------------------------------

    def callback(self, request: OneLoopRequest) -> tuple[int, str | None]:
        """POST end_of_task; returns (attempts made, last error or None).

        ``urllib3.Retry`` tries again after a connection failure, a timeout
        or an answer in ``RETRY_STATUSES``, ``callback_retries`` times, with
        exponential backoff (``backoff`` seconds, doubling, at most 30)."""
        backend = self.settings.backend_url
        assert backend is not None, "start() checked it"
        url = backend.rstrip("/") + "/end_of_task"
        body = {k: getattr(request, k) for k in ("experiment_id", "project_id", "user_id", "n_rec", "n_loop")}
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {os.environ.get(TOKEN_VARIABLE, '')}"}
        retries = self.settings.callback_retries
        retry = urllib3.Retry(
            total=retries,
            allowed_methods={"POST"},  # the same body again: the platform sees one end of task
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.backoff,
            backoff_max=30.0,
            respect_retry_after_header=False,  # a long Retry-After would hold the loop's job
            raise_on_status=False,  # out of tries, the last answer: its status names what went wrong
        )
        timeout = self.settings.callback_timeout
        error: str | None
        with urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=timeout)) as http:
            try:
                response = http.request("POST", url, body=json.dumps(body).encode(), headers=headers, retries=retry, redirect=False)
            except urllib3.exceptions.MaxRetryError as exc:
                reason = exc.reason
                if isinstance(reason, urllib3.exceptions.TimeoutError):
                    error = f"{url} did not answer within {timeout:g} s"
                else:
                    error = f"{url} unreachable: {type(reason).__name__}: {reason}"
                attempts = 1 + retries
            except urllib3.exceptions.HTTPError as exc:  # not retried: a malformed URL, ...
                error, attempts = f"{url} unreachable: {type(exc).__name__}: {exc}", 1
            else:
                attempts = 1 + len(response.retries.history if response.retries else ())
                error = None if 200 <= response.status < 300 else f"{url} answered {response.status} {response.reason}"
        if error is None:
            log.info("end_of_task sent for %s loop %d (attempt %d)", request.prefix, request.cur_loop, attempts)
        return attempts, error
