"""Pool processes recycled: how long messages wait when each pool process is replaced after
every task, with the worker's prompt look for exited processes (ReplaceRecycledProcessesPromptly,
orderflow/worker.py) and with Celery's own look every 5 s, in one run.

One process (`--concurrency 1 --max-tasks-per-child 1`) on the sms queue, --messages no-ops per
batch, the two workers' batches alternating. A recycle normally takes a fraction of a second; a
message handed to the process just as it leaves waits for the next look
(https://github.com/celery/celery/issues/9588). Printed per mode: the time to run each batch and
the longest gap between two tasks.

    .venv/bin/python bench/recycle.py [--messages 20] [--rounds 2]
"""

import argparse
import itertools
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # first: it sets Django up for the imports below

# isort: split

from notifications.broker import publish
from notifications.models import Channel

MODES = {"prompt look (orderflow)": "orderflow", "Celery's 5 s look": "bench.celery_celerys_pool_check"}
SUCCEEDED = re.compile(r"^(\S+ \S+) INFO celery\.app\.trace Task bench\.noop\[")


def batch(worker: harness.Worker, messages: int) -> tuple[float, float]:
    """Seconds to run `messages` no-ops, and the longest gap between two of them finishing."""
    mark = len(worker.log_path.read_text().splitlines())
    started = time.monotonic()
    for number in range(messages):
        publish("bench.noop", args=[number], queue=Channel.SMS)
    finished = harness.wait_until_drained(Channel.SMS, timeout=300)
    lines = worker.log_path.read_text().splitlines()[mark:]
    times = [
        datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for match in map(SUCCEEDED.match, lines)
        if match
    ]
    return finished - started, max(later - earlier for earlier, later in itertools.pairwise(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20, help="no-ops per batch (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="batches per mode (default 2)")
    args = parser.parse_args()

    harness.prepare()
    results = {mode: [] for mode in MODES}
    with harness.running_twilio() as twilio:
        for _ in range(args.rounds):
            for mode, app in MODES.items():
                worker = harness.Worker(
                    name="recycle",
                    env=harness.worker_env(twilio),
                    queue=Channel.SMS,
                    concurrency=1,
                    options=("--max-tasks-per-child", "1"),
                    app=app,
                )
                with harness.running_workers([worker]):
                    results[mode].append(batch(worker, args.messages))
    harness.empty_broker_and_limiter()

    harness.print_table(
        f"Recycled after every task: {args.messages} no-ops per batch, 1 process, {args.rounds} batches per mode",
        ["", "seconds per batch", "longest gap between tasks, s", "median s per task"],
        [
            [
                mode,
                ", ".join(f"{seconds:.2f}" for seconds, _ in runs),
                ", ".join(f"{gap:.2f}" for _, gap in runs),
                f"{statistics.median(seconds for seconds, _ in runs) / args.messages:.3f}",
            ]
            for mode, runs in results.items()
        ],
    )
    prompt, celerys = (statistics.median(seconds for seconds, _ in results[mode]) for mode in MODES)
    print(f"\n  time per batch, prompt look / Celery's: {prompt / celerys:.2f}")


if __name__ == "__main__":
    main()
