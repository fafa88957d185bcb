import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from celery.app.defaults import DEFAULTS
from celery.concurrency import prefork, solo
from celery.utils.imports import symbol_by_name
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django_celery_beat.schedulers import DatabaseScheduler

from notifications.management.commands.start_celery_worker import Command as StartWorker
from orderflow.beat import OUTAGE
from orderflow.celery import app
from orderflow.worker import ReplaceRecycledProcessesPromptly
from tests.notifications.conftest import BROKERS
from tests.processes import run_deployed, unreachable_database_url

ROOT = Path(__file__).resolve().parent.parent

CONTRACT_ROUTES = {
    "notifications.tasks.send_sms_notification": "sms",
    "notifications.tasks.send_email_notification": "email",
    "notifications.tasks.send_order_confirmation": "notifications",
    "notifications.tasks.send_order_status_update": "notifications",
}


def test_the_four_queues_exist():
    assert {queue.name for queue in app.conf.task_queues} == {"sms", "email", "notifications", "default"}
    assert app.conf.task_default_queue == "default"


@pytest.mark.parametrize(("task", "queue"), CONTRACT_ROUTES.items())
def test_contract_tasks_route_to_their_queue(task, queue):
    assert app.amqp.router.route({}, task)["queue"].name == queue


def test_celery_reads_django_settings():
    assert app.conf.beat_scheduler == "orderflow.beat:DatabaseScheduler"
    assert app.conf.result_backend == "django-db"


def test_celery_call_publishes_a_task_as_an_operator_runs_the_sweep_by_hand():
    """`celery call` keeps the task's result through django-celery-results' models: Django must
    be set up in that process too, as the worker and beat set it up for themselves."""
    broker_url = BROKERS["redis"]  # no worker consumes from it between the pipeline modules
    queue = redis.Redis.from_url(broker_url)
    queue.delete("notifications")
    try:
        result = run_deployed(
            "-m", "celery", "-A", "orderflow", "call", "notifications.tasks.retry_failed_notifications",
            CELERY_BROKER_URL=broker_url,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        task_id = result.stdout.strip()
        [message] = [json.loads(raw) for raw in queue.lrange("notifications", 0, -1)]
        assert message["headers"]["id"] == task_id
    finally:
        queue.delete("notifications")


def test_workers_and_beat_try_to_reach_a_broker_that_went_away_for_as_long_as_it_takes():
    # Celery's default, 100 tries, ends a worker about 50 minutes into an outage.
    assert DEFAULTS["broker_connection_max_retries"] == 100
    assert app.conf.broker_connection_max_retries is None


def test_what_a_task_prints_is_logged_as_information_not_as_a_warning():
    assert DEFAULTS["worker_redirect_stdouts_level"] == "WARNING"
    assert app.conf.worker_redirect_stdouts_level == "INFO"


def test_beat_uses_django_celery_beats_database_scheduler():
    assert issubclass(symbol_by_name(app.conf.beat_scheduler), DatabaseScheduler)


def test_beat_with_a_database_it_cannot_reach_says_so_in_one_line(tmp_path):
    url = unreachable_database_url("hunter2")
    result = run_deployed(
        "-m", "celery", "-A", "orderflow", "beat", "--schedule", str(tmp_path / "schedule"), DATABASE_URL=url
    )
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    where = url.replace(":hunter2", "").replace("postgres://", "postgresql://")
    assert line.startswith(f"celery beat: DATABASE_URL: cannot connect to {where}: ")


def test_beat_on_a_database_not_yet_migrated_says_to_migrate_in_one_line(tmp_path):
    result = run_deployed(
        "-m",
        "celery",
        "-A",
        "orderflow",
        "beat",
        "--schedule",
        str(tmp_path / "schedule"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}",
    )
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "celery beat: DATABASE_URL: the database has no schedules yet; run `python manage.py migrate` first"
    ]


@pytest.mark.parametrize(
    "name", ["broker_pool_acquire_timeout", "task_always_eager", "task_send_sent_event", "task_repr_maxlevels"]
)
def test_settings_stated_for_speed_keep_celerys_defaults(settings, name):
    """They are in settings only so that reading them is quick: stating them changed nothing."""
    assert getattr(settings, f"CELERY_{name.upper()}") == DEFAULTS[name]


def worker_argv(**options):
    command = StartWorker()
    parser = command.create_parser("manage.py", "start_celery_worker")
    args = []
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return command.worker_argv(vars(parser.parse_args(args)))


def test_sms_worker_defaults():
    argv = worker_argv(queue="sms")
    assert "--queues=sms" in argv
    assert "--hostname=sms@%h" in argv
    assert "--prefetch-multiplier=1" in argv
    assert "--concurrency=2" in argv
    assert "--max-tasks-per-child=1000" in argv


def test_worker_passes_options_through():
    argv = worker_argv(
        queue="notifications,default",
        concurrency=4,
        loglevel="DEBUG",
        hostname="n1@box",
        pool="solo",
        prefetch_multiplier=8,
        max_tasks_per_child=50,
    )
    assert argv == [
        "worker",
        "--queues=notifications,default",
        "--concurrency=4",
        "--loglevel=debug",
        "--hostname=n1@box",
        "--pool=solo",
        "--prefetch-multiplier=8",
        "--max-tasks-per-child=50",
    ]


def test_worker_for_non_channel_queues_prefetches_more():
    assert "--prefetch-multiplier=4" in worker_argv(queue="notifications")


@pytest.mark.parametrize(("queue", "says"), [("sms,fax", "unknown queue fax"), (",", r"unknown queue \(empty\)")])
def test_worker_refuses_unknown_queue(queue, says):
    with pytest.raises(CommandError, match=says):
        call_command("start_celery_worker", "--queue", queue)


def test_worker_refuses_zero_concurrency():
    with pytest.raises(CommandError, match="--concurrency must be at least 1"):
        call_command("start_celery_worker", "--queue", "sms", "--concurrency", "0")


def test_worker_refuses_a_pool_whose_package_is_not_installed():
    with pytest.raises(CommandError, match="--pool eventlet needs the eventlet package"):
        call_command("start_celery_worker", "--queue", "sms", "--pool", "eventlet")


def test_a_worker_that_cannot_start_exits_with_a_failure_status():
    """A supervisor restarting on failure, or a deploy script, must see it (Celery's own exit status)."""
    env = {**os.environ, "CELERY_BROKER_URL": "redis://127.0.0.1:6379/12", "CELERY_RESULT_BACKEND": "nosuch://x"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "manage.py", "start_celery_worker", "--queue", "default"]
    checked = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1
    assert "(notifications.E002) CELERY_RESULT_BACKEND: cannot load a result backend for 'nosuch://x'" in checked.stderr
    unchecked = subprocess.run(
        [*command, "--skip-checks"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert unchecked.returncode == 1
    assert "Unrecoverable error" in unchecked.stdout + unchecked.stderr


def test_check_broker_reports_unreachable_broker_in_one_line(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    with pytest.raises(
        CommandError, match=r"^the broker at redis://127.0.0.1:1/0 cannot be used \(OperationalError: .*redis-server"
    ):
        call_command("check_broker")
    settings.CELERY_BROKER_URL = "redis://:hunter2@127.0.0.1:1/0"
    with pytest.raises(CommandError, match=r"^the broker at redis://:\*\*\*@127.0.0.1:1/0 cannot be used"):
        call_command("check_broker")


def test_check_broker_shows_what_a_running_broker_answered(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/99"  # Redis runs, with 16 databases
    with pytest.raises(CommandError, match="DB index is out of range"):
        call_command("check_broker")


def test_beat_says_a_database_gone_away_in_one_line_not_a_traceback_at_every_tick(transactional_db, caplog):
    scheduler = symbol_by_name(app.conf.beat_scheduler)(app=app)
    caplog.clear()

    def unreachable(execute, sql, params, many, context):
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    with connection.execute_wrapper(unreachable):
        assert [scheduler.schedule_changed() for _ in range(5)] == [False] * 5
    lines = [record for record in caplog.records if record.name == "django_celery_beat.schedulers"]
    assert [record.getMessage() for record in lines] == [
        "database unavailable (1 failed call(s) to it so far, tried again every tick): "
        "connection to server at 127.0.0.1, port 5432 failed: Connection refused"
    ]
    assert lines[0].exc_info is None and "Traceback" not in caplog.text

    scheduler.schedule_changed()
    assert "celery beat: the database answers again after 5 failed call(s)" in caplog.text
    assert OUTAGE.failures == 0


@pytest.mark.parametrize("url", ["db+postgresql://orderflow:s3cretpw@db/orderflow", "nosuch://user:s3cretpw@host/1"])
def test_a_result_backend_that_cannot_load_is_named_without_its_password(url):
    env = {**os.environ, "CELERY_RESULT_BACKEND": url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode != 0
    assert "(notifications.E002) CELERY_RESULT_BACKEND: cannot load a result backend for" in checked.stderr
    assert ":***@" in checked.stderr
    assert "s3cretpw" not in checked.stdout + checked.stderr


def test_workers_look_for_recycled_pool_processes_every_tenth_of_a_second():
    # Celery looks every 5 s; a message handed to a process just as it left after its last task
    # (--max-tasks-per-child) waited for that look (orderflow/worker.py).
    controller = app.WorkController(pool_cls="prefork", concurrency=1, hostname="check@host")
    assert any(isinstance(step, ReplaceRecycledProcessesPromptly) for step in controller.blueprint.steps.values())

    pool = prefork.TaskPool(limit=1)
    pool.maintain_pool = object()  # set by the pool's on_start: billiard's check
    timers = []
    hub = SimpleNamespace(call_repeatedly=lambda seconds, fun: timers.append((seconds, fun)))
    ReplaceRecycledProcessesPromptly(controller).start(SimpleNamespace(pool=pool, hub=hub))
    assert timers == [(0.1, pool.maintain_pool)]


def test_a_pool_that_does_not_recycle_gets_no_extra_check():
    timers = []
    hub = SimpleNamespace(call_repeatedly=lambda seconds, fun: timers.append((seconds, fun)))
    ReplaceRecycledProcessesPromptly(SimpleNamespace()).start(SimpleNamespace(pool=solo.TaskPool(), hub=hub))
    assert timers == []


def test_a_worker_without_an_event_loop_starts_and_leaves_the_check_to_billiards_supervisor():
    pool = prefork.TaskPool(limit=1)
    pool.maintain_pool = object()
    ReplaceRecycledProcessesPromptly(SimpleNamespace()).start(SimpleNamespace(pool=pool, hub=None))  # no error
