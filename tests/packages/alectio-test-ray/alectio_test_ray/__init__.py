"""A deterministic model for the executor tests: a fixed numpy MLP.

Record ``i``'s features are a fixed function of ``i``; ``train`` writes the
MLP's seed to the checkpoint and ``infer`` reads it back (so a worker that
cannot read the checkpoint fails), and streams logits and embeddings in
batches. Driven by the experiment's ``config``:

``pool_size`` (default 300)
    number of records.
``kill_at`` with ``kill_marker`` or ``kill_switch``
    ``infer`` over a part holding record ``kill_at`` first streams
    ``kill_after`` rows (default 120), then kills its own process with
    SIGKILL, as a worker the OOM killer took: once, when ``kill_marker``
    does not exist yet (it creates it), or every time while the file
    ``kill_switch`` exists. Never in the process ``driver_pid`` names (the
    tests'), where it raises instead.
``wide_when_scoring``
    an ``infer`` call whose records include this one writes rows one
    value wider (a model whose width depends on what it is given: one call
    cannot tell, shards can).
``hold_file`` and ``started_file``
    ``infer`` streams its first batch, writes its process id to
    ``started_file``, then waits
    while ``hold_file`` exists (a test cancels meanwhile).
"""

import json
import os
import signal
import time

import numpy as np

BATCH = 40


def assign_index(config):
    return [f"r{i}" for i in range(int(config.get("pool_size", 300)))]


def model_info(config):
    return {"task": "classification", "labels": ["a", "b", "c"]}


def train(labeled, resume_from, ckpt_file, loop, config):
    with open(ckpt_file, "w") as f:
        json.dump({"seed": 1000 * loop + len(labeled)}, f)
    return {"labels": [i % 3 for i in labeled]}


def test(ckpt_file, config):
    predictions = [i % 3 for i in range(30)]
    return {"predictions": predictions, "labels": [(i * 7) % 3 for i in range(30)]}


def _features(indices):
    i = np.asarray(indices, dtype=np.float64)[:, None]
    return np.hstack([np.sin(i * 0.37), np.cos(i * 0.11), np.sin(i * 0.05 + 1.0), (i % 7) / 7.0])


def _kill_now(config, unlabeled, streamed):
    at = config.get("kill_at")
    if at is None or at not in unlabeled or streamed < int(config.get("kill_after", 120)):
        return False
    marker, switch = config.get("kill_marker"), config.get("kill_switch")
    if switch:
        return os.path.exists(switch)
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        return True
    return False


def infer(unlabeled, writer, ckpt_file, config):
    with open(ckpt_file) as f:
        rng = np.random.default_rng(json.load(f)["seed"])
    unlabeled = list(unlabeled)
    members = set(unlabeled)
    width = 4 if config.get("wide_when_scoring") in members else 3
    w1, w2 = rng.normal(size=(4, 16)), rng.normal(size=(16, width))
    streamed = 0
    for start in range(0, len(unlabeled), BATCH):
        batch = unlabeled[start : start + BATCH]
        hidden = np.tanh(_features(batch) @ w1)
        writer.extend(batch, (hidden @ w2).astype(np.float32), embeddings=hidden[:, :5].astype(np.float32))
        streamed += len(batch)
        if start == 0 and config.get("started_file"):
            with open(config["started_file"], "w") as f:
                f.write(str(os.getpid()))
            while config.get("hold_file") and os.path.exists(config["hold_file"]):
                time.sleep(0.02)
        if _kill_now(config, members, streamed):
            if os.getpid() == config.get("driver_pid"):
                raise RuntimeError("asked to kill the tests' own process")
            os.kill(os.getpid(), signal.SIGKILL)
