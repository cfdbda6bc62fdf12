"""The dashboard's page weight and first render with many experiments.

Stores ``--experiments`` experiments (each with ``--loops`` finished loops
and their metrics) directly in a fresh SQLite file, starts ``alectio serve``
on it (127.0.0.1), signs in through the form in headless Chromium
(Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) and
loads the experiments page ``--runs`` times, then one experiment's page.

    python benchmarks/bench_dashboard.py [--experiments 200] [--loops 5] [--runs 5]

Printed, from the browser's Resource and Navigation Timing:

* page weight: bytes of every file the page loads (the HTML, its scripts and
  stylesheet), uncompressed (``decodedBodySize``), and apart from them the
  JSON the page fetched;
* first render: milliseconds from the start of navigation to the
  ``rendered:<page>`` mark the page's script sets once its content is in
  the document (``performance.mark``), median and worst of the runs, with
  DOMContentLoaded for comparison.

No model is needed: the experiments are stored, not run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
from pathlib import Path

from processes import serving

from alectio_core.storage import open_storage
from alectio_core.tokens import create_token

CLASSES = ["even", "odd"]


def store_experiments(url: str, count: int, loops: int) -> str:
    """``count`` experiments of two models and four strategies, each with
    ``loops`` finished loops; returns a token's secret."""
    storage = open_storage(url)
    try:
        start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        for n in range(count):
            experiment_id = f"{n:012x}"
            storage.create_experiment(
                {
                    "id": experiment_id,
                    "model": ("digits_lr", "newsgroups_text")[n % 2],
                    "strategy": ("margin", "random", "entropy", "coreset")[n % 4],
                    "batch_size": 50,
                    "initial": 100,
                    "loops": loops + 2,
                    "seed": n,
                    "config": {},
                    "task": "classification",
                    "labels": CLASSES,
                    "mc_samples": None,
                    "pool_size": 2000,
                    "created": (start + datetime.timedelta(minutes=n)).isoformat(),
                    "stop": [],
                    "stopping": {},
                    "labels_mode": "plugin",
                },
                [f"record_{i}" for i in range(2000)],
            )
            for loop in range(loops):
                accuracy = 0.6 + 0.3 * (1 - 0.7**loop) + (n % 7) / 200
                finished = (start + datetime.timedelta(minutes=n, seconds=10 * loop)).isoformat()
                storage.put_loop_state(
                    experiment_id,
                    loop,
                    {
                        "experiment_id": experiment_id,
                        "loop": loop,
                        "status": "done",
                        "stage": None,
                        "progress": None,
                        "queued_at": finished,
                        "started_at": finished,
                        "finished_at": finished,
                        "labeled": 100 + 50 * loop,
                        "stage_times": {"train": 1.5, "test": 0.2, "metrics": 0.01, "infer": 0.8, "select": 0.1},
                        "metrics": {
                            "accuracy": accuracy,
                            "f1_score": accuracy - 0.02,
                            "class_names": CLASSES,
                            "confusion_matrix": [[400, 100], [80, 420]],
                            "num_queried_per_class": {"even": 50 + 20 * loop, "odd": 50 + 30 * loop},
                        },
                        "error": None,
                    },
                )
        return create_token(storage, "bench")
    finally:
        storage.close()


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


TIMING = """
const nav = performance.getEntriesByType("navigation")[0];
const mark = performance.getEntriesByName("rendered:" + arguments[0])[0];
const files = [nav, ...performance.getEntriesByType("resource").filter(r => r.initiatorType !== "fetch")];
const data = performance.getEntriesByType("resource").filter(r => r.initiatorType === "fetch");
return {
  rendered: mark ? mark.startTime : null,
  dcl: nav.domContentLoadedEventEnd,
  files: files.map(r => [new URL(r.name).pathname, r.decodedBodySize]),
  data: data.reduce((sum, r) => sum + r.decodedBodySize, 0),
};
"""


def load(browser, url: str, page: str) -> dict:
    """Open ``url`` (a fresh document) and wait for the page's render mark."""
    import time

    browser.get("about:blank")
    browser.get(url)
    deadline = time.monotonic() + 30
    while browser.execute_script("return document.body && document.body.dataset.rendered") != page:
        if time.monotonic() > deadline:
            sys.exit(f"the {page} page did not render: {browser.current_url}")
        time.sleep(0.02)
    return browser.execute_script(TIMING, page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--loops", type=int, default=5, help="finished loops per experiment")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder}/bench.db"
        token = store_experiments(url, args.experiments, args.loops)
        env = {**os.environ, "ALECTIO_HOME": str(folder / "home")}
        with serving(folder, "--storage", url, env=env) as (port, _server):
            base = f"http://127.0.0.1:{port}"
            browser = chromium()
            try:
                browser.get(base + "/")
                field = browser.find_element("name", "token")
                field.send_keys(token)
                field.submit()
                load(browser, base + "/", "experiments")  # warm: the server's first requests
                runs = [load(browser, base + "/", "experiments") for _ in range(args.runs)]
                rows = browser.execute_script("return document.querySelectorAll('table.list tbody tr').length")
                experiment = load(browser, f"{base}/#/e/{args.experiments - 1:012x}", "experiment")
            finally:
                browser.quit()

    files = dict(runs[0]["files"])
    files.update(experiment["files"])
    print(f"experiments page: {rows} rows ({args.experiments} experiments x {args.loops} finished loops, sqlite)")
    print(f"page weight (uncompressed): {sum(files.values()) / 1024:.1f} KB in {len(files)} files")
    for path, size in sorted(files.items()):
        print(f"  {path:<28} {size / 1024:7.1f} KB")
    print(f"JSON the experiments page fetched: {runs[0]['data'] / 1024:.1f} KB")
    rendered = [r["rendered"] for r in runs]
    print(
        f"first render, experiments page: median {statistics.median(rendered):.0f} ms, worst {max(rendered):.0f} ms "
        f"over {args.runs} loads (DOMContentLoaded median {statistics.median(r['dcl'] for r in runs):.0f} ms)"
    )
    print(f"first render, one experiment's page (its curve, {args.loops} loops): {experiment['rendered']:.0f} ms")


if __name__ == "__main__":
    main()
