import logging

import pytest

from notifications import services
from notifications.errors import TransientDeliveryError
from notifications.models import Notification
from orderflow.masking import MaskingFilter
from tests.factories import place_order

PHONE, EMAIL = "+14155550123", "ada.lovelace@example.com"

pytestmark = pytest.mark.django_db


def test_a_send_logs_one_line_per_event_with_ids_and_no_contact_details(
    shop, scripted, published, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.INFO)
    with django_capture_on_commit_callbacks(execute=True):
        order = place_order(owner=shop, customer_phone=PHONE, customer_email=EMAIL)
    sms = Notification.objects.get(order=order, channel="sms")
    scripted.script.append(TransientDeliveryError(f"Twilio: {PHONE} unreachable", code="http-503"))
    services.notification_send(notification_id=sms.pk, task_id="task-1")
    Notification.objects.filter(pk=sms.pk).update(next_attempt_at=None, status="queued")
    services.notification_send(notification_id=sms.pk, task_id="task-2")

    events = [record for record in caplog.records if getattr(record, "event", "").startswith("notification.")]
    names = [record.event for record in events if getattr(record, "notification_id", None) == sms.pk]
    assert names == [
        "notification.published",
        "notification.claimed",
        "notification.retry",
        "notification.claimed",
        "notification.sent",
    ]
    sent = next(record for record in events if record.event == "notification.sent")
    assert (sent.order_id, sent.notification_id, sent.task_id, sent.recipient) == (
        order.pk,
        sms.pk,
        "task-2",
        "+14***23",
    )
    assert f"order_id={order.pk} notification_id={sms.pk}" in sent.getMessage()

    handler_filter = MaskingFilter()
    for record in caplog.records:
        handler_filter.filter(record)
        assert PHONE not in record.getMessage() and EMAIL not in record.getMessage()
        assert "+1 415" not in record.getMessage()
