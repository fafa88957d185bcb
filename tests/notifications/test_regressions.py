"""Regressions: each test names the failure it keeps from coming back."""

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import CommandError, call_command
from django.utils import timezone

from notifications import services, sweeps
from notifications.backends.email import classify_smtp_reply
from notifications.backends.sms import classify_twilio_error
from notifications.errors import TransientDeliveryError
from notifications.models import DeadLetter, Notification
from notifications.tasks import send_order_status_update
from tests.factories import UserFactory, place_order
from tests.processes import run_deployed

pytestmark = pytest.mark.django_db


def test_cleanup_ages_a_notification_by_when_it_finished_not_when_it_was_made(dead, staff, settings):
    settings.NOTIFICATIONS_RETENTION_DAYS = 7
    Notification.objects.filter(pk=dead.notification_id).update(created_at=timezone.now() - timedelta(days=30))
    services.notification_resend(notification_id=dead.notification_id, by=staff)
    Notification.objects.filter(pk=dead.notification_id).update(status="sent")  # sent today
    assert sweeps.notifications_cleanup()["notifications"] == 0
    assert Notification.objects.filter(pk=dead.notification_id).exists()


@pytest.mark.parametrize("since", ["6h", "2d", "2000-01-01", "2000-01-01T08:00"])
def test_requeue_command_takes_durations_and_dates(dead, since):
    out = StringIO()
    call_command("requeue_dead_letters", "--since", since, "--dry-run", stdout=out)
    assert out.getvalue().startswith("1 dead letter(s) would be requeued")


def test_a_dry_run_lists_what_it_would_requeue_by_cause_then_one_by_one(dead):
    out = StringIO()
    call_command("requeue_dead_letters", "--queue", "sms", "--dry-run", stdout=out)
    lines = out.getvalue().splitlines()
    reason = dead.error_code or dead.exception_type.rpartition(".")[2]
    assert lines[:2] == [
        "1 dead letter(s) would be requeued (dry run, nothing changed).",
        f"  1 from queue sms: {reason}",
    ]
    assert lines[2].startswith(f"  #{dead.pk} sms, order #{dead.notification.order_id}, last failed ")
    assert lines[2].endswith(f" UTC: {dead.message}")
    assert len(lines) == 3
    assert DeadLetter.objects.get(pk=dead.pk).status == "dead"


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--since", "9999999d"], "that reaches back before any date"),
        (["--since", "99999999999d"], "that reaches back before any date"),
        (["--since", "2026-02-30"], "day is out of range for month"),
        (["--since", "yesterday"], "write 30m, 6h, 2d"),
    ],
)
def test_requeue_command_refuses_a_since_it_cannot_read_with_the_forms_it_takes(dead, arguments, says):
    with pytest.raises(CommandError, match=says) as error:
        call_command("requeue_dead_letters", *arguments)
    assert "write 30m, 6h, 2d, 2026-11-24 or 2026-11-24T08:00" in str(error.value)
    assert DeadLetter.objects.get().status == "dead"


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--queue", "smss"], "no queue 'smss'; the queues are default, email, notifications, sms"),
        (["--task", "send_sms_notification"], "no task 'send_sms_notification'"),
    ],
)
def test_requeue_command_refuses_a_queue_or_task_that_does_not_exist(dead, arguments, says):
    with pytest.raises(CommandError, match=says):
        call_command("requeue_dead_letters", *arguments)
    assert DeadLetter.objects.get().status == "dead"


def test_requeue_command_requeues_by_queue_and_task_in_the_name_of_who_ran_it(dead, staff):
    out = StringIO()
    call_command("requeue_dead_letters", "--queue", "email", "--by", staff.username, stdout=out)
    assert out.getvalue().startswith("0 dead letter(s) requeued")
    call_command(
        "requeue_dead_letters",
        *("--queue", "sms", "--task", "notifications.tasks.send_sms_notification", "--by", staff.username),
        stdout=out,
    )
    assert "1 dead letter(s) requeued, 0 left alone." in out.getvalue()
    letter = DeadLetter.objects.get()
    assert (letter.status, letter.resolved_by) == ("requeued", staff)
    entry = LogEntry.objects.get(object_id=str(letter.pk), content_type__model="deadletter")
    assert (entry.user, entry.change_message) == (staff, "Requeued")


@pytest.mark.parametrize(
    ("arguments", "says"),
    [([], "--by: say who requeues them (a username)"), (["--by", "nobody"], "--by: no user 'nobody'.")],
)
def test_requeue_command_says_who_requeues_before_it_changes_anything(dead, arguments, says):
    with pytest.raises(CommandError, match=re.escape(says)):
        call_command("requeue_dead_letters", "--queue", "sms", *arguments)
    assert DeadLetter.objects.get().status == "dead"


def test_a_dry_run_counts_the_ones_a_suppression_would_leave_alone(dead, staff):
    services.suppression_add(channel="sms", recipient=dead.notification.recipient, reason="asked us to stop", by=staff)
    out = StringIO()
    call_command("requeue_dead_letters", "--dry-run", stdout=out)
    assert out.getvalue().splitlines()[1] == (
        "1 of them go to a suppressed recipient and would be left alone: a requeue never lifts a suppression "
        "(lift it in the admin's Suppressions first)."
    )


def test_an_email_longer_than_the_column_is_a_400(api):
    body = {
        "customer_name": "Ada",
        "customer_email": "a" * 250 + "@example.com",
        "items": [{"sku": "A", "name": "A", "quantity": 1, "unit_price": "1.00"}],
    }
    response = api.post("/api/orders/", body, format="json")
    assert response.status_code == 400
    assert "customer_email" in response.json()["errors"]


def test_requeue_matching_with_a_filter_it_does_not_know_answers_with_a_message(client, dead):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    response = client.post("/admin/notifications/deadletter/requeue-matching/?last_failed_at__gte=x")
    assert response.status_code == 302
    follow = client.get(response.url)
    assert "these filters cannot be applied" in follow.content.decode()


def test_a_late_receipt_for_the_old_message_does_not_touch_a_resend(dead, staff):
    Notification.objects.filter(pk=dead.notification_id).update(provider_message_id="SMold")
    services.notification_resend(notification_id=dead.notification_id, by=staff)
    notification = Notification.objects.get(pk=dead.notification_id)
    assert notification.provider_message_id == ""
    assert services.notification_record_receipt(provider_message_id="SMold", provider_status="delivered") == (
        "unknown message"
    )


def test_a_cancel_during_the_send_is_not_overwritten(shop, published, scripted, staff):
    order = place_order(owner=shop, customer_email="")
    sms = Notification.objects.get(order=order)
    scripted.script.append(TransientDeliveryError("slow", code="http-503"))
    original = services._claim

    def claim_then_cancelled(notification_id, **options):
        claimed = original(notification_id, **options)
        Notification.objects.filter(pk=notification_id).update(status="cancelled")  # an operator, meanwhile
        return claimed

    services._claim = claim_then_cancelled
    try:
        services.notification_send(notification_id=sms.pk)
    finally:
        services._claim = original
    assert Notification.objects.get(pk=sms.pk).status == "cancelled"


def test_bulk_resend_leaves_sent_notifications_alone(client, shop, published):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    order = place_order(owner=shop)
    Notification.objects.filter(order=order).update(status="sent")
    ids = list(Notification.objects.filter(order=order).values_list("pk", flat=True))
    response = client.post(
        "/admin/notifications/notification/", {"action": "resend_selected", "_selected_action": ids}, follow=True
    )
    assert "resend it on its own" in response.content.decode()
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}
    # One on its own is a choice, made on a page that says when it went.
    asked = client.post(
        "/admin/notifications/notification/", {"action": "resend_selected", "_selected_action": ids[:1]}
    )
    assert "sends the customer the same message a second time" in asked.content.decode()
    assert Notification.objects.get(pk=ids[0]).status == "sent"
    client.post(
        "/admin/notifications/notification/",
        {"action": "resend_selected", "_selected_action": ids[:1], "sent_at_seen": ""},
    )
    assert Notification.objects.get(pk=ids[0]).status == "pending"


@pytest.mark.parametrize(
    "url", ["/admin/notifications/deadletter/", "/admin/notifications/notification/", "/admin/orders/order/"]
)
def test_the_console_has_no_delete_action(client, url):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    assert "delete_selected" not in client.get(url).content.decode()


def test_status_update_task_refuses_a_status_orders_do_not_notify_about(shop, published):
    order = place_order(owner=shop)
    with pytest.raises(ValueError, match="not a status orders notify about"):
        send_order_status_update(order.pk, "confirmed", "pending")


def test_credential_failures_are_retried_not_dead_lettered():
    from twilio.base.exceptions import TwilioRestException

    assert not classify_twilio_error(TwilioRestException(401, "uri", msg="Authenticate", code=20003)).permanent
    assert not classify_smtp_reply(535, b"5.7.8 bad credentials", what="SMTP error").permanent


def test_requeue_dead_letters_knows_the_send_tasks_in_a_process_of_its_own(tmp_path):
    """--task checked the name against the tasks this process had happened to import: in a fresh
    `manage.py` it refused notifications.tasks.send_sms_notification, its own example."""
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    assert run_deployed("manage.py", "migrate", "--noinput", DATABASE_URL=database).returncode == 0
    for task in ["notifications.tasks.send_sms_notification", "notifications.tasks.send_email_notification"]:
        result = run_deployed("manage.py", "requeue_dead_letters", "--task", task, "--dry-run", DATABASE_URL=database)
        assert result.returncode == 0, result.stderr
    result = run_deployed("manage.py", "requeue_dead_letters", "--task", "send_sms", "--dry-run", DATABASE_URL=database)
    assert result.returncode == 1
    assert "--task: no task 'send_sms'" in result.stderr
