"""Row locks taken in one order. A correction for the whole order, another one at the same
time, and a send deciding to wait for an earlier notification of its order each lock the order
before its notifications and the notifications earliest first. None of them then holds a row
another waits for while waiting for one that other holds: a deadlock, which PostgreSQL ends
by failing one of them (an operator's request answering 503, a send retried)."""

import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from notifications import services
from notifications.models import Notification, RecipientCorrection
from notifications.tasks import send_order_status_update
from orders import services as order_services
from orders.models import ChangeSource, Order
from tests.factories import place_order
from tests.notifications.conftest import sessions_waiting_for_a_lock
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

OLD_PHONE = "+442079460958"


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks: SQLite writes one statement at a time")


class Call(threading.Thread):
    """`function(**kwargs)` in a thread of its own, on a database connection of its own;
    `result` or `error` once it has finished."""

    def __init__(self, function, **kwargs):
        super().__init__(daemon=True)
        self.function, self.kwargs = function, kwargs
        self.result = self.error = None
        self.start()

    def run(self):
        try:
            self.result = self.function(**self.kwargs)
        except Exception as error:  # kept for the test to assert on
            self.error = error
        finally:
            connection.close()

    def finished(self, timeout: float = 15):
        self.join(timeout)
        assert not self.is_alive(), f"{self.function.__name__} still waits after {timeout:.0f}s"
        return self


@contextmanager
def locked(lock_sql: str, row_id: int):
    """Hold the row lock `lock_sql` takes of the row `row_id`, in a transaction of another
    session, until the block ends."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(lock_sql, [row_id])
            held.set()
            release.wait(timeout=30)

    holder = Call(hold)
    assert held.wait(timeout=10)
    try:
        yield
    finally:
        release.set()
        assert holder.finished().error is None


# As a status change or another correction holds the order; as a send or an operator holds a
# notification; and as a foreign key check holds a row it refers to.
THE_ORDER = "SELECT id FROM orders_order WHERE id = %s FOR UPDATE"
THE_NOTIFICATION = "SELECT id FROM notifications_notification WHERE id = %s FOR UPDATE"
ITS_KEY = "SELECT id FROM notifications_notification WHERE id = %s FOR KEY SHARE"


def transition(order, *statuses, by) -> None:
    for status in statuses:
        order_services.order_transition(order_id=order.pk, to_status=status, by=by, source=ChangeSource.API)


def sms(order, event: str) -> Notification:
    return Notification.objects.get(order=order, channel="sms", event=event)


def retrying(notification: Notification) -> None:
    Notification.objects.filter(pk=notification.pk).update(
        status="failed", attempts=1, next_attempt_at=timezone.now() + timedelta(minutes=5), stale_after=None
    )


def correct(notification: Notification, phone: str, by) -> services.RecipientCorrected:
    return services.notification_correct_recipient(
        notification_id=notification.pk, recipient=phone, reason="customer called", by=by, for_the_order=True
    )


def deadlocks(caplog) -> list[str]:
    """Deadlocks PostgreSQL ended, as logged by a claim that tried again after one."""
    return [record.getMessage() for record in caplog.records if "deadlock detected" in record.getMessage()]


def phones_of(order: Order) -> set[str]:
    order.refresh_from_db()
    return {order.customer_phone, *Notification.objects.filter(order=order).values_list("recipient", flat=True)}


def test_two_corrections_for_the_same_order_at_once_both_go_through(shop, staff, published):
    order = place_order(owner=shop, customer_email="")
    transition(order, "confirmed", by=shop)
    placed, confirmed = sms(order, "placed"), sms(order, "confirmed")

    with locked(THE_ORDER, order.pk):
        first = Call(correct, notification=placed, phone="+1 202 555 0147", by=staff)
        second = Call(correct, notification=confirmed, phone="+1 202 555 0148", by=staff)
        wait_until(lambda: sessions_waiting_for_a_lock() == 2, timeout=10, what="both corrections to wait")

    assert (first.finished().error, second.finished().error) == (None, None)
    # The one that came second decides; the order and both notifications agree.
    assert phones_of(order) in ({"+12025550147"}, {"+12025550148"})
    assert RecipientCorrection.objects.count() == 4


def test_a_correction_for_the_order_and_a_send_waiting_for_an_earlier_one_both_go_through(
    shop, staff, published, scripted, caplog
):
    """The send finds the placed and confirmed texts of its order retrying and waits for them,
    locking them (FOR SHARE) while it decides; the correction of the confirmed one for the
    order, meanwhile, corrects all three."""
    order = place_order(owner=shop, customer_email="")
    transition(order, "confirmed", "processing", by=shop)
    placed, confirmed, processing = (sms(order, event) for event in ("placed", "confirmed", "processing"))
    retrying(placed)
    retrying(confirmed)

    with locked(THE_ORDER, order.pk):
        correction = Call(correct, notification=confirmed, phone="+1 202 555 0147", by=staff)
        wait_until(lambda: sessions_waiting_for_a_lock() == 1, timeout=10, what="the correction to wait")
        send = Call(services.notification_send, notification_id=processing.pk)
        wait_until(
            lambda: not send.is_alive() or sessions_waiting_for_a_lock() == 2,
            timeout=10,
            what="the send to decide or to wait",
        )

    assert (correction.finished().error, send.finished().error) == (None, None)
    assert send.result.outcome == "waiting"
    assert deadlocks(caplog) == []
    assert phones_of(order) == {"+12025550147"}
    assert scripted.sent == []


def test_a_send_deciding_to_wait_locks_every_earlier_one_before_its_own_row(shop, staff, published, scripted, caplog):
    """The placed text is being sent and the confirmed one retries; the correction of the
    confirmed one for the order locks it, then needs the processing one's row, which the send
    deciding to wait updates. The send must lock both earlier ones before that update, or each
    would hold a row the other waits for."""
    order = place_order(owner=shop, customer_email="")
    transition(order, "confirmed", "processing", by=shop)
    placed, confirmed, processing = (sms(order, event) for event in ("placed", "confirmed", "processing"))
    Notification.objects.filter(pk=placed.pk).update(
        status="sending", attempts=1, stale_after=timezone.now() + timedelta(minutes=5)
    )
    retrying(confirmed)
    # A key share on the processing row holds the correction back from it, with the confirmed
    # row locked, but lets the send's update through.
    with locked(ITS_KEY, processing.pk):
        correction = Call(correct, notification=confirmed, phone="+1 202 555 0147", by=staff)
        wait_until(lambda: sessions_waiting_for_a_lock() == 1, timeout=10, what="the correction to wait")
        send = Call(services.notification_send, notification_id=processing.pk)
        wait_until(lambda: sessions_waiting_for_a_lock() == 2, timeout=10, what="the send to wait")

    assert (correction.finished().error, send.finished().error) == (None, None)
    assert send.result.outcome == "waiting"
    assert deadlocks(caplog) == []  # the send's claim would try again after one, and hide it
    order.refresh_from_db()
    assert order.customer_phone == "+12025550147"
    assert [sms(order, event).recipient for event in ("placed", "confirmed", "processing")] == [
        OLD_PHONE,  # on its way: not corrected
        "+12025550147",
        "+12025550147",
    ]


def test_a_status_update_queued_by_its_task_and_a_correction_for_the_order_both_go_through(
    shop, staff, published, caplog
):
    """The task writes the update's email (the order has an address now) and meets the SMS row
    written before, which it locks; the new email row's foreign key then needs the order. The
    correction holds the order and needs that SMS row. The task locks the order first."""
    order = place_order(owner=shop, customer_email="")
    transition(order, "confirmed", by=shop)
    Order.objects.filter(pk=order.pk).update(customer_email="ada@example.com")
    confirmed = sms(order, "confirmed")
    with locked(THE_NOTIFICATION, confirmed.pk):
        queue = Call(send_order_status_update, order_id=order.pk, old_status="placed", new_status="confirmed")
        wait_until(lambda: sessions_waiting_for_a_lock() == 1, timeout=10, what="the task to wait")
        correction = Call(correct, notification=confirmed, phone="+1 202 555 0147", by=staff)
        wait_until(lambda: sessions_waiting_for_a_lock() == 2, timeout=10, what="the correction to wait")

    assert (queue.finished().error, correction.finished().error) == (None, None)
    assert queue.result == 2
    assert deadlocks(caplog) == []
    assert Notification.objects.get(order=order, channel="email", event="confirmed").recipient == "ada@example.com"
    assert phones_of(order) - {"ada@example.com"} == {"+12025550147"}
