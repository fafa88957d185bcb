"""One order's notifications on one channel reach the customer in the order they were made:
a send waits while an earlier one of its order is still to go (queued, being sent, retrying)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from notifications import services
from notifications.errors import PermanentDeliveryError, TransientDeliveryError
from notifications.models import Notification
from orders import services as order_services
from orders.models import ChangeSource
from tests.factories import place_order

pytestmark = pytest.mark.django_db


def sms(order, event: str) -> Notification:
    return Notification.objects.get(order=order, channel="sms", event=event)


def send(notification: Notification, **options) -> services.SendResult:
    return services.notification_send(notification_id=notification.pk, **options)


@pytest.fixture
def confirmed_order(shop, published, scripted):
    """An order placed, then confirmed, whose two SMS are both waiting to go."""
    order = place_order(owner=shop, customer_email="")
    order_services.order_transition(order_id=order.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    return order


def test_a_later_one_waits_while_the_earlier_is_queued_then_goes_after_it(confirmed_order, scripted):
    placed, confirmed = sms(confirmed_order, "placed"), sms(confirmed_order, "confirmed")
    result = send(confirmed)
    assert (result.outcome, result.retry_in, result.detail) == ("deferred", 5, f"after {placed.pk}")
    assert Notification.objects.get(pk=confirmed.pk).status == "queued"  # unclaimed, no attempt used
    assert send(placed).outcome == "sent"
    assert send(confirmed).outcome == "sent"
    assert [body for _, body in scripted.sent] == [placed.body, confirmed.body]


def test_each_wait_is_longer_up_to_five_minutes(confirmed_order):
    confirmed = sms(confirmed_order, "confirmed")
    assert [send(confirmed, deferrals=n).retry_in for n in (0, 1, 2, 6, 30)] == [5, 10, 20, 300, 300]


def test_behind_a_retrying_one_it_waits_until_just_after_that_retry(confirmed_order, scripted):
    placed, confirmed = sms(confirmed_order, "placed"), sms(confirmed_order, "confirmed")
    scripted.script.append(TransientDeliveryError("Twilio 500", code="http-500"))
    assert send(placed).outcome == "retry"
    due = Notification.objects.get(pk=placed.pk).next_attempt_at
    result = send(confirmed)
    assert result.outcome == "deferred"
    assert result.retry_in == pytest.approx((due - timezone.now()).total_seconds() + 5, abs=1)
    assert scripted.sent == []


def test_an_earlier_one_that_died_or_was_cancelled_holds_nothing_up(shop, published, scripted):
    order = place_order(owner=shop, customer_email="")
    for status in ["confirmed", "processing"]:
        order_services.order_transition(order_id=order.pk, to_status=status, by=shop, source=ChangeSource.API)
    scripted.script.append(PermanentDeliveryError("Twilio 21408: region", code="twilio-21408"))
    assert send(sms(order, "placed")).outcome == "dead"
    services.notification_cancel(notification_id=sms(order, "confirmed").pk, by=shop)
    assert send(sms(order, "processing")).outcome == "sent"


def test_other_orders_and_the_other_channel_do_not_wait(confirmed_order, shop, scripted):
    other = place_order(owner=shop)
    assert send(sms(other, "placed")).outcome == "sent"
    email = Notification.objects.create(
        order=confirmed_order,
        channel="email",
        event="shipped",
        dedup_key=f"{confirmed_order.pk}:shipped:email",
        recipient="ada@example.com",
        subject="s",
        body="b",
        status="queued",
        queued_at=timezone.now() + timedelta(seconds=1),
    )
    assert services.notification_send(notification_id=email.pk).outcome == "sent"
