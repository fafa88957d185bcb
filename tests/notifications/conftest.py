"""Real parts for the pipeline tests: a Twilio-compatible server, an SMTP server, a broker
(Redis and RabbitMQ in turn) and a Celery worker in its own process, all on loopback."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from notifications import services
from notifications.errors import PermanentDeliveryError
from notifications.models import DeadLetter, Notification
from orderflow.celery import app
from tests.factories import UserFactory, place_order
from tests.fakes.smtp_server import FakeSMTP
from tests.fakes.twilio_server import FakeTwilio
from tests.notifications.scripted_backend import ScriptedBackend
from tests.processes import stop_group
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
BROKERS = {
    "redis": os.environ.get("ORDERFLOW_TEST_REDIS_BROKER_URL", "redis://127.0.0.1:6379/14"),
    "amqp": os.environ.get("ORDERFLOW_TEST_AMQP_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}
TWILIO_SID, TWILIO_TOKEN, TWILIO_FROM = "ACtest00000000000000000000000000", "test-auth-token", "+15005550006"
# What the worker runs with; tests assert against these.
MAX_RETRIES = 2
WORKER_ENV = {
    "NOTIFICATIONS_MAX_RETRIES": str(MAX_RETRIES),
    "NOTIFICATIONS_RETRY_BACKOFF": "1",
    "NOTIFICATIONS_RETRY_BACKOFF_MAX": "2",
    "NOTIFICATIONS_SMS_RATE_LIMIT": "100/s",
    "NOTIFICATIONS_EMAIL_RATE_LIMIT": "100/s",
}


def point_app_at(broker_url: str) -> None:
    """Make this process publish to `broker_url` (its pools are rebuilt on next use)."""
    os.environ.pop("CELERY_BROKER_URL", None)  # Celery would prefer it to its configuration
    app.conf.broker_url = broker_url
    # kombu keeps one pool per broker URL; dropping ours makes the next publish pick the new URL's.
    app._pool = None
    app.amqp._producer_pool = None


def sessions_waiting_for_a_lock() -> int:
    """How many sessions of the test database wait for a lock held by another (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def purge(broker_url: str) -> None:
    with app.connection_for_write(broker_url) as conn:
        for queue in ("sms", "email", "notifications", "default"):
            with contextlib.suppress(*conn.channel_errors):
                conn.default_channel.queue_purge(queue)


def database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """`manage.py start_celery_worker` in its own process group, as an operator starts it."""

    def __init__(self, *, name: str, env: dict, queues: str = "sms,email,notifications,default", concurrency=2):
        self.name = name
        self.hostname = f"{name}@{socket.gethostname()}"
        self.log_path = Path(tempfile.gettempdir()) / f"orderflow-test-worker-{name}.log"
        self.env = env
        self.args = [
            sys.executable,
            "manage.py",
            "start_celery_worker",
            "--queue",
            queues,
            "--concurrency",
            str(concurrency),
            "--hostname",
            self.hostname,
            "--loglevel",
            "info",
        ]
        self.process = None

    def start(self) -> "Worker":
        self.log_path.write_text("")
        self.log = self.log_path.open("a")
        self.process = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_until(lambda: " ready." in self.log_path.read_text() or self.process.poll() is not None, timeout=60)
        if self.process.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited:\n{self.log_path.read_text()[-3000:]}")
        return self

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time used so far by the worker and its pool processes (its process group)."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[2]) == self.process.pid:  # fields from the 3rd: state, ppid, pgrp, ...
                    ticks += int(fields[11]) + int(fields[12])  # utime, stime
                    if stat.parent.name == str(self.process.pid):  # the main process also carries its
                        ticks += int(fields[13]) + int(fields[14])  # exited children's: cutime, cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            stop_group(self.process, timeout=20)
        self.log.close()


@pytest.fixture(scope="session")
def fake_twilio():
    server = FakeTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_smtp():
    server = FakeSMTP().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker, fake_twilio, fake_smtp):
    with django_db_blocker.unblock():
        if connection.vendor != "postgresql":
            pytest.skip("the pipeline tests share their database with worker processes: run them on PostgreSQL")
        url = database_url()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    env.update(WORKER_ENV)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "orderflow.settings.local",
            "DATABASE_URL": url,
            "REDIS_URL": settings.REDIS_URL,
            "SMS_BACKEND": "notifications.backends.sms.TwilioBackend",
            "TWILIO_ACCOUNT_SID": TWILIO_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "TWILIO_FROM_NUMBER": TWILIO_FROM,
            "TWILIO_API_BASE_URL": fake_twilio.url,
            "EMAIL_URL": fake_smtp.url,
            "DEFAULT_FROM_EMAIL": "orders@shop.example",
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="orderflow-test-metrics-"),
        }
    )
    return env


@pytest.fixture(scope="module", params=sorted(BROKERS))
def broker_url(request):
    return BROKERS[request.param]


@contextlib.contextmanager
def running_worker(*, name: str, broker_url: str, env: dict, **options):
    """A worker consuming from `broker_url`, emptied before and after, to which this process
    publishes meanwhile. `options`: Worker's (queues, concurrency)."""
    purge(broker_url)
    point_app_at(broker_url)
    running = Worker(name=name, env={**env, "CELERY_BROKER_URL": broker_url}, **options).start()
    try:
        yield running
    finally:
        running.stop()
        purge(broker_url)
        point_app_at(settings.CELERY_BROKER_URL)


@pytest.fixture(scope="module")
def worker(broker_url, worker_env):
    """A running worker on every queue, consuming from the broker under test, for one test module."""
    with running_worker(name=f"pipeline-{broker_url.split(':')[0]}", broker_url=broker_url, env=worker_env) as running:
        yield running


@pytest.fixture
def pipeline(worker, transactional_db, settings):
    """Orders placed in a test are published from here and sent by the worker process."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # fresh rate-limit windows
    return worker


@pytest.fixture
def api_for_pipeline(pipeline):
    from tests.conftest import _token_client

    return _token_client(UserFactory(username="pipeline-api"))


# --- one-process fixtures for unit tests of the services and the admin -----------------------


@pytest.fixture
def scripted(settings):
    """SMS go through ScriptedBackend: each send takes the next scripted error, or succeeds."""
    settings.SMS_BACKEND = "tests.notifications.scripted_backend.ScriptedBackend"
    settings.NOTIFICATIONS_MAX_RETRIES = 2
    ScriptedBackend.script.clear()
    ScriptedBackend.sent.clear()
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    services.limiter_for.cache_clear()
    yield ScriptedBackend
    services.limiter_for.cache_clear()
    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # no window nor pause left for the next test


class RefusedStatements:
    """A connection.execute_wrapper: the statements holding `marker` (RECORDS, CLAIMS) raise
    `errors`, one each, in turn; every other statement runs. `errors` left over: never reached."""

    def __init__(self, marker: str, *errors: BaseException):
        self.marker = marker
        self.errors = list(errors)

    def __call__(self, execute, sql, params, many, context):
        if self.errors and self.marker in sql:
            raise self.errors.pop(0)
        return execute(sql, params, many, context)


# What RefusedStatements looks for: the statements writing a send's attempt, and the claim.
RECORDS = "notificationattempt"
CLAIMS = "SET status = 'sending'"


def send_into_dead_letter(order, error=None) -> DeadLetter:
    """Send the order's SMS into a permanent failure through the real send path (needs `scripted`)."""
    ScriptedBackend.script.append(error or PermanentDeliveryError("Twilio 21211: invalid number", code="twilio-21211"))
    sms = Notification.objects.get(order=order, channel="sms")
    assert services.notification_send(notification_id=sms.pk).outcome == "dead"
    return DeadLetter.objects.get(notification=sms, status="dead")


@pytest.fixture
def dead(shop, published, scripted, django_capture_on_commit_callbacks) -> DeadLetter:
    """A dead letter for an SMS-only order, made through the real send path."""
    with django_capture_on_commit_callbacks(execute=False):
        order = place_order(owner=shop, customer_email="")
    return send_into_dead_letter(order)
