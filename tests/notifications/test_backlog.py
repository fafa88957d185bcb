"""A backlog far larger than the rate limit lets through, or met with the database away: it
waits in the broker, not in a worker's memory, uses up no attempts, and the sweep does not
publish it again."""

import re
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from notifications import broker, services, sweeps
from notifications.models import Notification
from orderflow.celery import app
from orders import services as order_services
from tests.factories import UserFactory, order_line
from tests.notifications.conftest import BROKERS, running_worker, wait_until
from tests.processes import unreachable_database_url

pytestmark = pytest.mark.integration

BACKLOG = 300
CONCURRENCY = 2


@pytest.fixture(scope="module")
def slow_worker(worker_env):
    env = {**worker_env, "NOTIFICATIONS_SMS_RATE_LIMIT": "1/m"}
    with running_worker(
        name="backlog", broker_url=BROKERS["redis"], env=env, queues="sms", concurrency=CONCURRENCY
    ) as running:
        yield running


def test_backlog_waits_in_the_broker_without_using_attempts(slow_worker, transactional_db, fake_twilio):
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    owner = UserFactory(username="backlog-shop")
    for number in range(BACKLOG):
        order_services.order_create(
            owner=owner, customer_name="Bulk", customer_phone=f"+1202555{number:04d}", items=[order_line()]
        )
    wait_until(lambda: Notification.objects.filter(status="sent").exists(), timeout=30, what="the first send")

    inspector = app.control.inspect(destination=[slow_worker.hostname], timeout=2)
    held = sum(len(tasks) for tasks in (inspector.reserved() or {}).values())
    held += sum(len(tasks) for tasks in (inspector.active() or {}).values())
    assert held <= 2 * CONCURRENCY  # prefetch 1: each process holds its task and at most one more
    assert broker.queue_depth("sms") >= BACKLOG - 2 * CONCURRENCY

    statuses = Notification.objects.values_list("status", "attempts")
    assert sum(1 for status, _ in statuses if status == "sent") <= 2  # 1/m, plus the token in hand
    assert all(attempts == (1 if status == "sent" else 0) for status, attempts in statuses)

    Notification.objects.filter(status="queued").update(queued_at=timezone.now() - timedelta(hours=1))
    swept = sweeps.notifications_sweep()
    assert swept["message_lost"] <= 2 * CONCURRENCY  # only what the worker holds, never the backlog
    assert broker.queue_depth("sms") <= BACKLOG + 2 * CONCURRENCY


def test_with_the_database_away_the_backlog_waits_in_the_broker(worker_env):
    """Each pool process waits for the database with one message, then sends it to the end of
    the queue; before, each message failed at once into a countdown held by the worker, and
    the worker took in the whole backlog within a second."""
    env = {**worker_env, "DATABASE_URL": unreachable_database_url("hunter2")}
    messages = 40
    with running_worker(
        name="database-away", broker_url=BROKERS["redis"], env=env, queues="sms", concurrency=CONCURRENCY
    ) as away:
        for number in range(messages):
            broker.publish("notifications.tasks.send_sms_notification", args=[number + 1], queue="sms")
        # One wait for the database over in each pool process, and its message given back; then
        # a little longer, for a worker taking in the backlog would have by then.
        retries = wait_until(
            lambda: re.findall(r"Retry in (\S+):", away.log_path.read_text())[CONCURRENCY - 1 :],
            timeout=services.CLAIM_DATABASE_WAIT_SECONDS + 20,
            what="the first waits for the database to end",
        )
        time.sleep(3)
        inspector = app.control.inspect(destination=[away.hostname], timeout=5)
        scheduled, reserved, active = inspector.scheduled(), inspector.reserved(), inspector.active()
        assert None not in (scheduled, reserved, active), "the worker did not answer"
        assert sum(len(tasks) for tasks in scheduled.values()) == 0
        assert sum(len(tasks) for tasks in [*reserved.values(), *active.values()]) <= 2 * CONCURRENCY
        assert broker.queue_depth("sms") >= messages - 2 * CONCURRENCY
        assert set(re.findall(r"Retry in (\S+):", away.log_path.read_text())) == {"0s"}, retries
