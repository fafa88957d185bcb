"""Twilio delivery receipts, signed as Twilio signs them (the twilio library's validator)."""

import logging

import pytest
from celery.signals import task_prerun
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError, connection
from twilio.request_validator import RequestValidator

from notifications import broker
from notifications.models import DeadLetter, Notification, Suppression
from notifications.tasks import drop_unusable_connections, record_receipt
from tests.factories import place_order

pytestmark = pytest.mark.django_db

URL = "/webhooks/twilio/status/"
TOKEN = "webhook-token"


@pytest.fixture
def sent_sms(shop, settings, django_capture_on_commit_callbacks):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_STATUS_CALLBACK_URL = ""
    with django_capture_on_commit_callbacks(execute=False):
        order = place_order(owner=shop, customer_email="")
    sms = Notification.objects.get(order=order)
    Notification.objects.filter(pk=sms.pk).update(status="sent", attempts=1, provider_message_id="SM" + "a" * 32)
    sms.refresh_from_db()
    return sms


def receipt(client, params: dict, *, signature: str | None = "sign"):
    headers = {}
    if signature == "sign":
        headers["HTTP_X_TWILIO_SIGNATURE"] = RequestValidator(TOKEN).compute_signature(
            f"http://testserver{URL}", params
        )
    elif signature is not None:
        headers["HTTP_X_TWILIO_SIGNATURE"] = signature
    return client.post(URL, params, **headers)


def test_delivered_receipt_marks_the_notification_delivered(client, sent_sms):
    response = receipt(client, {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "delivered"})
    assert (response.status_code, response.json()["outcome"]) == (200, "delivered")
    sent_sms.refresh_from_db()
    assert sent_sms.status == "delivered"
    assert sent_sms.delivered_at is not None


@pytest.mark.parametrize("signature", ["wrong", None])
def test_a_wrong_or_missing_signature_is_refused_and_changes_nothing(client, sent_sms, signature):
    response = receipt(
        client, {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "delivered"}, signature=signature
    )
    assert response.status_code == 403
    assert "X-Twilio-Signature" in response.json()["detail"]
    sent_sms.refresh_from_db()
    assert sent_sms.status == "sent"


def test_a_signature_for_other_parameters_is_refused(client, sent_sms):
    signed_for = RequestValidator(TOKEN).compute_signature(
        f"http://testserver{URL}", {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "undelivered"}
    )
    response = receipt(
        client, {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "delivered"}, signature=signed_for
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [("undelivered", "30003", "unreachable destination handset"), ("failed", "30007", "filtered by the carrier")],
)
def test_undelivered_and_failed_receipts_reach_the_dead_letter_queue(client, sent_sms, status, code, reason):
    params = {"MessageSid": sent_sms.provider_message_id, "MessageStatus": status, "ErrorCode": code}
    assert receipt(client, params).json()["outcome"] == status
    sent_sms.refresh_from_db()
    assert (sent_sms.status, sent_sms.last_error_code) == ("dead", f"twilio-{code}")
    letter = DeadLetter.objects.get(notification=sent_sms)
    assert letter.message == f"carrier reports {status}: {code} {reason}"
    assert (letter.queue, letter.args) == ("sms", [sent_sms.pk])


@pytest.mark.parametrize(("code", "suppressed"), [("21610", True), ("21614", True), ("30003", False)])
def test_a_receipt_saying_the_number_refuses_messages_suppresses_it_as_an_answer_would(
    client, sent_sms, code, suppressed
):
    # 21610: the customer replied STOP; a Messaging Service reports it in the receipt, not the answer.
    params = {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "failed", "ErrorCode": code}
    assert receipt(client, params).json()["outcome"] == "failed"
    found = Suppression.objects.filter(channel="sms", recipient=sent_sms.recipient).first()
    assert (found is not None) == suppressed
    if suppressed:
        assert (found.error_code, found.notification) == (f"twilio-{code}", sent_sms)


def test_a_replayed_receipt_is_harmless(client, sent_sms):
    params = {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    first, replay = receipt(client, params), receipt(client, params)
    assert (first.status_code, replay.status_code) == (200, 200)
    assert replay.json()["outcome"] == "ignored"
    assert DeadLetter.objects.count() == 1
    late_delivered = receipt(client, {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "delivered"})
    assert late_delivered.json()["outcome"] == "ignored"


def test_intermediate_statuses_change_nothing(client, sent_sms):
    assert (
        receipt(client, {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "sent"}).json()["outcome"]
        == "ignored"
    )
    sent_sms.refresh_from_db()
    assert sent_sms.status == "sent"


def test_a_receipt_for_an_unknown_message_is_acknowledged(client, sent_sms, caplog, published):
    response = receipt(client, {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered"})
    assert (response.status_code, response.json()["outcome"]) == (200, "unknown message")
    assert "unknown message" in caplog.text


@pytest.fixture
def later(monkeypatch):
    """The messages published, kept whole (countdown, kwargs) instead of sent."""
    kept = []

    def keep(messages):
        kept.extend(messages)
        return [f"kept-{number}" for number in range(len(messages))]

    monkeypatch.setattr(broker, "publish_many", keep)
    return kept


def test_a_receipt_that_comes_before_its_send_is_written_down_is_applied_once_it_is(client, sent_sms, later):
    """Twilio sends a receipt as soon as it has one, and it can reach us before the worker has
    written down the message id Twilio answered with; Twilio does not send it again."""
    sid = "SM" + "b" * 32
    response = receipt(client, {"MessageSid": sid, "MessageStatus": "delivered"})
    assert response.json() == {"received": True, "outcome": "unknown message", "tried_again_later": True}
    [message] = later
    assert (message.task_name, message.args, message.kwargs, message.countdown) == (
        "notifications.tasks.record_receipt",
        [sid, "delivered", ""],
        {"tries": 1},
        5,
    )
    Notification.objects.filter(pk=sent_sms.pk).update(provider_message_id=sid)  # the worker's record
    assert record_receipt(*message.args, **message.kwargs) == "delivered"
    sent_sms.refresh_from_db()
    assert sent_sms.status == "delivered"
    assert len(later) == 1  # applied: not tried again


def database_away_for(queries: int):
    """A wrapper failing the next `queries` statements as a database that went away does."""
    left = [queries]

    def away(execute, sql, params, many, context):
        if left[0] > 0:
            left[0] -= 1
            raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")
        return execute(sql, params, many, context)

    return away


def test_a_receipt_that_meets_the_database_away_is_applied_by_a_worker_once_it_is_back(client, sent_sms, later, caplog):
    """Twilio does not post a receipt again: answering 503 lost the delivery status."""
    params = {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "delivered"}
    with connection.execute_wrapper(database_away_for(1_000)):
        response = receipt(client, params)
    assert response.json() == {"received": True, "outcome": "applied when the database is back"}
    [message] = later
    assert (message.task_name, message.args, message.countdown) == (
        "notifications.tasks.record_receipt",
        [sent_sms.provider_message_id, "delivered", ""],
        10,
    )
    assert "receipt for SM" in caplog.text and "handed to a worker" in caplog.text

    # The worker's first tries meet the database still away; the task's own retries go on (run
    # here at once, one after the other). Not closing the test's connection, which is in a
    # transaction, as a worker closes one before each task.
    task_prerun.disconnect(drop_unusable_connections)
    try:
        with connection.execute_wrapper(database_away_for(2)):
            assert record_receipt.apply(args=message.args).get() == "delivered"
    finally:
        task_prerun.connect(drop_unusable_connections)
    sent_sms.refresh_from_db()
    assert sent_sms.status == "delivered"


def test_a_receipt_that_meets_the_database_and_the_broker_away_is_a_503(client, sent_sms, monkeypatch):
    def broker_away(messages):
        raise broker.BrokerUnavailable("connection refused")

    monkeypatch.setattr(broker, "publish_many", broker_away)
    with connection.execute_wrapper(database_away_for(1_000)):
        response = receipt(client, {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "delivered"})
    assert (response.status_code, response["Retry-After"]) == (503, "30")


@pytest.mark.parametrize("status", ["queued", "sent"])
def test_a_receipt_that_could_change_nothing_is_not_tried_again(client, sent_sms, later, status):
    response = receipt(client, {"MessageSid": "SM" + "e" * 32, "MessageStatus": status})
    assert response.json() == {"received": True, "outcome": "unknown message"}
    assert later == []


@pytest.mark.parametrize("status", ["queued", "sent"])
def test_the_receipt_task_does_not_try_again_a_receipt_that_could_change_nothing(sent_sms, later, status):
    assert record_receipt("SM" + "9" * 32, status, "", tries=0) == "unknown message"
    assert later == []


def test_a_receipt_for_a_message_never_written_down_is_tried_a_few_times_then_dropped(sent_sms, later, caplog):
    sid = "SM" + "c" * 32
    outcomes, countdowns = [record_receipt(sid, "delivered", "", tries=0)], []
    while later:
        message = later.pop()
        countdowns.append(message.countdown)
        outcomes.append(record_receipt(*message.args, **message.kwargs))
    assert outcomes == ["unknown message"] * 4
    assert countdowns == [5, 30, 120]
    assert f"receipt for unknown message {sid} (delivered) dropped after 4 tries" in caplog.text


def test_a_receipt_for_an_unknown_message_with_the_broker_away_is_answered_and_logged(
    client, sent_sms, monkeypatch, caplog
):
    def broker_away(messages):
        raise broker.BrokerUnavailable("OperationalError: Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr(broker, "publish_many", broker_away)
    response = receipt(client, {"MessageSid": "SM" + "d" * 32, "MessageStatus": "delivered"})
    assert (response.status_code, response.json()["tried_again_later"]) == (200, False)
    assert "not tried again: OperationalError: Error 111" in caplog.text


def test_a_receipt_without_sid_is_a_clear_400(client, sent_sms):
    response = receipt(client, {"MessageStatus": "delivered"})
    assert response.status_code == 400
    assert "MessageSid" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (
            "&".join(f"f{number}=1" for number in range(2_000)),
            400,
            "Too many parameters in the form body: at most 1000",
        ),
        ("MessageSid=" + "x" * 3_000_000, 413, "too large"),
    ],
)
def test_a_receipt_too_big_to_read_is_refused_in_words(client, sent_sms, settings, body, status, says):
    settings.DEBUG = True  # where Django's own answer is a debug page
    response = client.post(URL, body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == status
    assert says in response.json()["detail"]
    sent_sms.refresh_from_db()
    assert sent_sms.status == "sent"


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({f"f{number}": "1" for number in range(2_000)}, 400, "Too many parameters in the form body: at most 1000"),
        ({"MessageSid": "x" * 3_000_000}, 413, "too large"),
    ],
)
def test_a_multipart_receipt_too_big_to_read_is_refused_in_the_same_words(
    client, sent_sms, settings, fields, status, says
):
    settings.DEBUG = True
    response = client.post(URL, fields)  # the test client's default: multipart/form-data
    assert response.status_code == status
    assert says in response.json()["detail"]


def test_a_multipart_body_to_the_api_is_refused_unread(client, settings, django_user_model):
    """The API takes JSON: DRF refuses a form (415) before any file part it carries is stored."""
    client.force_login(django_user_model.objects.create_user("multipart-shop"))
    upload = SimpleUploadedFile("big.bin", b"x" * 3_000_000)
    response = client.post("/api/orders/", {"customer_name": "Ada", "file": upload})
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize("url", [URL, "/api/orders/"])
def test_a_form_body_in_another_charset_than_utf8_is_refused_in_words(client, settings, url):
    settings.DEBUG = True  # where Django's debug page failed on it again: a 500
    response = client.post(url, "a=b", content_type="application/x-www-form-urlencoded; charset=utf-16")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("The request body could not be read: ")
    assert "UTF-8" in response.json()["detail"]


@pytest.mark.parametrize("status", ["weird\r\nstatus", "delivered" * 10])
def test_a_receipt_status_that_is_not_one_is_refused_and_logs_nothing(client, sent_sms, status, caplog):
    caplog.set_level(logging.INFO)
    response = receipt(client, {"MessageSid": sent_sms.provider_message_id, "MessageStatus": status})
    assert (response.status_code, response.json()["errors"]) == (400, {"MessageStatus": ["not a status"]})
    assert "notification.receipt" not in caplog.text
    sent_sms.refresh_from_db()
    assert sent_sms.status == "sent"


def test_the_public_callback_url_is_what_is_checked(client, sent_sms, settings):
    settings.TWILIO_STATUS_CALLBACK_URL = "https://shop.example/webhooks/twilio/status/"
    params = {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "delivered"}
    signature = RequestValidator(TOKEN).compute_signature(settings.TWILIO_STATUS_CALLBACK_URL, params)
    assert receipt(client, params, signature=signature).status_code == 200
    assert receipt(client, params).status_code == 403  # signed for the URL we see, not the public one


def test_get_is_a_json_405_naming_post(client):
    response = client.get(URL)
    assert (response.status_code, response["Allow"]) == (405, "POST")
    assert response.json()["code"] == "method_not_allowed"


def test_a_receipt_posted_without_the_trailing_slash_is_applied_not_redirected(client, sent_sms):
    url = URL.rstrip("/")
    params = {"MessageSid": sent_sms.provider_message_id, "MessageStatus": "delivered"}
    signature = RequestValidator(TOKEN).compute_signature(f"http://testserver{url}", params)
    response = client.post(url, params, HTTP_X_TWILIO_SIGNATURE=signature)
    assert (response.status_code, response.json()["outcome"]) == (200, "delivered")


def test_a_receipt_never_touches_an_email_with_the_same_message_id(client, sent_sms, published):
    email = Notification.objects.create(
        order=sent_sms.order,
        channel="email",
        event="shipped",
        recipient="ada@example.com",
        dedup_key="email-under-test",
        status="sent",
        attempts=1,
        provider_message_id="<176.42.1@shop.example>",
    )
    response = receipt(client, {"MessageSid": email.provider_message_id, "MessageStatus": "failed", "ErrorCode": "1"})
    assert (response.status_code, response.json()["outcome"]) == (200, "unknown message")
    email.refresh_from_db()
    assert email.status == "sent"
    assert not DeadLetter.objects.exists()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"MessageStatus": "failed", "ErrorCode": "3" * 60}, "ErrorCode"),
        ({"MessageStatus": "failed", "ErrorCode": "30003\x00"}, "ErrorCode"),
        ({"MessageStatus": "failed", "ErrorCode": "30003\n<b>"}, "ErrorCode"),
        ({"MessageStatus": "delivered", "MessageSid": "SM\x00"}, "MessageSid"),
        ({"MessageStatus": "delivered", "MessageSid": "SM" + "a" * 400}, "MessageSid"),
    ],
)
def test_a_signed_receipt_with_impossible_values_is_a_clear_400_and_changes_nothing(client, sent_sms, params, field):
    response = receipt(client, {"MessageSid": sent_sms.provider_message_id, **params})
    assert response.status_code == 400
    assert response.json()["detail"].startswith(field)
    assert field in response.json()["errors"]
    sent_sms.refresh_from_db()
    assert sent_sms.status == "sent"
