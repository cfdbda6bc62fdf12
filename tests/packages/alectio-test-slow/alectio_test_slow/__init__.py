"""A model for testing the server: cheap to compute, slow when asked.

Records are synthetic: record ``i`` has class ``i % 2``. Everything is
driven by the experiment's ``config``:

``pool_size`` (default 500)
    number of records.
``train_seconds`` (default 0)
    how long ``train`` sleeps, like a real training loop that releases the
    GIL (torch, numpy), in 50 ms steps.
``hold_file``
    ``train`` waits while this file exists: a test creates it to keep a
    loop in the train stage for as long as it needs, then deletes it.
``started_file``
    ``train`` creates this file as it starts: a test waits for it to know
    the hook itself is running, not just that the loop's state says train.
``sigint_in_finalizer``
    ``train`` first sends this process a SIGINT from inside a finalizer
    (``__del__``), where Python can only drop a ``KeyboardInterrupt``
    ("Exception ignored in ..."): a Ctrl-C arriving while the garbage
    collector runs, made certain.
``infer_hold_file``
    ``infer`` streams its first chunk of rows, then waits while this file
    exists (so a test can cancel a loop in the middle of infer).
``fail_in``
    name of a hook (``train``, ``test``, ``infer``) that raises.

The checkpoint is a small JSON file.
"""

import json
import os
import signal
import time

import numpy as np

CHUNK = 65536  # the OutputWriter's default chunk: a flush reports progress


def _maybe_fail(hook, config):
    if config.get("fail_in") == hook:
        raise RuntimeError(f"{hook} failed on purpose")


def _wait_while(path):
    while path and os.path.exists(path):
        time.sleep(0.02)


def assign_index(config):
    return [f"record_{i}" for i in range(int(config.get("pool_size", 500)))]


def model_info(config):
    return {"task": "classification", "labels": ["even", "odd"]}


class _InterruptWhenCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs here, inside the finalizer


def train(labeled, labels, resume_from, ckpt_file, loop, config):
    # labels: people's, in labels mode "alectio" (the Label Studio server test); None otherwise
    if config.get("started_file"):
        open(config["started_file"], "w").close()
    if config.get("sigint_in_finalizer"):
        _InterruptWhenCollected()  # collected at once: its __del__ runs here
    _wait_while(config.get("hold_file"))
    _maybe_fail("train", config)
    deadline = time.monotonic() + float(config.get("train_seconds", 0))
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    previous = 0
    if resume_from:
        with open(resume_from) as f:
            previous = json.load(f)["seen"]
    with open(ckpt_file, "w") as f:
        json.dump({"loop": loop, "seen": previous + len(labeled)}, f)
    return {"labels": ["odd" if i % 2 else "even" for i in labeled]}


def test(ckpt_file, config):
    _maybe_fail("test", config)
    with open(ckpt_file) as f:
        seen = json.load(f)["seen"]
    labels = [i % 2 for i in range(100)]
    # More labeled records, fewer mistakes: a learning curve that rises.
    wrong = max(0, 50 - seen)
    return {"predictions": [1 - y if i < wrong else y for i, y in enumerate(labels)], "labels": labels}


def infer(unlabeled, config, writer):
    _maybe_fail("infer", config)
    idx = np.asarray(unlabeled, dtype=np.int64)
    scores = np.stack([np.cos(idx * 0.1), np.sin(idx * 0.1)], axis=1).astype(np.float32)
    writer.extend(idx[:CHUNK], scores[:CHUNK])
    _wait_while(config.get("infer_hold_file"))
    writer.extend(idx[CHUNK:], scores[CHUNK:])
