"""Stopping a process that the tests or benchmarks started in a process group of its own
(`start_new_session=True`): a Celery worker and its pool, gunicorn and its workers."""

import os
import signal
import subprocess
from contextlib import suppress


def signal_group(process: subprocess.Popen, sig: int) -> None:
    with suppress(ProcessLookupError):  # the whole group has already exited
        os.killpg(process.pid, sig)


def reap_group(process: subprocess.Popen, *, timeout: float) -> None:
    """Wait up to `timeout` seconds for the process to exit, then SIGKILL what is left of its
    group: the process itself if it did not exit, and any child that outlived it."""
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    signal_group(process, signal.SIGKILL)
    process.wait()


def stop_group(process: subprocess.Popen, *, timeout: float) -> None:
    """SIGTERM the group (a warm shutdown), then reap it."""
    signal_group(process, signal.SIGTERM)
    reap_group(process, timeout=timeout)
