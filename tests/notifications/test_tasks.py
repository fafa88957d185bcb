import logging
import os
import weakref
from types import SimpleNamespace

import pytest
from celery.signals import worker_init
from django.db import OperationalError, connection

from notifications import backends, services
from notifications.tasks import (
    build_backends_before_the_pool_starts,
    send_order_confirmation,
    send_order_status_update,
    send_sms_notification,
)
from orderflow.errors import ApplicationError, NotFound
from orders import services as order_services
from orders.models import ChangeSource
from tests.factories import place_order
from tests.notifications.conftest import CLAIMS, RECORDS, TWILIO_FROM, TWILIO_SID, TWILIO_TOKEN, RefusedStatements

RECIPIENT = "+14155550177"  # the Twilio double serves the whole session: count from before


def worker_consuming(*queues):
    """What the worker_init receiver reads of Celery's WorkController: the queues given with -Q."""
    return SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=queues))))


@pytest.fixture
def twilio_backend(settings, fake_twilio):
    settings.SMS_BACKEND = "notifications.backends.sms.TwilioBackend"
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = TWILIO_SID, TWILIO_TOKEN
    settings.TWILIO_API_BASE_URL, settings.TWILIO_FROM_NUMBER = fake_twilio.url, TWILIO_FROM
    settings.TWILIO_MESSAGING_SERVICE_SID = settings.TWILIO_STATUS_CALLBACK_URL = ""
    backends._sms_backend.cache_clear()
    yield fake_twilio
    backends._sms_backend.cache_clear()


def test_backends_are_built_when_the_worker_starts():
    receivers = [receiver() if isinstance(receiver, weakref.ref) else receiver for _, receiver in worker_init.receivers]
    assert build_backends_before_the_pool_starts in receivers


def test_pool_processes_forked_after_worker_start_use_the_sms_backend_built_before(twilio_backend):
    build_backends_before_the_pool_starts(sender=worker_consuming("sms"))
    sent_before = len(twilio_backend.accepted(to=RECIPIENT))
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # a pool process
        try:
            builds = backends._sms_backend.cache_info().misses
            backends.get_backend("sms").send(recipient=RECIPIENT, body="hello")
            os.write(writable, str(backends._sms_backend.cache_info().misses - builds).encode())
        finally:
            os._exit(0)
    os.close(writable)
    with os.fdopen(readable) as pipe:
        built_in_the_pool_process = pipe.read()
    os.waitpid(pid, 0)
    assert built_in_the_pool_process == "0"
    assert len(twilio_backend.accepted(to=RECIPIENT)) == sent_before + 1


def test_a_worker_for_other_queues_builds_no_sms_backend(twilio_backend):
    build_backends_before_the_pool_starts(sender=worker_consuming("email", "notifications"))
    assert backends._sms_backend.cache_info().currsize == 0


def test_a_worker_with_an_sms_backend_it_cannot_import_says_so_once_at_start(settings, caplog):
    settings.SMS_BACKEND = "notifications.backends.sms.NoSuchBackend"
    with caplog.at_level(logging.ERROR, logger="notifications.tasks"):
        build_backends_before_the_pool_starts(sender=worker_consuming("sms"))
    assert [record.getMessage() for record in caplog.records] == [
        "configuration error: SMS_BACKEND: cannot import 'notifications.backends.sms.NoSuchBackend': "
        'Module "notifications.backends.sms" does not define a "NoSuchBackend" attribute/class'
    ]


@pytest.mark.django_db(transaction=True)  # a task closes a connection left outside autocommit, as in a worker
def test_a_send_the_database_could_not_record_is_written_by_the_retry_not_sent_again(
    shop, published, scripted, monkeypatch
):
    """The retry keeps what the task was called with (here the id as a keyword) and adds the send."""
    sms = place_order(owner=shop).notifications.get(channel="sms")
    monkeypatch.setattr(services, "RECORD_RETRY_SECONDS", 0)
    refusals = RefusedStatements(RECORDS, OperationalError("connection to server failed: Connection refused"))
    with connection.execute_wrapper(refusals):
        # apply() runs the task and then its retry here, at once (what a worker does after the countdown).
        result = send_sms_notification.apply(kwargs={"notification_id": sms.pk})
    assert not refusals.errors, "the record was never refused; nothing was tested"
    assert (result.state, result.result) == ("SUCCESS", "sent")
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.attempt_log.count()) == ("sent", 1, 1)
    assert len(scripted.sent) == 1


def database_away() -> OperationalError:
    return OperationalError(
        'connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )


@pytest.mark.django_db(transaction=True)
def test_a_send_waits_for_the_database_at_its_claim_then_goes_as_one_attempt(shop, published, scripted, caplog):
    sms = place_order(owner=shop).notifications.get(channel="sms")
    refusals = RefusedStatements(CLAIMS, database_away(), database_away())
    with caplog.at_level(logging.WARNING, logger="notifications.services"), connection.execute_wrapper(refusals):
        result = services.notification_send(notification_id=sms.pk)
    assert not refusals.errors, "the claim was never refused; nothing was tested"
    assert result.outcome == "sent"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == ("sent", 1)
    assert len(scripted.sent) == 1
    # One line for the wait, not one a try, nor the driver's hint on a line of its own.
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == [
        'database error, claiming again for up to 10 s: connection to server at "127.0.0.1", port 5432 failed: '
        "Connection refused"
    ]


@pytest.mark.django_db(transaction=True)
def test_a_send_the_database_stays_away_from_goes_back_to_its_queue_at_once(shop, published, scripted, monkeypatch):
    """After the claim's wait the task retries with no countdown: its message goes to the end of
    the queue in the broker instead of waiting in the worker (test_backlog.py shows it there)."""
    sms = place_order(owner=shop).notifications.get(channel="sms")
    monkeypatch.setattr(services, "CLAIM_DATABASE_WAIT_SECONDS", 0)
    retries = []
    real_retry = send_sms_notification.retry

    def retry(*args, **kwargs):
        retries.append(kwargs)
        return real_retry(*args, **kwargs)

    monkeypatch.setattr(send_sms_notification, "retry", retry)
    refusals = RefusedStatements(CLAIMS, database_away())
    with connection.execute_wrapper(refusals):
        # apply() runs the task and then its retry here, at once.
        result = send_sms_notification.apply(args=[sms.pk])
    assert not refusals.errors
    assert [(call["countdown"], type(call["exc"])) for call in retries] == [(0, OperationalError)]
    assert (result.state, result.result) == ("SUCCESS", "sent")
    assert len(scripted.sent) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "event"),
    [
        (["confirmed"], "shipped"),  # never reached
        (["confirmed", "cancelled"], "confirmed"),  # left: read after the cancellation, as made
    ],
)
def test_a_status_update_for_a_status_the_order_is_not_in_is_refused_and_queues_nothing(shop, published, path, event):
    order = place_order(owner=shop)
    for status in path:
        order_services.order_transition(order_id=order.pk, to_status=status, by=shop, source=ChangeSource.API)
    order.notifications.filter(event=event).delete()  # e.g. written while notifications were switched off
    with pytest.raises(ApplicationError, match=f"Order {order.pk} is {path[-1]}, not {event}; nothing is queued"):
        send_order_status_update(order.pk, "pending", event)
    assert not order.notifications.filter(event=event).exists()


@pytest.mark.django_db
def test_a_status_update_for_the_orders_status_is_queued_once(shop, published):
    order = place_order(owner=shop)
    order_services.order_transition(order_id=order.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    order.notifications.filter(event="confirmed").delete()
    assert send_order_status_update(order.pk, "pending", "confirmed") == 2
    assert send_order_status_update(order.pk, "pending", "confirmed") == 2  # the same two, not written again
    assert order.notifications.filter(event="confirmed").count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("task", ["confirmation", "status update"])
def test_a_task_for_an_order_that_is_not_there_says_so(task):
    with pytest.raises(NotFound, match="Order 999999 does not exist; nothing is queued"):
        if task == "confirmation":
            send_order_confirmation(999999)
        else:
            send_order_status_update(999999, "pending", "confirmed")
