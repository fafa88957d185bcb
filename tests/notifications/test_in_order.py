"""One order's notifications on one channel reach the customer in the order they were made:
a send waits while an earlier one of its order is still to go (queued, being sent, retrying).
It waits out of the broker, its message acknowledged, and the earlier one publishes it once
finished; the sweep does, should that not have happened."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from notifications import services, sweeps
from notifications.errors import PermanentDeliveryError, TransientDeliveryError
from notifications.models import Notification
from orderflow.errors import Conflict
from orders import services as order_services
from orders.models import ChangeSource
from tests.factories import place_order
from tests.notifications.conftest import sessions_waiting_for_a_lock

pytestmark = pytest.mark.django_db

SEND_SMS = "notifications.tasks.send_sms_notification"


def sms(order, event: str) -> Notification:
    return Notification.objects.get(order=order, channel="sms", event=event)


def send(notification: Notification) -> services.SendResult:
    return services.notification_send(notification_id=notification.pk)


def published_ids(published) -> list[int]:
    return [args[0] for task, args, _ in published if task == SEND_SMS]


def waiting(notification: Notification) -> bool:
    row = Notification.objects.get(pk=notification.pk)
    return (row.status, row.stale_after, row.attempts) == ("pending", None, 0)


def transition(order, *statuses, by) -> None:
    for status in statuses:
        order_services.order_transition(order_id=order.pk, to_status=status, by=by, source=ChangeSource.API)


@pytest.fixture
def confirmed_order(shop, published, scripted, django_capture_on_commit_callbacks):
    """An order placed, then confirmed, whose two SMS are both published and waiting to go."""
    with django_capture_on_commit_callbacks(execute=True):
        order = place_order(owner=shop, customer_email="")
        transition(order, "confirmed", by=shop)
    return order


def test_a_later_one_waits_out_of_the_broker_and_the_earlier_one_publishes_it(
    confirmed_order, published, scripted, django_capture_on_commit_callbacks
):
    placed, confirmed = sms(confirmed_order, "placed"), sms(confirmed_order, "confirmed")
    assert published_ids(published) == [placed.pk, confirmed.pk]

    result = send(confirmed)
    assert (result.outcome, result.retry_in, result.detail) == ("waiting", None, f"after {placed.pk}")
    assert waiting(confirmed)  # no message left for it, no attempt used, no lease for the sweep

    with django_capture_on_commit_callbacks(execute=True):
        assert send(placed).outcome == "sent"
    assert published_ids(published) == [placed.pk, confirmed.pk, confirmed.pk]
    assert Notification.objects.get(pk=confirmed.pk).status == "queued"
    assert send(confirmed).outcome == "sent"
    assert [body for _, body in scripted.sent] == [placed.body, confirmed.body]


def test_an_earlier_one_with_nothing_waiting_publishes_nothing(
    confirmed_order, published, scripted, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        assert send(sms(confirmed_order, "placed")).outcome == "sent"
    assert len(published) == 2  # the confirmation's own message is still in the broker
    assert send(sms(confirmed_order, "confirmed")).outcome == "sent"


def test_behind_a_retrying_one_it_waits_until_that_one_is_sent(
    confirmed_order, published, scripted, django_capture_on_commit_callbacks
):
    placed, confirmed = sms(confirmed_order, "placed"), sms(confirmed_order, "confirmed")
    scripted.script.append(TransientDeliveryError("Twilio 500", code="http-500"))
    assert send(placed).outcome == "retry"
    assert send(confirmed).outcome == "waiting"
    assert scripted.sent == []

    Notification.objects.filter(pk=placed.pk).update(next_attempt_at=timezone.now())  # its retry is due
    with django_capture_on_commit_callbacks(execute=True):
        assert send(placed).outcome == "sent"
    assert published_ids(published)[2:] == [confirmed.pk]
    assert send(confirmed).outcome == "sent"


def test_an_earlier_one_that_dies_or_is_cancelled_publishes_the_next(
    shop, published, scripted, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        order = place_order(owner=shop, customer_email="")
        transition(order, "confirmed", "processing", by=shop)
    placed, confirmed, processing = (sms(order, event) for event in ("placed", "confirmed", "processing"))
    assert send(processing).detail == f"after {placed.pk}"
    assert send(confirmed).detail == f"after {placed.pk}"
    assert waiting(processing) and waiting(confirmed)

    scripted.script.append(PermanentDeliveryError("Twilio 21408: region", code="twilio-21408"))
    with django_capture_on_commit_callbacks(execute=True):
        assert send(placed).outcome == "dead"
    assert published_ids(published)[3:] == [confirmed.pk]  # the next only: processing waits for it
    assert waiting(processing)

    with django_capture_on_commit_callbacks(execute=True):
        services.notification_cancel(notification_id=confirmed.pk, by=shop)
    assert published_ids(published)[3:] == [confirmed.pk, processing.pk]
    assert send(processing).outcome == "sent"


def test_one_cancelled_inside_a_larger_transaction_publishes_the_next_after_it_commits(
    confirmed_order, shop, published, scripted, django_capture_on_commit_callbacks
):
    """Looked for before the commit, the next would be chosen where a send finishing meanwhile
    cannot see this cancel, nor this cancel that send."""
    placed, confirmed = sms(confirmed_order, "placed"), sms(confirmed_order, "confirmed")
    assert send(confirmed).outcome == "waiting"
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        services.notification_cancel(notification_id=placed.pk, by=shop)
        assert waiting(confirmed)
    assert published_ids(published)[2:] == [confirmed.pk]


def test_one_cancelled_unsent_for_a_suppressed_recipient_publishes_the_next(
    confirmed_order, published, scripted, django_capture_on_commit_callbacks
):
    placed, confirmed = sms(confirmed_order, "placed"), sms(confirmed_order, "confirmed")
    assert send(confirmed).outcome == "waiting"
    services.suppression_add(channel="sms", recipient=placed.recipient, reason="asked us to stop", by=None)
    with django_capture_on_commit_callbacks(execute=True):
        assert send(placed).detail == "recipient suppressed"
    assert published_ids(published)[2:] == [confirmed.pk]
    assert send(confirmed).detail == "recipient suppressed"
    assert scripted.sent == []


def test_the_sweep_publishes_a_waiting_one_whose_earlier_ones_finished_and_leaves_the_rest(
    shop, published, scripted, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        stranded, still_behind = place_order(owner=shop, customer_email=""), place_order(owner=shop, customer_email="")
        transition(stranded, "confirmed", by=shop)
        transition(still_behind, "confirmed", by=shop)
    for order in (stranded, still_behind):
        assert send(sms(order, "confirmed")).outcome == "waiting"
    # Its earlier one was sent, but its worker was killed before it could publish the next.
    Notification.objects.filter(pk=sms(stranded, "placed").pk).update(status="sent")

    before = len(published)
    assert sweeps.notifications_sweep()["wait_over"] == 1
    assert published_ids(published)[before:] == [sms(stranded, "confirmed").pk]
    assert Notification.objects.get(pk=sms(stranded, "confirmed").pk).status == "queued"
    assert waiting(sms(still_behind, "confirmed"))
    assert sweeps.notifications_sweep()["wait_over"] == 0


def test_a_record_written_again_after_its_reply_was_lost_still_publishes_the_next(
    confirmed_order, published, scripted, django_capture_on_commit_callbacks
):
    placed, confirmed = sms(confirmed_order, "placed"), sms(confirmed_order, "confirmed")
    assert send(confirmed).outcome == "waiting"
    # The first write of the send committed; its reply was lost, so it is written once more.
    now = timezone.now()
    Notification.objects.filter(pk=placed.pk).update(status="sent", attempts=1, sent_at=now)
    sent = services.SentMessage("sms", "SM1", 1, now, now)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.notification_record_sent(notification_id=placed.pk, sent=sent).outcome == "sent"
    assert published_ids(published)[2:] == [confirmed.pk]


def test_a_database_failing_the_publish_of_the_next_leaves_it_to_the_sweep_and_the_send_recorded(
    confirmed_order, published, scripted, caplog, django_capture_on_commit_callbacks
):
    placed, confirmed = sms(confirmed_order, "placed"), sms(confirmed_order, "confirmed")
    assert send(confirmed).outcome == "waiting"

    def refuse_the_publish_of_the_next(execute, sql, params, many, context):
        if "waiting.stale_after IS NULL" in sql:
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse_the_publish_of_the_next), django_capture_on_commit_callbacks(execute=True):
        assert send(placed).outcome == "sent"
    assert Notification.objects.get(pk=placed.pk).status == "sent"
    assert waiting(confirmed)
    assert "notification.next_left_to_sweep" in caplog.text
    assert published_ids(published)[2:] == []
    assert sweeps.notifications_sweep()["wait_over"] == 1
    assert published_ids(published)[2:] == [confirmed.pk]


def test_a_waiting_one_is_not_sent_again_on_an_operators_word_and_says_why(confirmed_order, shop, scripted):
    confirmed = sms(confirmed_order, "confirmed")
    assert send(confirmed).outcome == "waiting"
    with pytest.raises(Conflict, match="waits for an earlier notification of its order"):
        services.notification_resend(notification_id=confirmed.pk, by=shop)
    assert waiting(confirmed)


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


@pytest.mark.django_db(transaction=True)
def test_a_send_finishing_while_the_next_one_is_claimed_never_leaves_it_waiting(shop, published, scripted):
    """The earlier one's record is written, not yet committed, when the later one finds it still
    to go: the later one waits for that commit (the row lock), then goes, rather than waiting
    for a publish that the earlier one's worker, which saw nothing waiting, will not make."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks: SQLite writes one statement at a time")
    order = place_order(owner=shop, customer_email="")
    transition(order, "confirmed", by=shop)
    placed, confirmed = sms(order, "placed"), sms(order, "confirmed")
    written, blocked = threading.Event(), threading.Event()

    def record_the_earlier_one():
        try:
            with transaction.atomic():
                Notification.objects.filter(pk=placed.pk).update(status="sent", sent_at=timezone.now())
                written.set()
                # Commit once the later one's send waits for this row, or give up after 10 s.
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not blocked.is_set():
                    if sessions_waiting_for_a_lock():
                        blocked.set()
                    time.sleep(0.02)
        finally:
            connection.close()

    recorder = threading.Thread(target=record_the_earlier_one)
    recorder.start()
    assert written.wait(timeout=10)
    result = send(confirmed)
    recorder.join(timeout=15)
    assert blocked.is_set()  # the later one's send met the earlier one's uncommitted record
    assert result.outcome == "sent"
    assert [body for _, body in scripted.sent] == [confirmed.body]
