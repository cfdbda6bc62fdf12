"""Time alectio loops of an example model and print its learning curve.

Runs a self-driven experiment through alectio's own engine (sqlite storage
in a temporary folder): loop 0 trains on ``--initial`` seeded-random
records, every later loop on ``--batch`` more picked by ``--strategy``.
Each loop is train + test + metrics + infer over the rest of the pool.

    python examples/measure.py digits_cnn --initial 300 --loops 3
    python examples/measure.py shapes_detector --config '{"pool_size": 1000}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from alectio_core import Engine, open_storage

HEADLINE = {"classification": "accuracy", "object_detection": "mAP_50"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--initial", type=int, default=300)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--loops", type=int, default=3)
    parser.add_argument("--strategy", default="entropy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--config", default="{}", help="the model's settings as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{tmp}/alectio.db")
        engine = Engine(storage)
        started = time.perf_counter()
        experiment = engine.create_experiment(
            args.model,
            strategy=args.strategy,
            batch_size=args.batch,
            initial=args.initial,
            loops=args.loops,
            seed=args.seed,
            config=json.loads(args.config),
        )
        metric = HEADLINE.get(experiment["task"], "accuracy")
        print(
            f"{args.model}: pool {experiment['pool_size']}, strategy {args.strategy}, "
            f"{torch.get_num_threads()} threads, create (assign_index) {time.perf_counter() - started:.1f}s"
        )
        print(f"{'loop':>4} {'labeled':>7} {metric:>9} {'train':>7} {'test':>6} {'infer':>6} {'loop':>7}")
        for loop in range(args.loops):
            t0 = time.perf_counter()
            state = engine.run_loop(experiment["id"], loop)
            elapsed = time.perf_counter() - t0
            times = state["stage_times"]
            print(
                f"{loop:>4} {state['labeled']:>7} {state['metrics'][metric]:>9.3f} "
                f"{times['train']:>6.1f}s {times['test']:>5.1f}s {times['infer']:>5.1f}s {elapsed:>6.1f}s"
            )
        storage.close()


if __name__ == "__main__":
    main()
