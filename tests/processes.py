"""Stopping a process that the tests or benchmarks started in a process group of its own
(`start_new_session=True`): a Celery worker and its pool, gunicorn and its workers. Running a
command as a person deploying would, and a database address nothing answers at."""

import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import yaml

from tests.fakes.smtp_server import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOYED_BIND = "0.0.0.0:8000"


def web_command(*, bind: str) -> list[str]:
    """docker-compose.yml's web command (gunicorn as deployed), serving on `bind` instead."""
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]["command"]
    assert DEPLOYED_BIND in command, command
    return [bind if argument == DEPLOYED_BIND else argument for argument in command]


def run_deployed(*argv: str, cwd: Path = ROOT, **variables: str) -> subprocess.CompletedProcess:
    """`python argv...` from the project's root (or `cwd`, a copy of it) with the environment and
    `variables`, the settings module left to its default as a deployment does."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(variables)
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def unreachable_database_url(password: str) -> str:
    """A PostgreSQL URL for a port nothing listens on (bound, then closed), with a password."""
    return f"postgres://postgres:{password}@127.0.0.1:{free_port()}/orderflow"


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
