"""Start-up cost of the ``alectio`` command, as whole processes.

    python benchmarks/bench_startup.py [--repeat 9] [--top 12]

Timed, each ``--repeat`` times after one warm-up run, median reported:

* ``python -c pass``: the interpreter alone, the floor under every figure;
* ``alectio --help``;
* ``alectio plugins``: discovery and every plugin module imported, models
  included (the goal for these two: under 0.3 s);
* ``alectio run`` fixed cost: a whole ``alectio run bench_zero --loops 1``
  on a new sqlite file. ``bench_zero`` (``benchmarks/packages/alectio-bench-zero``)
  is a model whose hooks do nothing on a 100-record pool, so the process's
  time is everything ``alectio run`` adds around the hooks: imports, config,
  plugin discovery, storage set-up, the experiment, one loop's jobs, lease,
  metrics, writer, strategy and results (the goal: under 0.5 s). It is
  pip-installed into a temporary ``--target`` folder on ``PYTHONPATH``, as
  the tests install theirs, never into this environment.

The commands run through the ``alectio`` console script beside this Python
(``python -m alectio_core`` when there is none), with bytecode written as
usual (``PYTHONDONTWRITEBYTECODE`` is dropped), so imports cost what they
cost a user. The machine's load average is printed with the figures; under
load, wall-clock times grow, so CPU (user + system) time is printed too.

Then, for each command, where its import time goes: ``python -X importtime``
once, the self time of every module summed by top-level package, largest
first (``--top`` of them).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from processes import install_zero_model, timed

GOALS = {"alectio --help": 0.3, "alectio plugins": 0.3, "alectio run (fixed cost)": 0.5}


def alectio_command() -> list[str]:
    script = shutil.which("alectio", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "alectio_core"]


def import_top(command: list[str], env: dict, top: int) -> list[tuple[str, float]]:
    """Seconds of import time per top-level package, largest first."""
    stderr = timed([sys.executable, "-X", "importtime", *command], env, stderr=subprocess.PIPE)[2]
    per_package: collections.Counter = collections.Counter()
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line[len("import time:"):].split("|")
        per_package[name.strip().split(".")[0]] += int(self_us) / 1e6
    return per_package.most_common(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--top", type=int, default=12, help="packages in each import-time list")
    args = parser.parse_args()
    alectio = alectio_command()
    with tempfile.TemporaryDirectory(prefix="alectio-bench-startup-") as tmp:
        tmp_path = Path(tmp)
        env = install_zero_model(tmp_path / "site")
        runs = iter(range(10**6))

        def fixed_cost() -> list[str]:
            return ["run", "bench_zero", "--loops", "1", "--initial", "10", "--batch", "10", "--json",
                    "--storage", f"sqlite:///{tmp_path}/run-{next(runs)}/alectio.db"]

        commands = {
            "python -c pass": lambda: [sys.executable, "-c", "pass"],
            "alectio --help": lambda: [*alectio, "--help"],
            "alectio plugins": lambda: [*alectio, "plugins"],
            "alectio run (fixed cost)": lambda: [*alectio, *fixed_cost()],
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for make in commands.values():
            timed(make(), env)  # warm-up: bytecode written, files in the page cache
        for _ in range(args.repeat):  # interleaved, so a burst of load hits every command alike
            for name, make in commands.items():
                times[name].append(timed(make(), env)[:2])
        load = os.getloadavg()
        print(f"{args.repeat} runs each, median; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
              f"on {os.cpu_count()} cores")
        for name, values in times.items():
            wall, cpu = (statistics.median(v[i] for v in values) for i in (0, 1))
            goal = f"goal < {GOALS[name]:.1f} s" if name in GOALS else ""
            print(f"  {name:<26} {wall:5.2f} s wall  {cpu:5.2f} s CPU   {goal}")
        for name in ("alectio --help", "alectio plugins", "alectio run (fixed cost)"):
            command = commands[name]()[len(alectio):]
            print(f"\nimport time by package, {name} (python -X importtime):")
            for package, seconds in import_top(["-m", "alectio_core", *command], env, args.top):
                print(f"  {seconds:6.3f} s  {package}")


if __name__ == "__main__":
    main()
