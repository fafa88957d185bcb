"""What a pool process pays before its first SMS, with and without the backends built in the
worker's main process (notifications.tasks.build_backends_before_the_pool_starts, on worker_init).

Each mode runs in a fresh interpreter set up as a worker's main process is (Django, the task
modules, the Twilio backend configured); `built` then calls the worker_init receiver. It forks
`--processes` children one after another, as the prefork pool does at start and whenever it
replaces a recycled process; each child gets its SMS backend ready to send (without sending)
and reports how long that took and how much memory became its own (private pages), then again
after a full garbage collection: Python's collector writes to every object it visits, so over a
process's life most pages it inherited become its own anyway; the second figure is what lasts.

    .venv/bin/python bench/pool_process_start.py [--processes 10] [--rounds 3]
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

MODES = ("as before", "built")


def private_kib() -> int:
    with open("/proc/self/smaps_rollup") as rollup:
        return sum(int(line.split()[1]) for line in rollup if line.startswith(("Private_Clean", "Private_Dirty")))


def report_from_child(writable: int) -> None:
    """In a forked child: get the SMS backend ready to send, as a first send would, and report."""
    from notifications.backends import get_backend

    before, started = private_kib(), time.perf_counter()
    get_backend("sms").messages  # noqa: B018 - what the first send needs before its request
    elapsed, ready = time.perf_counter() - started, private_kib() - before
    gc.collect()
    os.write(writable, json.dumps([elapsed, ready, private_kib() - before]).encode())


def measure(mode: str, processes: int) -> list[tuple[float, int, int]]:
    """In this (fresh) interpreter: prepare as a worker's main process, then fork the children."""
    os.environ.update(
        {
            "SMS_BACKEND": "notifications.backends.sms.TwilioBackend",
            "TWILIO_ACCOUNT_SID": "ACbench0000000000000000000000000",
            "TWILIO_AUTH_TOKEN": "bench-auth-token",
            "TWILIO_FROM_NUMBER": "+15005550006",
            "TWILIO_API_BASE_URL": "http://127.0.0.1:9",  # never called: no request is made
        }
    )
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import harness  # noqa: F401 - sets Django up on the bench resources
    from notifications import tasks
    from orderflow.celery import app

    if mode == "built":  # as worker_init does in a worker consuming every queue
        tasks.build_backends_before_the_pool_starts(sender=SimpleNamespace(app=app))
    figures = []
    for _ in range(processes):
        readable, writable = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                report_from_child(writable)
            finally:
                os._exit(0)
        os.close(writable)
        with os.fdopen(readable) as pipe:
            figures.append(tuple(json.loads(pipe.read())))
        os.waitpid(pid, 0)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=10, help="children forked per mode and round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both modes (default 3)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one measurement, in a child interpreter
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.processes)))
        return

    figures = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            run = subprocess.run(  # noqa: S603
                [sys.executable, __file__, "--mode", mode, "--processes", str(args.processes)],
                capture_output=True,
                text=True,
                check=True,
            )
            figures[mode] += json.loads(run.stdout.strip().splitlines()[-1])
    medians = {
        mode: [statistics.median(column) for column in zip(*values, strict=True)] for mode, values in figures.items()
    }
    print(f"\nA pool process's first SMS backend: {args.rounds} rounds x {args.processes} processes per mode")
    print("  mode        ms to ready  private MiB when ready  private MiB after a full collection")
    for mode, (seconds, ready, collected) in medians.items():
        print(f"  {mode:<10} {seconds * 1000:12.1f}  {ready / 1024:22.1f}  {collected / 1024:35.1f}")
    before, built = medians["as before"], medians["built"]
    print(
        f"  built / as before: time {built[0] / before[0]:.4f}, private memory {built[1] / before[1]:.3f} when "
        f"ready and {built[2] / before[2]:.3f} after a full collection "
        f"({(before[0] - built[0]) * 1000:.0f} ms and {(before[2] - built[2]) / 1024:.1f} MiB less per process)"
    )


if __name__ == "__main__":
    main()
