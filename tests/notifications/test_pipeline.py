"""The pipeline end to end: real broker (Redis, then RabbitMQ), a real worker process, the
real twilio library against a Twilio-compatible server, and a real SMTP server."""

import http.client
import itertools
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import pytest
import redis
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token
from twilio.request_validator import RequestValidator

from notifications import sweeps
from notifications.broker import publish
from notifications.models import DeadLetter, Notification, Suppression
from notifications.ratelimit import PAUSE_READ_SECONDS
from orders import services as order_services
from orders.models import ChangeSource, Order
from tests.factories import UserFactory, order_line
from tests.fakes.smtp_server import free_port
from tests.notifications.conftest import MAX_RETRIES, TWILIO_TOKEN, point_app_at, wait_until
from tests.notifications.test_metrics import sample
from tests.processes import ROOT, stop_group, web_command

pytestmark = pytest.mark.integration

_numbers = itertools.count(100)
RECEIPTS = "/webhooks/twilio/status/"
TCP_ESTABLISHED = "01"  # the state column of /proc/net/tcp


def new_phone() -> str:
    """A different valid number per order, so scripts and counts never mix between tests."""
    return f"+1415555{next(_numbers):04d}"


def place(**overrides):
    phone = new_phone()
    values = {
        "customer_name": "Ada Lovelace",
        "customer_email": f"ada{phone[-4:]}@example.com",
        "customer_phone": phone,
        "items": [order_line()],
    }
    values.update(overrides)
    owner = UserFactory(username="pipeline-shop")
    return order_services.order_create(owner=owner, **values).order


def finished(order, count: int):
    def check():
        rows = list(Notification.objects.filter(order=order))
        done = [row for row in rows if row.status in ("sent", "dead")]
        return rows if len(rows) == count and len(done) == count else None

    return wait_until(check, timeout=40, what=f"{count} notification(s) of order {order.pk} to finish")


def test_placed_order_sends_one_sms_and_one_email_with_the_right_text(pipeline, fake_twilio, fake_smtp):
    order = place()
    rows = finished(order, 2)
    assert {(row.channel, row.status, row.attempts) for row in rows} == {("sms", "sent", 1), ("email", "sent", 1)}

    [sms] = fake_twilio.accepted(order.customer_phone)
    assert sms["From"] == "+15005550006"
    assert sms["Body"] == f"Ada Lovelace, we have received your order (order #{order.pk}, total 9.00)."
    assert len(sms["Body"]) <= 160

    [mail] = fake_smtp.delivered(order.customer_email)
    assert mail["Subject"] == f"Order #{order.pk}: We have received your order"
    assert mail["From"] == "orders@shop.example"
    assert "2 x Green tea (TEA-1)  9.00" in mail.get_body(("plain",)).get_content()
    assert "<td>Green tea</td>" in mail.get_body(("html",)).get_content()

    sms_row = next(row for row in rows if row.channel == "sms")
    assert sms_row.provider_message_id.startswith("SM")
    assert sms_row.attempt_log.get().outcome == "sent"


def test_status_change_sends_an_update_on_both_channels(pipeline, fake_twilio, fake_smtp):
    order = place()
    finished(order, 2)
    order_services.order_transition(order_id=order.pk, to_status="confirmed", by=None, source=ChangeSource.SYSTEM)
    rows = finished(order, 4)
    assert sorted((row.event, row.channel) for row in rows) == [
        ("confirmed", "email"),
        ("confirmed", "sms"),
        ("placed", "email"),
        ("placed", "sms"),
    ]
    assert fake_twilio.accepted(order.customer_phone)[-1]["Body"].startswith("Ada Lovelace, your order is confirmed")
    assert fake_smtp.delivered(order.customer_email)[-1]["Subject"] == f"Order #{order.pk}: Your order is confirmed"


def test_a_receipt_sent_before_twilio_answers_the_worker_is_applied_once_the_send_is_written_down(
    pipeline, fake_twilio, settings
):
    """Twilio's delivery receipt races its own answer to the worker: the webhook meets a message
    id not written down yet, and the worker applies the receipt a few seconds later."""
    settings.TWILIO_AUTH_TOKEN, settings.TWILIO_STATUS_CALLBACK_URL = TWILIO_TOKEN, ""
    phone = new_phone()
    answers = []

    def receipt_first(form):
        if form.get("To") != phone:
            return
        sid = next(request["sid"] for request in reversed(fake_twilio.requests) if request.get("To") == phone)
        params = {"MessageSid": sid, "MessageStatus": "delivered"}
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"http://testserver{RECEIPTS}", params)

        def post():
            try:
                return Client().post(RECEIPTS, params, HTTP_X_TWILIO_SIGNATURE=signature).json()
            finally:
                connection.close()

        with ThreadPoolExecutor(1) as thread:  # not in the double's event loop, where Django refuses queries
            answers.append(thread.submit(post).result())

    fake_twilio.before_accepting = receipt_first
    try:
        order = place(customer_phone=phone, customer_email="")
        [sms] = wait_until(
            lambda: list(Notification.objects.filter(order=order, status="delivered")),
            timeout=30,
            what="the receipt to be applied",
        )
    finally:
        fake_twilio.before_accepting = None
    assert answers == [{"received": True, "outcome": "unknown message", "tried_again_later": True}]
    assert (sms.attempts, sms.provider_message_id) == (1, fake_twilio.accepted(phone)[0]["sid"])


def test_sms_sent_after_two_retries_when_provider_answers_500_twice(pipeline, fake_twilio):
    phone = new_phone()
    fake_twilio.script(phone, 500, 500, 201)
    order = place(customer_phone=phone, customer_email="")
    [sms] = finished(order, 1)
    assert (sms.status, sms.attempts) == ("sent", 3)
    assert [attempt.outcome for attempt in sms.attempt_log.all()] == ["transient", "transient", "sent"]
    assert len(fake_twilio.received(phone)) == 3
    assert not DeadLetter.objects.filter(notification=sms).exists()


def test_throttled_sms_is_retried(pipeline, fake_twilio):
    phone = new_phone()
    fake_twilio.script(phone, 429, (400, 20429))
    order = place(customer_phone=phone, customer_email="")
    [sms] = finished(order, 1)
    assert (sms.status, sms.attempts) == ("sent", 3)


def test_too_many_requests_holds_every_sms_until_the_time_twilio_named(pipeline, fake_twilio, settings):
    """Twilio answers one send 429 with Retry-After: 2. The worker's other process sends the
    next order's SMS only after those 2 s, and the throttled SMS goes on its retry."""
    throttled_phone = new_phone()
    fake_twilio.script(throttled_phone, (429, 20429, {"Retry-After": "2"}))
    throttled = place(customer_phone=throttled_phone, customer_email="")
    [refused] = wait_until(lambda: fake_twilio.received(throttled_phone), timeout=20, what="the SMS Twilio refuses")
    limiter = redis.Redis.from_url(settings.REDIS_URL)
    wait_until(lambda: limiter.exists("orderflow:pause:sms"), timeout=5, what="the worker to pause the SMS channel")
    time.sleep(PAUSE_READ_SECONDS * 2)  # a worker process that looked just before sees the pause by now
    following = place(customer_email="")
    [sms] = finished(following, 1)
    [accepted] = fake_twilio.accepted(following.customer_phone)
    assert (sms.status, sms.attempts) == ("sent", 1)  # the wait used no attempt
    assert accepted["at"] >= refused["at"] + 2
    [retried] = finished(throttled, 1)
    assert (retried.status, retried.attempts) == ("sent", 2)
    assert [request["answer"] for request in fake_twilio.received(throttled_phone)][-1] == 201
    assert fake_twilio.received(throttled_phone)[-1]["at"] >= refused["at"] + 2


def test_sms_goes_dead_after_retries_when_provider_answers_500_always(pipeline, fake_twilio):
    phone = new_phone()
    fake_twilio.script(phone, *[500] * (MAX_RETRIES + 1))
    order = place(customer_phone=phone, customer_email="")
    [sms] = finished(order, 1)
    assert (sms.status, sms.attempts) == ("dead", MAX_RETRIES + 1)
    assert len(fake_twilio.received(phone)) == MAX_RETRIES + 1
    letter = DeadLetter.objects.get(notification=sms)
    assert letter.task_name == "notifications.tasks.send_sms_notification"
    assert (letter.queue, letter.args, letter.attempts, letter.status) == ("sms", [sms.pk], MAX_RETRIES + 1, "dead")
    assert letter.exception_type == "twilio.base.exceptions.TwilioRestException"
    assert letter.message.startswith(f"gave up after {MAX_RETRIES + 1} attempts")
    assert "TwilioRestException" in letter.traceback


def test_sms_goes_dead_after_invalid_number_without_retry(pipeline, fake_twilio):
    phone = new_phone()
    fake_twilio.script(phone, (400, 21211))
    order = place(customer_phone=phone)
    rows = finished(order, 2)
    sms = next(row for row in rows if row.channel == "sms")
    assert (sms.status, sms.attempts, sms.last_error_code) == ("dead", 1, "twilio-21211")
    assert len(fake_twilio.received(phone)) == 1
    letter = DeadLetter.objects.get(notification=sms)
    assert letter.error_code == "twilio-21211"
    assert "not a valid phone number" in letter.message
    assert next(row for row in rows if row.channel == "email").status == "sent"


def test_email_retried_after_smtp_4xx_and_dead_after_5xx(pipeline, fake_smtp):
    later, refused = f"later{new_phone()[-4:]}@example.com", f"nobody{new_phone()[-4:]}@example.com"
    fake_smtp.script(later, "451 4.3.0 Try again later")
    fake_smtp.script(refused, "550 5.1.1 No such user")
    retried = place(customer_email=later, customer_phone="")
    dead = place(customer_email=refused, customer_phone="")
    [retried_mail] = finished(retried, 1)
    [dead_mail] = finished(dead, 1)
    assert (retried_mail.status, retried_mail.attempts) == ("sent", 2)
    assert (dead_mail.status, dead_mail.attempts, dead_mail.last_error_code) == ("dead", 1, "smtp-550")
    assert DeadLetter.objects.get(notification=dead_mail).queue == "email"
    assert fake_smtp.attempts(refused) == 1


def test_an_unsubscribed_number_gets_no_more_sms_and_no_more_dead_letters(pipeline, fake_twilio, fake_smtp):
    phone = new_phone()
    fake_twilio.script(phone, (400, 21610))
    first = place(customer_phone=phone)
    sms = next(row for row in finished(first, 2) if row.channel == "sms")
    assert sms.status == "dead"
    assert Suppression.objects.get(channel="sms", recipient=phone).error_code == "twilio-21610"

    later = place(customer_phone=phone)
    rows = {row.channel: row for row in wait_until(lambda: _settled(later), timeout=40, what="the later order")}
    assert (rows["sms"].status, rows["sms"].last_error_code) == ("cancelled", "suppressed")
    assert rows["email"].status == "sent"
    assert len(fake_twilio.received(phone)) == 1  # only the refused first one reached Twilio
    assert DeadLetter.objects.filter(notification__recipient=phone).count() == 1


def _settled(order):
    rows = list(Notification.objects.filter(order=order))
    return rows if len(rows) == 2 and all(row.status in ("sent", "dead", "cancelled") for row in rows) else None


def test_a_status_sms_published_first_still_reaches_the_customer_after_the_confirmation(
    pipeline, broker_url, fake_twilio
):
    """As when the first SMS waited behind the rate limit and went to the back of the queue."""
    point_app_at("redis://127.0.0.1:1/0" if broker_url.startswith("redis") else "amqp://guest:guest@127.0.0.1:1//")
    try:  # nothing is published while the order is placed and confirmed: both SMS stay pending
        order = place(customer_email="")
        order_services.order_transition(order_id=order.pk, to_status="confirmed", by=None, source=ChangeSource.SYSTEM)
    finally:
        point_app_at(broker_url)
    placed, confirmed = (Notification.objects.get(order=order, event=event) for event in ("placed", "confirmed"))
    publish("notifications.tasks.send_sms_notification", args=[confirmed.pk], queue="sms")
    time.sleep(1)  # the worker has it, and puts it off
    publish("notifications.tasks.send_sms_notification", args=[placed.pk], queue="sms")
    wait_until(
        lambda: Notification.objects.filter(order=order, status="sent").count() == 2, timeout=40, what="both SMS"
    )
    bodies = [request["Body"] for request in fake_twilio.accepted(order.customer_phone)]
    assert bodies == [placed.body, confirmed.body]


def test_same_task_published_twice_sends_once(pipeline, fake_twilio):
    phone = new_phone()
    order = place(customer_phone=phone, customer_email="")
    [sms] = finished(order, 1)
    publish("notifications.tasks.send_sms_notification", args=[sms.pk])
    publish("notifications.tasks.send_sms_notification", args=[sms.pk])
    marker = place(customer_phone=new_phone(), customer_email="")  # sent after the duplicates were consumed
    finished(marker, 1)
    assert len(fake_twilio.received(phone)) == 1
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == ("sent", 1)


def test_duplicate_messages_before_the_send_still_send_once(pipeline, fake_twilio):
    phone = new_phone()
    fake_twilio.script(phone, 500)  # keep the first run busy retrying while the copies arrive
    order = place(customer_phone=phone, customer_email="")
    sms = Notification.objects.get(order=order)
    for _ in range(3):
        publish("notifications.tasks.send_sms_notification", args=[sms.pk])
    finished(order, 1)
    marker = place(customer_phone=new_phone(), customer_email="")
    finished(marker, 1)
    assert len(fake_twilio.accepted(phone)) == 1


def test_email_only_and_sms_only_orders(pipeline, fake_twilio, fake_smtp):
    email_only = place(customer_phone="")
    sms_only = place(customer_email="")
    [mail] = finished(email_only, 1)
    [sms] = finished(sms_only, 1)
    assert (mail.channel, mail.status) == ("email", "sent")
    assert (sms.channel, sms.status) == ("sms", "sent")
    assert len(fake_smtp.delivered(email_only.customer_email)) == 1
    assert len(fake_twilio.accepted(sms_only.customer_phone)) == 1


def test_broker_down_at_commit_keeps_order_then_the_sweep_sends(pipeline, broker_url, api_for_pipeline, fake_twilio):
    point_app_at("redis://127.0.0.1:1/0" if broker_url.startswith("redis") else "amqp://guest:guest@127.0.0.1:1//")
    try:
        response = api_for_pipeline.post(
            "/api/orders/",
            {
                "customer_name": "Ada",
                "customer_email": "down@example.com",
                "customer_phone": new_phone(),
                "items": [{"sku": "A", "name": "A", "quantity": 1, "unit_price": "1.00"}],
            },
            format="json",
        )
    finally:
        point_app_at(broker_url)
    assert response.status_code == 201
    order = Order.objects.get(pk=response.json()["id"])
    assert sorted(row.status for row in order.notifications.all()) == ["pending", "pending"]

    assert sweeps.notifications_sweep()["unpublished"] == 2  # the broker is back
    finished(order, 2)
    assert len(fake_twilio.accepted(order.customer_phone)) == 1


def test_requeue_from_the_admin_is_delivered_once_by_the_worker(pipeline, fake_twilio, client):
    phone = new_phone()
    fake_twilio.script(phone, (400, 21211))
    order = place(customer_phone=phone, customer_email="")
    [sms] = finished(order, 1)
    assert sms.status == "dead"
    letter = DeadLetter.objects.get(notification=sms)

    client.force_login(UserFactory(username="pipeline-operator", is_staff=True, is_superuser=True))
    for _ in range(2):  # a double click, or two operators at once
        client.post("/admin/notifications/deadletter/", {"action": "requeue_selected", "_selected_action": [letter.pk]})
    wait_until(lambda: Notification.objects.get(pk=sms.pk).status == "sent", timeout=30, what="the requeued send")
    marker = place(customer_phone=new_phone(), customer_email="")
    finished(marker, 1)

    assert len(fake_twilio.accepted(phone)) == 1
    assert len(fake_twilio.received(phone)) == 2  # the refused first try, then the one requeued send
    letter.refresh_from_db()
    assert letter.status == "requeued"


def test_worker_logs_carry_ids_and_never_a_full_phone_email_or_secret(pipeline):
    order = place()
    finished(order, 2)
    log = pipeline.log_path.read_text()
    sms = Notification.objects.get(order=order, channel="sms")
    assert f"notification.sent order_id={order.pk} notification_id={sms.pk} channel=sms" in log
    assert re.search(r"task_id=[0-9a-f-]{36}", log)
    assert not re.search(r"\+1415555\d{4}", log)
    assert not re.search(r"[\w.]{2,}@example\.com", log)
    assert TWILIO_TOKEN not in log


def test_metrics_count_the_workers_sends_and_failures(pipeline, fake_twilio, client, settings, worker_env):
    settings.PROMETHEUS_MULTIPROC_DIR = worker_env["PROMETHEUS_MULTIPROC_DIR"]
    phone = new_phone()
    fake_twilio.script(phone, (400, 21211))
    finished(place(customer_phone=phone), 2)
    client.force_login(UserFactory(username="metrics-reader", is_staff=True))
    text = client.get("/metrics").content.decode()
    assert sample(text, 'orderflow_notification_sends_total{channel="email"}') >= 1
    assert sample(text, 'orderflow_notification_failures_total{channel="sms",error_class="permanent"}') >= 1
    assert sample(text, 'orderflow_notification_send_seconds_count{channel="email"}') >= 1
    assert sample(text, 'orderflow_rate_limit_wait_seconds_count{channel="sms"}') >= 1
    assert sample(text, 'orderflow_dead_letters{status="dead"}') >= 1
    assert sample(text, "orderflow_broker_up") == 1  # queue depths read from this module's broker
    assert sample(text, 'orderflow_queue_depth{queue="sms"}') >= 0


def test_the_deployed_web_command_takes_orders_whose_customers_are_then_told(
    pipeline, broker_url, worker_env, fake_twilio, fake_smtp, tmp_path
):
    """docker-compose.yml's web command (gunicorn, the app loaded before its workers fork) serving
    orders from several clients at once: each is answered 201 and its SMS and email go out once."""
    token = Token.objects.create(user=UserFactory(username="gunicorn-shop"))
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", *web_command(bind=f"127.0.0.1:{port}"), "--no-control-socket"],
            cwd=ROOT,
            env={**worker_env, "CELERY_BROKER_URL": broker_url},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: _get(port, "/readyz") == 200 or _exited(server, log_path), timeout=60, what="gunicorn")
        phones = [new_phone() for _ in range(8)]
        with ThreadPoolExecutor(max_workers=4) as clients:
            answers = list(clients.map(lambda phone: _post_order(port, token.key, phone), phones))
        # The arbiter holds no connection (database, broker, Redis) that its forked workers would share.
        assert _established_connections(server.pid) == 0
        # gunicorn passes a chunked body on without a length, which Django would read as none.
        assert _post_chunked(port, token.key) == (411, "length_required")
        # A query naming a customer reaches the access log masked, as every log line is.
        assert _get(port, "/healthz?q=%2B14155550111&e=ada%40example.com&p=+14155550112") == 200
    finally:
        stop_group(server, timeout=20)
    access_log = log_path.read_text()
    assert "/healthz?q=+14***11&e=a***@example.com&p=+14***12" in access_log
    assert "4155550111" not in access_log and "ada%40" not in access_log
    assert [status for status, _ in answers] == [201] * len(phones), answers
    for (_, order), phone in zip(answers, phones, strict=True):
        finished(Order.objects.get(pk=order["id"]), 2)
        assert len(fake_twilio.accepted(phone)) == 1
        assert len(fake_smtp.delivered(order["customer_email"])) == 1


def _exited(server: subprocess.Popen, log_path) -> bool:
    if server.poll() is not None:
        raise AssertionError(f"gunicorn exited {server.returncode}:\n{log_path.read_text()[-3000:]}")
    return False


def _established_connections(pid: int) -> int:
    """How many established TCP connections process `pid` holds (from /proc)."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(FileNotFoundError):  # closed meanwhile, e.g. the one listing the directory
            link = os.readlink(fd)
            if link.startswith("socket:["):
                sockets.add(link[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            count += fields[3] == TCP_ESTABLISHED and fields[9] in sockets
    return count


def _get(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status
    except OSError:  # not listening yet, or an error status (HTTPError)
        return None


def _post_chunked(port: int, token: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST",
            "/api/orders/",
            body=iter([b'{"customer_name": "Ada", ', b'"items": []}']),
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())["code"]
    finally:
        connection.close()


def _post_order(port: int, token: str, phone: str) -> tuple[int, dict]:
    body = {
        "customer_name": "Ada Lovelace",
        "customer_email": f"web{phone[-4:]}@example.com",
        "customer_phone": phone,
        "items": [{"sku": "TEA-1", "name": "Green tea", "quantity": 1, "unit_price": "4.50"}],
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/orders/",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, {"body": error.read().decode(errors="replace")[:500]}
