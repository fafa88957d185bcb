from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.db import OperationalError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from notifications import dead_letters, services, sweeps
from notifications.errors import PermanentDeliveryError, TransientDeliveryError
from notifications.fingerprints import normalise_message
from notifications.models import DeadLetter, Notification, RecipientCorrection, RequeueBatch
from orderflow.errors import ApplicationError, Conflict, NotFound
from orders import services as order_services
from orders.models import ChangeSource
from tests.factories import UserFactory, place_order
from tests.notifications.conftest import send_into_dead_letter

pytestmark = pytest.mark.django_db


def test_requeue_resets_the_notification_and_publishes_the_original_task(
    dead, staff, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        outcome = dead_letters.dead_letters_requeue(ids=[dead.pk], by=staff)
    assert (outcome.requeued, outcome.skipped) == (1, {})
    assert published == [("notifications.tasks.send_sms_notification", [dead.notification_id], "sms")]
    dead.refresh_from_db()
    assert (dead.status, dead.resolved_by) == ("requeued", staff)
    assert dead.resolved_at is not None
    notification = dead.notification
    notification.refresh_from_db()
    assert (notification.status, notification.attempts, notification.retry_base) == ("queued", 1, 1)
    assert notification.last_error_code == ""
    entry = LogEntry.objects.get()
    assert (entry.user, entry.object_id, entry.change_message) == (staff, str(dead.pk), "Requeued")


def test_requeueing_twice_publishes_once(dead, staff, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        dead_letters.dead_letters_requeue(ids=[dead.pk], by=staff)
        again = dead_letters.dead_letters_requeue(ids=[dead.pk], by=staff)
    assert again.requeued == 0
    assert again.skipped == {dead.pk: "already requeued"}
    assert len(published) == 1


def test_a_dead_letter_whose_notification_was_sent_meanwhile_is_not_requeued(dead, staff, published):
    Notification.objects.filter(pk=dead.notification_id).update(status="sent")
    outcome = dead_letters.dead_letters_requeue(ids=[dead.pk], by=staff)
    assert outcome.skipped == {dead.pk: "its notification is sent now"}
    dead.refresh_from_db()
    assert dead.status == "dead"


def test_a_requeued_notification_gets_a_fresh_set_of_retries(
    dead, staff, scripted, settings, django_capture_on_commit_callbacks
):
    settings.NOTIFICATIONS_MAX_RETRIES = 1
    with django_capture_on_commit_callbacks(execute=True):
        dead_letters.dead_letters_requeue(ids=[dead.pk], by=staff)
    notification_id = dead.notification_id
    scripted.script.extend([TransientDeliveryError("Twilio HTTP 500: x", code="http-500")] * 2)
    assert services.notification_send(notification_id=notification_id).outcome == "retry"
    Notification.objects.filter(pk=notification_id).update(next_attempt_at=timezone.now())
    assert services.notification_send(notification_id=notification_id).outcome == "dead"
    second = DeadLetter.objects.get(notification_id=notification_id, status="dead")
    assert (second.attempts, second.message) == (2, "gave up after 2 attempts; last: Twilio HTTP 500: x")
    assert list(Notification.objects.get(pk=notification_id).attempt_log.values_list("number", flat=True)) == [1, 2, 3]


def test_discard_marks_who_and_when_and_sends_nothing(dead, staff, published):
    assert dead_letters.dead_letters_discard(ids=[dead.pk], by=staff) == 1
    assert dead_letters.dead_letters_discard(ids=[dead.pk], by=staff) == 0
    dead.refresh_from_db()
    assert (dead.status, dead.resolved_by) == ("discarded", staff)
    assert published == []
    assert LogEntry.objects.get().change_message == "Discarded"


def test_a_batch_freezes_its_rows_and_requeues_each_once(
    shop, staff, published, scripted, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        orders = [place_order(owner=shop, customer_email="") for _ in range(3)]
    for order in orders[:2]:
        send_into_dead_letter(order)
    batch = dead_letters.requeue_batch_freeze(dead_letters=DeadLetter.objects.all(), description="all", by=staff)
    send_into_dead_letter(orders[2])  # dies after the confirmation page was shown
    assert batch.size == 2

    dead_letters.requeue_batch_confirm(batch_id=batch.pk, by=staff)
    assert published[-1] == ("notifications.tasks.requeue_dead_letter_batch", [batch.pk], None)
    with pytest.raises(Conflict, match="already confirmed"):
        dead_letters.requeue_batch_confirm(batch_id=batch.pk, by=staff)

    with django_capture_on_commit_callbacks(execute=True):
        done = dead_letters.requeue_batch_run(batch_id=batch.pk)
    assert (done.status, done.requeued, done.skipped) == ("done", 2, 0)
    assert DeadLetter.objects.filter(status="dead").count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        dead_letters.requeue_batch_run(batch_id=batch.pk)
    assert DeadLetter.objects.filter(status="requeued").count() == 2


@pytest.fixture
def three_dead(shop, published, scripted, django_capture_on_commit_callbacks) -> list[DeadLetter]:
    with django_capture_on_commit_callbacks(execute=False):
        orders = [place_order(owner=shop, customer_email="") for _ in range(3)]
    return [send_into_dead_letter(order) for order in orders]


def test_a_batch_is_requeued_in_the_name_of_the_operator_who_confirmed_it(
    three_dead, staff, published, django_capture_on_commit_callbacks
):
    confirmer = UserFactory(username="confirmer", is_staff=True)
    batch = dead_letters.requeue_batch_freeze(dead_letters=DeadLetter.objects.all(), description="all", by=staff)
    dead_letters.requeue_batch_confirm(batch_id=batch.pk, by=confirmer)
    with django_capture_on_commit_callbacks(execute=True):
        dead_letters.requeue_batch_run(batch_id=batch.pk)
    assert {letter.resolved_by for letter in DeadLetter.objects.all()} == {confirmer}
    assert RequeueBatch.objects.get(pk=batch.pk).confirmed_by == confirmer


def test_a_batch_run_cut_off_goes_on_after_its_last_chunk_recorded(
    three_dead, staff, published, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(dead_letters, "CHUNK", 1)
    requeue = dead_letters.dead_letters_requeue
    calls = []

    def database_gone_at_the_second_chunk(**kwargs):
        calls.append(kwargs["ids"])
        if len(calls) == 2:
            raise OperationalError("the database went away")
        return requeue(**kwargs)

    monkeypatch.setattr(dead_letters, "dead_letters_requeue", database_gone_at_the_second_chunk)
    batch = dead_letters.requeue_batch_freeze(dead_letters=DeadLetter.objects.all(), description="all", by=staff)
    dead_letters.requeue_batch_confirm(batch_id=batch.pk, by=staff)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(OperationalError):
        dead_letters.requeue_batch_run(batch_id=batch.pk)
    with django_capture_on_commit_callbacks(execute=True):
        done = dead_letters.requeue_batch_run(batch_id=batch.pk)  # the task's retry
    assert (done.status, done.requeued, done.skipped) == ("done", 3, 0)
    assert calls == [[letter.pk] for letter in [three_dead[0], three_dead[1], three_dead[1], three_dead[2]]]
    assert DeadLetter.objects.filter(status="requeued").count() == 3


def test_a_batch_whose_run_went_quiet_is_published_again_by_the_sweep(three_dead, staff, published, settings):
    batch = dead_letters.requeue_batch_freeze(dead_letters=DeadLetter.objects.all(), description="all", by=staff)
    dead_letters.requeue_batch_confirm(batch_id=batch.pk, by=staff)  # its message is then lost with the broker
    run = ("notifications.tasks.requeue_dead_letter_batch", [batch.pk], None)
    assert published.count(run) == 1
    assert sweeps.notifications_sweep()["requeue_batches_resumed"] == 0  # not quiet for long yet

    quiet = timezone.now() - timedelta(seconds=settings.NOTIFICATIONS_STUCK_AFTER + 1)
    RequeueBatch.objects.filter(pk=batch.pk).update(progress_at=quiet)
    assert sweeps.notifications_sweep()["requeue_batches_resumed"] == 1
    assert published.count(run) == 2
    assert sweeps.notifications_sweep()["requeue_batches_resumed"] == 0  # once a quiet spell
    with pytest.raises(Conflict, match="already confirmed"):
        dead_letters.requeue_batch_confirm(batch_id=batch.pk, by=staff)


def test_a_quiet_batch_waits_for_the_next_sweep_when_the_broker_goes_away_meanwhile(
    three_dead, staff, published, settings, monkeypatch
):
    batch = dead_letters.requeue_batch_freeze(dead_letters=DeadLetter.objects.all(), description="all", by=staff)
    dead_letters.requeue_batch_confirm(batch_id=batch.pk, by=staff)
    quiet = timezone.now() - timedelta(seconds=settings.NOTIFICATIONS_STUCK_AFTER + 1)
    RequeueBatch.objects.filter(pk=batch.pk).update(progress_at=quiet)

    def down(messages):  # after the sweep's look at the queues, before the batch's publish
        raise services.broker.BrokerUnavailable("down")

    monkeypatch.setattr(services.broker, "publish_many", down)
    assert sweeps.notifications_sweep()["requeue_batches_resumed"] == 0
    assert RequeueBatch.objects.get(pk=batch.pk).progress_at == quiet  # so the next sweep tries again

    monkeypatch.setattr(services.broker, "publish_many", lambda messages: ["sent"] * len(messages))
    assert sweeps.notifications_sweep()["requeue_batches_resumed"] == 1


def test_batch_confirm_with_the_broker_down_can_be_retried(dead, staff, monkeypatch):
    batch = dead_letters.requeue_batch_freeze(dead_letters=DeadLetter.objects.all(), description="all", by=staff)

    def down(messages):
        raise services.broker.BrokerUnavailable("down")

    monkeypatch.setattr(services.broker, "publish_many", down)
    with pytest.raises(Conflict, match="broker is unavailable"):
        dead_letters.requeue_batch_confirm(batch_id=batch.pk, by=staff)
    assert RequeueBatch.objects.get(pk=batch.pk).status == "awaiting"


def test_groups_count_the_same_cause_together(shop, published, scripted, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        orders = [place_order(owner=shop, customer_email="") for _ in range(4)]
    for order in orders[:3]:
        send_into_dead_letter(
            order,
            PermanentDeliveryError(
                f"Twilio 21211: The 'To' number {order.customer_phone} is invalid", code="twilio-21211"
            ),
        )
    send_into_dead_letter(orders[3], PermanentDeliveryError("Twilio 21610: unsubscribed", code="twilio-21610"))
    groups = list(dead_letters.dead_letter_groups())
    assert [(group["count"], group["error_code"]) for group in groups] == [(3, "twilio-21211"), (1, "twilio-21610")]


def test_messages_are_normalised_for_fingerprints():
    assert normalise_message("To +1 415 555 0123 failed (id 42)") == "to <number> failed (id <n>)"
    assert normalise_message("recipient refused: 550 ada@example.com") == "recipient refused: <n> <email>"


def test_correcting_a_recipient_keeps_the_old_value_who_and_why(dead, staff):
    services.notification_correct_recipient(
        notification_id=dead.notification_id, recipient="+1 202 555 0147", reason="customer called", by=staff
    )
    correction = RecipientCorrection.objects.get()
    assert (correction.new_recipient, correction.reason, correction.changed_by) == (
        "+12025550147",
        "customer called",
        staff,
    )
    assert correction.old_recipient == "+442079460958"
    assert Notification.objects.get(pk=dead.notification_id).recipient == "+12025550147"


def test_a_correction_for_the_order_reaches_its_next_updates_too(shop, staff, published, scripted):
    """The customer gave a wrong number: the confirmation died; corrected for the order, the
    update already waiting and the ones to come go to the right number."""
    order = place_order(owner=shop, customer_email="")
    order_services.order_transition(order_id=order.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    placed, confirmed = (Notification.objects.get(order=order, event=event) for event in ("placed", "confirmed"))
    scripted.script.append(PermanentDeliveryError("Twilio 21211: invalid number", code="twilio-21211"))
    assert services.notification_send(notification_id=placed.pk).outcome == "dead"

    services.notification_correct_recipient(
        notification_id=placed.pk, recipient="+1 202 555 0147", reason="customer called", by=staff, for_the_order=True
    )
    order.refresh_from_db()
    assert order.customer_phone == "+12025550147"
    assert Notification.objects.get(pk=confirmed.pk).recipient == "+12025550147"
    assert RecipientCorrection.objects.filter(notification=confirmed).get().reason == "customer called"
    entry = LogEntry.objects.get(object_id=str(order.pk), content_type__model="order")
    assert entry.change_message == f"customer_phone corrected with notification {placed.pk}: customer called"

    order_services.order_transition(order_id=order.pk, to_status="processing", by=shop, source=ChangeSource.API)
    assert Notification.objects.get(order=order, event="processing").recipient == "+12025550147"


@pytest.mark.parametrize("for_the_order", [False, True])
def test_a_correction_of_a_notification_that_is_not_there_says_so(staff, db, for_the_order):
    with pytest.raises(NotFound, match="Notification 404 does not exist"):
        services.notification_correct_recipient(
            notification_id=404,
            recipient="+1 202 555 0147",
            reason="customer called",
            by=staff,
            for_the_order=for_the_order,
        )


@pytest.mark.parametrize("status", ["sending", "sent"])
def test_a_correction_for_the_order_of_one_on_its_way_is_refused_and_changes_nothing(shop, staff, published, status):
    order = place_order(owner=shop, customer_email="")
    order_services.order_transition(order_id=order.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    Notification.objects.filter(order=order, event="placed").update(status=status)
    placed = Notification.objects.get(order=order, event="placed")
    with pytest.raises(Conflict, match=f"is {status}; its recipient can no longer be changed"):
        services.notification_correct_recipient(
            notification_id=placed.pk, recipient="+1 202 555 0147", reason="x", by=staff, for_the_order=True
        )
    order.refresh_from_db()
    assert {order.customer_phone, *Notification.objects.filter(order=order).values_list("recipient", flat=True)} == {
        "+442079460958"
    }
    assert RecipientCorrection.objects.count() == 0


def test_a_correction_of_one_notification_leaves_the_order_as_it_was(dead, staff):
    services.notification_correct_recipient(
        notification_id=dead.notification_id, recipient="+1 202 555 0147", reason="this once", by=staff
    )
    assert Notification.objects.get(pk=dead.notification_id).order.customer_phone == "+442079460958"


@pytest.mark.parametrize(
    ("recipient", "reason", "says"),
    [("12345", "typo", "not a valid phone number"), ("+12025550147", "  ", "Say why")],
)
def test_a_bad_correction_is_refused(dead, staff, recipient, reason, says):
    with pytest.raises(ApplicationError, match=says):
        services.notification_correct_recipient(
            notification_id=dead.notification_id, recipient=recipient, reason=reason, by=staff
        )
    assert RecipientCorrection.objects.count() == 0


def test_email_corrections_are_validated_as_email(shop, staff, published):
    order = place_order(owner=shop, customer_phone="")
    email = Notification.objects.get(order=order)
    with pytest.raises(ApplicationError, match="not a valid email address"):
        services.notification_correct_recipient(notification_id=email.pk, recipient="ada@", reason="x", by=staff)


def test_resend_and_cancel_follow_the_notification_status(shop, staff, published):
    order = place_order(owner=shop, customer_email="")
    sms = Notification.objects.get(order=order)
    with pytest.raises(Conflict, match="already on its way"):
        services.notification_resend(notification_id=sms.pk, by=staff)
    assert services.notification_cancel(notification_id=sms.pk, by=staff).status == "cancelled"
    with pytest.raises(Conflict, match="is already cancelled"):
        services.notification_cancel(notification_id=sms.pk, by=staff)
    assert services.notification_resend(notification_id=sms.pk, by=staff).status == "pending"
    Notification.objects.filter(pk=sms.pk).update(status="sending")
    with pytest.raises(Conflict, match="cannot be stopped"):
        services.notification_cancel(notification_id=sms.pk, by=staff)


def test_a_notification_an_operator_cancelled_says_so_not_the_providers_earlier_error(shop, staff, published, scripted):
    order = place_order(owner=shop, customer_email="")
    sms = Notification.objects.get(order=order)
    scripted.script.append(TransientDeliveryError("Twilio HTTP 500: internal error", code="http-500"))
    services.notification_send(notification_id=sms.pk)  # fails; waits for its retry
    cancelled = services.notification_cancel(notification_id=sms.pk, by=staff)
    assert (cancelled.status, cancelled.last_error_code, cancelled.last_error_message) == (
        "cancelled",
        "cancelled",
        f"not sent: cancelled by an operator ({staff.username})",
    )
    assert [attempt.error_code for attempt in cancelled.attempt_log.all()] == ["http-500"]  # the history stays
    resent = services.notification_resend(notification_id=sms.pk, by=staff)
    assert (resent.last_error_code, resent.last_error_message) == ("", "")


def test_cleanup_keeps_a_requeued_dead_letter_until_its_notification_is_sent(dead, staff, settings, published):
    dead_letters.dead_letters_requeue(ids=[dead.pk], by=staff)
    DeadLetter.objects.filter(pk=dead.pk).update(resolved_at=timezone.now() - timedelta(days=60))
    Notification.objects.filter(pk=dead.notification_id).update(status="dead")  # died again
    assert sweeps.notifications_cleanup()["dead_letters"] == 0
    Notification.objects.filter(pk=dead.notification_id).update(status="sent")
    assert sweeps.notifications_cleanup()["dead_letters"] == 1


def test_beat_schedules_are_installed_by_migrate():
    tasks = {task.name: task for task in PeriodicTask.objects.select_related("interval")}
    retry, cleanup = tasks["retry-failed-notifications"], tasks["cleanup-old-notifications"]
    assert (retry.task, retry.interval.every, retry.interval.period, retry.enabled) == (
        "notifications.tasks.retry_failed_notifications",
        5,
        "minutes",
        True,
    )
    assert (cleanup.task, cleanup.interval.every, cleanup.interval.period) == (
        "notifications.tasks.cleanup_old_notifications",
        1,
        "hours",
    )
