"""Faults with real processes: a worker killed with SIGKILL in the middle of a batch."""

import signal

import pytest
import redis
from django.conf import settings as django_settings

from notifications import sweeps
from notifications.models import Notification
from orders import services as order_services
from tests.factories import UserFactory, order_line
from tests.notifications.conftest import BROKERS, Worker, point_app_at, purge, wait_until

pytestmark = pytest.mark.integration

BATCH = 200


@pytest.fixture
def fault_env(worker_env, transactional_db, settings):
    settings.NOTIFICATIONS_STUCK_AFTER = 5  # the sweep runs here: treat 5 s old work as possibly lost
    broker_url = BROKERS["redis"]
    purge(broker_url)
    point_app_at(broker_url)
    redis.Redis.from_url(django_settings.REDIS_URL).flushdb()
    yield {
        **worker_env,
        "CELERY_BROKER_URL": broker_url,
        "NOTIFICATIONS_SMS_RATE_LIMIT": "40/s",
        "NOTIFICATIONS_STUCK_AFTER": "5",
    }
    purge(broker_url)
    point_app_at(django_settings.CELERY_BROKER_URL)


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_at_most_what_was_in_flight(
    fault_env, fake_twilio, capsys
):
    owner = UserFactory(username="fault-shop")
    phones = [f"+1303555{n:04d}" for n in range(BATCH)]
    first = Worker(name="doomed", env=fault_env, queues="sms", concurrency=2).start()
    for phone in phones:
        order_services.order_create(owner=owner, customer_name="Batch", customer_phone=phone, items=[order_line()])

    wait_until(lambda: Notification.objects.filter(status="sent").count() >= 40, timeout=60, what="40 sends")
    first.kill(signal.SIGKILL)
    first.process.wait()
    in_flight = Notification.objects.filter(status="sending").count()
    sent_before = Notification.objects.filter(status="sent").count()
    assert sent_before < BATCH, "the batch finished before the kill; nothing was tested"

    second = Worker(name="survivor", env=fault_env, queues="sms", concurrency=2).start()
    try:
        # Claims of the killed worker expire after their lease; the sweep then publishes them,
        # and the messages it had reserved, again.
        def all_sent():
            sweeps.notifications_sweep()
            return Notification.objects.filter(status="sent").count() == BATCH

        wait_until(all_sent, timeout=240, interval=5, what=f"all {BATCH} notifications sent")
    finally:
        second.stop()

    accepted = [request["To"] for request in fake_twilio.accepted() if request["To"] in set(phones)]
    duplicates = len(accepted) - len(set(accepted))
    with capsys.disabled():
        print(f"\nSIGKILL mid-batch: {sent_before} sent before, {in_flight} in flight, {duplicates} duplicate(s)")
    assert set(accepted) == set(phones)
    assert duplicates <= in_flight
