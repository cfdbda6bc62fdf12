"""What the dashboard's first page costs the server: ``GET /api/v1/experiments``
with each experiment's ``summary``, over N experiments of K finished loops,
reading every loop state at once (SQLite: one query) and, for comparison,
once per experiment (the ``Storage`` base class's default). Each finished
loop holds what the classification metrics plugin reports for 10 classes
(per-class scores, a confusion matrix), as a real loop's state does.

    python benchmarks/bench_experiment_list.py [--experiments 200] [--loops 5] [--requests 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from alectio_core.config import parse_config
from alectio_core.metrics import compute_metrics
from alectio_core.server import close_app, create_app
from alectio_core.storage import Storage
from alectio_core.tokens import create_token


def timed(client, headers: dict, requests: int) -> list[float]:
    client.get("/api/v1/experiments", headers=headers)
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get("/api/v1/experiments", headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--loops", type=int, default=5)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(parse_config({}, "bench"), storage=f"sqlite:///{tmp}/alectio.db")
        storage = app.extensions["alectio"]["storage"]
        headers = {"Authorization": f"Bearer {create_token(storage, 'bench')}"}
        rng = np.random.default_rng(0)
        truth = rng.integers(0, 10, 300)
        classes = [f"class {c}" for c in range(10)]
        for e in range(args.experiments):
            eid = f"e{e:04d}"
            storage.create_experiment({"id": eid, "model": "m", "strategy": "margin", "loops": args.loops, "pool_size": 1000})
            for loop in range(args.loops):
                guess = np.where(rng.random(300) < 0.5 + loop / 20, truth, rng.integers(0, 10, 300))
                metrics = compute_metrics("classification", guess.tolist(), truth.tolist(), class_labels=classes)
                storage.put_loop_state(eid, loop, {"experiment_id": eid, "loop": loop, "status": "done", "labeled": 100 * (loop + 1), "metrics": metrics})
        client = app.test_client()
        at_once = timed(client, headers, args.requests)
        storage.list_all_loop_states = lambda: Storage.list_all_loop_states(storage)  # one read per experiment
        each = timed(client, headers, args.requests)
        close_app(app)
    print(f"GET /api/v1/experiments, {args.experiments} experiments x {args.loops} finished loops, sqlite, {args.requests} requests")
    print(f"  every loop state in one query   median {statistics.median(at_once):7.1f} ms")
    print(f"  one query per experiment        median {statistics.median(each):7.1f} ms")


if __name__ == "__main__":
    main()
