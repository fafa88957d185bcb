"""What every benchmark shares: its own database, broker and Redis, a Twilio double that notes
when each request arrived, Celery workers in their own process groups, and the clean-up of all
of it.

Importing this module points the process at the bench resources (never the suite's or a
developer's: the variables below are set, not defaulted) and sets Django up. Two benchmarks run
at once when one is given other resources: ORDERFLOW_BENCH_DATABASE, ORDERFLOW_BENCH_BROKER_URL
and ORDERFLOW_BENCH_LIMITER_URL.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import django
import kombu
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
DATABASE_NAME = os.environ.get("ORDERFLOW_BENCH_DATABASE", "orderflow_bench")
POSTGRES = "postgres://postgres@127.0.0.1:5432"
BROKER_URL = os.environ.get("ORDERFLOW_BENCH_BROKER_URL", "redis://127.0.0.1:6379/10")
LIMITER_URL = os.environ.get("ORDERFLOW_BENCH_LIMITER_URL", "redis://127.0.0.1:6379/11")
TWILIO_SID, TWILIO_TOKEN, TWILIO_FROM = "ACbench0000000000000000000000000", "bench-auth-token", "+15005550006"
CUSTOMER_PHONE = "+442079460958"
CUSTOMER_EMAIL = "ada@example.com"

os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "orderflow.settings.local",
        # As deployed: DEBUG on would keep every query in memory and slow both sides of a ratio.
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "bench-only-not-a-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,testserver",
        "DATABASE_URL": f"{POSTGRES}/{DATABASE_NAME}",
        "CELERY_BROKER_URL": BROKER_URL,
        "CELERY_RESULT_BACKEND": "django-db",
        "REDIS_URL": LIMITER_URL,
        # As .env.example: texts show amounts with their currency.
        "ORDERS_CURRENCY": "EUR",
        # The services log every notification at INFO; thousands of lines would bury the figures.
        "LOG_LEVEL": "WARNING",
    }
)
django.setup()

from django.apps import apps  # noqa: E402 - needs the settings above
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402

from notifications.management.commands.start_celery_worker import Command as StartCeleryWorker  # noqa: E402
from notifications.signals import queue_order_placed, queue_order_status_changed  # noqa: E402
from orders.services import OrderLine, order_create  # noqa: E402
from orders.signals import order_placed, order_status_changed  # noqa: E402
from tests.fakes.twilio_server import FakeTwilio  # noqa: E402
from tests.processes import reap_group, signal_group  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

ORDER_LINE = OrderLine(sku="TEA-1", name="Green tea", quantity=2, unit_price=Decimal("4.50"))
RESET_APPS = ("orders", "notifications", "django_celery_results")


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through every `finally`, which stops the workers


signal.signal(signal.SIGTERM, _exit_on_sigterm)


# --- resources ------------------------------------------------------------------------------


def prepare() -> None:
    """Create and migrate the bench database if needed, then empty it, the broker and the limiter."""
    with psycopg.connect(f"{POSTGRES}/postgres") as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
    if not exists:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", DATABASE_NAME], check=True)  # noqa: S603, S607
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"], cwd=ROOT, env=os.environ, check=True
    )
    tables = [model._meta.db_table for label in RESET_APPS for model in apps.get_app_config(label).get_models()]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(map(connection.ops.quote_name, tables))} RESTART IDENTITY CASCADE")
    empty_broker_and_limiter()


def broker_is_redis() -> bool:
    return BROKER_URL.startswith(("redis://", "rediss://"))


def empty_broker_and_limiter() -> None:
    """Empty the bench broker and the bench limiter; only with no worker running.

    A Redis broker and the limiter are databases of their own, emptied whole; on RabbitMQ the
    product's queues are purged.
    """
    redis.Redis.from_url(LIMITER_URL).flushdb()
    if broker_is_redis():
        redis.Redis.from_url(BROKER_URL).flushdb()
        return
    with kombu.Connection(BROKER_URL) as broker:
        channel = broker.channel()
        for queue in settings.CELERY_TASK_QUEUES:
            queue.bind(channel).declare()
            queue.bind(channel).purge()


def bench_owner():
    return get_user_model().objects.get_or_create(username="bench-shop")[0]


def place_order(*, owner, phone: str = CUSTOMER_PHONE, email: str = ""):
    """Place an order with one line through the product service, as the API does."""
    return order_create(
        owner=owner, customer_name="Ada Lovelace", customer_phone=phone, customer_email=email, items=[ORDER_LINE]
    ).order


@contextmanager
def notifications_switched_off():
    """Orders placed inside write no outbox rows and publish nothing: the receivers are disconnected."""
    order_placed.disconnect(dispatch_uid="notifications.order_placed")
    order_status_changed.disconnect(dispatch_uid="notifications.order_status_changed")
    try:
        yield
    finally:
        order_placed.connect(queue_order_placed, dispatch_uid="notifications.order_placed")
        order_status_changed.connect(queue_order_status_changed, dispatch_uid="notifications.order_status_changed")


def wait_until_drained(queue: str, *, timeout: float) -> float:
    """Wait until `queue` holds nothing and nothing delivered is unacknowledged (kombu's Redis
    transport keeps those in `unacked`); return time.monotonic() when that was first seen.

    Seen twice in a row, because a message popped by a worker is briefly in neither place.
    RabbitMQ tells a client only how many messages are ready, not how many are delivered and
    unacknowledged: there the time is when none is ready, and at most one message per pool
    process (prefetch 1) is still running.
    """
    if not broker_is_redis():
        return _wait_until_none_ready(queue, timeout=timeout)
    client = redis.Redis.from_url(BROKER_URL)
    deadline = time.monotonic() + timeout
    drained_since = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        if client.llen(queue) == 0 and client.hlen("unacked") == 0:
            if drained_since is not None:
                return drained_since
            drained_since = now
        else:
            drained_since = None
        time.sleep(0.002)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for the {queue} queue to drain")


def _wait_until_none_ready(queue: str, *, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    with kombu.Connection(BROKER_URL) as broker:
        channel = broker.channel()
        while time.monotonic() < deadline:
            now = time.monotonic()
            if channel.queue_declare(queue=queue, passive=True).message_count == 0:
                return now
            time.sleep(0.002)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for the {queue} queue to drain")


# --- the Twilio double ----------------------------------------------------------------------


class TimedTwilio(FakeTwilio):
    """The suite's FakeTwilio, with the bench's account and the arrival time of each request."""

    def __init__(self):
        super().__init__(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN)

    @property
    def arrivals(self) -> list[float]:
        """When each request arrived (time.time()), in the order they were answered."""
        with self._lock:
            return [request["at"] for request in self.requests]

    def arrivals_since(self, mark: int) -> list[float]:
        return sorted(self.arrivals[mark:])


@contextmanager
def running_twilio():
    server = TimedTwilio().start()
    try:
        yield server
    finally:
        server.stop()


# --- workers --------------------------------------------------------------------------------


def worker_env(twilio: FakeTwilio, **overrides: str) -> dict:
    """This process's environment (the bench resources) plus the Twilio double, for a worker."""
    return {
        **os.environ,
        "SMS_BACKEND": "notifications.backends.sms.TwilioBackend",
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_FROM_NUMBER": TWILIO_FROM,
        "TWILIO_API_BASE_URL": twilio.url,
        **overrides,
    }


class Worker:
    """A Celery worker with exactly the options `manage.py start_celery_worker` gives it, plus the
    bench tasks: `celery -A orderflow worker <that argv> --include=bench.celery_tasks`, in its own
    process group so that stopping it stops its pool too. `options`: more of start_celery_worker's
    options (e.g. --max-tasks-per-child 1); `app`: another Celery app module to run."""

    def __init__(
        self, *, name: str, env: dict, queue: str, concurrency: int, options: tuple = (), app: str = "orderflow"
    ):
        self.name = f"bench-{name}"
        self.app = app
        command = StartCeleryWorker()
        parser = command.create_parser("manage.py", "start_celery_worker")
        parsed = parser.parse_args(
            ["--queue", queue, "--concurrency", str(concurrency), "--hostname", f"{self.name}@%h", *options]
        )
        self.argv = command.worker_argv(vars(parsed))
        self.env = env
        self.log_path = Path(tempfile.gettempdir()) / f"orderflow-{self.name}.log"
        self.process = None

    def start(self) -> "Worker":
        self.log_path.write_text("")
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "celery", "-A", self.app, *self.argv, "--include=bench.celery_tasks"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited:\n{self.log_path.read_text()[-3000:]}")
        return " ready." in self.log_path.read_text()

    def terminate(self) -> None:
        signal_group(self.process, signal.SIGTERM)

    def wait_or_kill(self, timeout: float) -> None:
        reap_group(self.process, timeout=timeout)


@contextmanager
def running_workers(workers: list[Worker], *, stop_timeout: float = 20):
    """Start the workers together, wait until all are ready; on leaving, SIGTERM then SIGKILL."""
    try:
        for worker in workers:
            worker.start()
        wait_until(lambda: all(worker.ready() for worker in workers), timeout=90, what="the workers to be ready")
        yield workers
    finally:
        started = [worker for worker in workers if worker.process is not None]
        for worker in started:
            worker.terminate()
        deadline = time.monotonic() + stop_timeout
        for worker in started:
            worker.wait_or_kill(max(0.1, deadline - time.monotonic()))


# --- output ---------------------------------------------------------------------------------


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    print(f"\n{title}")
    for number, row in enumerate(cells):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if number == 0:
            print("  " + "  ".join("-" * width for width in widths))
