"""Sends waiting for an earlier notification of their order, with a real worker: they wait out
of the broker and out of the worker's memory, and go, in order, once the earlier ones are sent."""

import pytest
import redis
from django.conf import settings

from notifications import broker
from notifications.models import Notification
from orderflow.celery import app
from orders import services as order_services
from orders.models import ChangeSource
from tests.factories import UserFactory, order_line
from tests.notifications.conftest import BROKERS, Worker, running_worker, wait_until

pytestmark = pytest.mark.integration

ORDERS = 30
# Seconds before each order's first SMS, refused once, is tried again: long enough for the
# test to see every confirmation waiting before any first SMS goes, on a slow machine too.
RETRY_BACKOFF = 20


@pytest.fixture(scope="module")
def patient_worker(worker_env):
    env = {
        **worker_env,
        "NOTIFICATIONS_RETRY_BACKOFF": str(RETRY_BACKOFF),
        "NOTIFICATIONS_RETRY_BACKOFF_MAX": str(RETRY_BACKOFF),
    }
    with running_worker(name="in-order", broker_url=BROKERS["redis"], env=env, queues="sms") as running:
        yield running


def held_notification_ids(worker: Worker) -> set[int]:
    """The notifications whose messages the worker holds: running, prefetched or counting down."""
    inspector = app.control.inspect(destination=[worker.hostname], timeout=2)
    requests = [task for tasks in (inspector.active() or {}).values() for task in tasks]
    requests += [task for tasks in (inspector.reserved() or {}).values() for task in tasks]
    requests += [task["request"] for tasks in (inspector.scheduled() or {}).values() for task in tasks]
    return {request["args"][0] for request in requests}


def test_confirmations_wait_for_their_orders_first_sms_outside_the_worker_then_follow_it(
    patient_worker, transactional_db, fake_twilio
):
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    owner = UserFactory(username="in-order-shop")
    phones = [f"+1202556{number:04d}" for number in range(ORDERS)]
    orders = []
    for phone in phones:
        fake_twilio.script(phone, 500)  # the confirmation of the order is made while this one retries
        order = order_services.order_create(
            owner=owner, customer_name="Ada", customer_phone=phone, items=[order_line()], source=ChangeSource.API
        ).order
        order_services.order_transition(order_id=order.pk, to_status="confirmed", by=owner, source=ChangeSource.API)
        orders.append(order)
    firsts = Notification.objects.filter(order__in=orders, event="placed")
    confirmations = Notification.objects.filter(order__in=orders, event="confirmed")

    wait_until(
        lambda: confirmations.filter(status="pending", stale_after=None, attempts=0).count() == ORDERS,
        timeout=RETRY_BACKOFF / 2,
        what="every confirmation to wait for its order's first SMS",
    )
    assert set(firsts.values_list("status", flat=True)) == {"failed"}
    # A retry reaches the worker through the broker a moment after its failure is written.
    retrying = set(firsts.values_list("pk", flat=True))
    held = wait_until(
        lambda: (ids := held_notification_ids(patient_worker)) >= retrying and ids,
        timeout=RETRY_BACKOFF / 4,
        what="the worker to hold every first SMS's retry",
    )
    assert held == retrying  # the retries count down; no confirmation is held
    assert broker.queue_depth("sms") == 0  # nor waits in the broker

    wait_until(
        lambda: Notification.objects.filter(order__in=orders, status="sent").count() == 2 * ORDERS,
        timeout=60,
        what="every SMS to be sent",
    )
    for order in orders:
        texts = [request["Body"] for request in fake_twilio.accepted(order.customer_phone)]
        assert texts == [order.notifications.get(event=event).body for event in ("placed", "confirmed")]
    assert set(confirmations.values_list("attempts", flat=True)) == {1}
