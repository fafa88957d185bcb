from datetime import timedelta
from decimal import Decimal

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DataError, OperationalError, connection, transaction
from django.utils import timezone, translation
from prometheus_client import REGISTRY

from notifications import backends, ratelimit, services, tasks
from notifications.backends.sms import TWILIO_TIMEOUT_SECONDS
from notifications.backends.smtp import BoundedEmailBackend
from notifications.errors import PermanentDeliveryError, TransientDeliveryError
from notifications.models import DeadLetter, Notification
from notifications.ratelimit import ChannelRateLimiter, LimiterUnavailable
from orderflow.masking import MaskingFilter
from orders import services as order_services
from orders.models import ChangeSource
from tests.factories import order_line, place_order
from tests.notifications.conftest import RECORDS, RefusedStatements

pytestmark = pytest.mark.django_db


def sms_of(order) -> Notification:
    return Notification.objects.get(order=order, channel="sms", event="placed")


# --- the outbox -----------------------------------------------------------------------------


def test_placing_an_order_writes_one_row_per_channel_and_publishes_on_commit(
    shop, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        order = place_order(owner=shop)
    rows = {row.channel: row for row in order.notifications.all()}
    assert set(rows) == {"sms", "email"}
    assert rows["sms"].recipient == "+442079460958"
    assert rows["email"].recipient == "ada@example.com"
    assert sorted(published) == sorted(
        [
            ("notifications.tasks.send_sms_notification", [rows["sms"].pk], None),
            ("notifications.tasks.send_email_notification", [rows["email"].pk], None),
        ]
    )
    assert {row.status for row in Notification.objects.all()} == {"queued"}


def test_nothing_is_published_before_commit(shop, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        place_order(owner=shop)
    assert published == []
    assert len(callbacks) == 1
    assert {row.status for row in Notification.objects.all()} == {"queued"}  # pending only if the publish fails


def test_a_rolled_back_order_leaves_no_notification(shop, published):
    with pytest.raises(RuntimeError), transaction.atomic():
        place_order(owner=shop)
        raise RuntimeError("the order's transaction fails")
    assert Notification.objects.count() == 0
    assert published == []


def test_a_repeated_event_writes_no_second_row(shop, published):
    order = place_order(owner=shop)
    again = services.notifications_create(order=order, event="placed")
    assert len(again) == 2
    assert Notification.objects.filter(order=order).count() == 2


def test_only_reachable_channels_get_a_row(shop, published):
    order = place_order(owner=shop, customer_email="")
    assert list(order.notifications.values_list("channel", flat=True)) == ["sms"]


def test_status_change_writes_rows_for_the_new_status(shop, published):
    order = place_order(owner=shop)
    order_services.order_transition(order_id=order.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    assert sorted(order.notifications.filter(event="confirmed").values_list("channel", flat=True)) == ["email", "sms"]


def test_broker_down_leaves_rows_pending_and_due_for_the_sweep(shop, monkeypatch):
    def down(messages):
        raise services.broker.BrokerUnavailable("connection refused")

    monkeypatch.setattr(services.broker, "publish_many", down)
    order = place_order(owner=shop)
    count = services.notifications_publish(notifications=[(row.pk, row.channel) for row in order.notifications.all()])
    assert count == 0
    for row in order.notifications.all():
        assert row.status == "pending"
        assert row.stale_after <= timezone.now()


@pytest.mark.django_db(transaction=True)
def test_a_publish_failing_in_an_unforeseen_way_after_the_commit_still_answers_201(api, monkeypatch, caplog):
    """E.g. a result backend that cannot be loaded: the order is committed, so it is created."""

    def unforeseen(messages):
        raise ModuleNotFoundError("No module named 'bogus'")

    monkeypatch.setattr(services.broker, "publish_many", unforeseen)
    body = {
        "customer_name": "Ada",
        "customer_phone": "+14155550123",
        "items": [{"sku": "T", "name": "Tea", "quantity": 1, "unit_price": "1.00"}],
    }
    response = api.post("/api/orders/", body, format="json")
    assert response.status_code == 201
    sms = Notification.objects.get(order_id=response.json()["id"])
    assert sms.status == "pending"  # due for the next sweep
    assert sms.stale_after <= timezone.now()
    assert "publishing failed, 1 notification(s) left for the sweep" in caplog.text
    assert "No module named 'bogus'" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_publisher_failing_after_the_commit_is_logged_by_name_and_the_commit_stands(shop, caplog):
    def publish_all(jobs):
        raise RuntimeError("publisher broke")

    with transaction.atomic():
        order = place_order(owner=shop)
        services.publish_after_commit(publish_all, ["job"])
    assert Notification.objects.filter(order=order).exists()
    assert "publish_all (after commit)" in caplog.text
    assert "publisher broke" in caplog.text


def test_broker_failing_between_batches_leaves_only_the_unsent_batches_pending(shop, monkeypatch):
    orders = [place_order(owner=shop, customer_email="") for _ in range(3)]
    rows = [order.notifications.get() for order in orders]
    for row in rows:  # as a publish that failed leaves them: due for the sweep
        row.status, row.stale_after = "pending", timezone.now()
        row.save(update_fields=["status", "stale_after"])
    sent = []

    def fails_on_the_second_batch(messages):
        if sent:
            raise services.broker.BrokerUnavailable("connection refused")
        sent.extend(message.args[0] for message in messages)
        return ["task-1"]

    monkeypatch.setattr(services, "PUBLISH_BATCH_SIZE", 1)
    monkeypatch.setattr(services.broker, "publish_many", fails_on_the_second_batch)
    count = services.notifications_publish(notifications=[(row.pk, row.channel) for row in rows])
    assert count == 1 and sent == [rows[0].pk]
    statuses = dict(Notification.objects.filter(pk__in=[row.pk for row in rows]).values_list("pk", "status"))
    assert statuses == {rows[0].pk: "queued", rows[1].pk: "pending", rows[2].pk: "pending"}


def test_sms_text_fits_one_segment_and_is_not_html_escaped(shop, published):
    order = place_order(owner=shop, customer_name="Zoë <O'Brien> & Sons of a very long name indeed")
    sms = sms_of(order)
    assert len(sms.body) <= 160
    assert "&amp;" not in sms.body and "&lt;" not in sms.body
    email = Notification.objects.get(order=order, channel="email")
    assert "&lt;O&#x27;Brien&gt;" in email.html_body
    assert "<O'Brien>" in email.body


def test_a_long_latin_name_keeps_the_sms_in_one_gsm_segment(shop, published):
    """A shortened name ends in '...': the one-character ellipsis is not in GSM-7, and one such
    character makes the whole SMS UCS-2, 70 characters a segment, two segments here."""
    sms = sms_of(place_order(owner=shop, customer_name="Maximilian Alexander Fitzgerald-Worthington"))
    assert sms.body.startswith("Maximilian Alexander ..., we have received your order")
    assert sms.body.isascii() and len(sms.body) <= 160


def test_texts_read_the_same_whatever_language_is_active(shop, published, settings):
    """The texts are English: a total or a quantity never takes another locale's separators."""
    settings.USE_THOUSAND_SEPARATOR = True
    with translation.override("de"):
        order = place_order(owner=shop, items=[order_line(quantity=1200, unit_price=Decimal("1234.50"))])
    assert f"order #{order.pk}, total 1481400.00)" in sms_of(order).body
    email = Notification.objects.get(order=order, channel="email")
    assert "1200 x Green tea (TEA-1)  1481400.00" in email.body
    assert "<td>1200 &times;</td>" in email.html_body and "<strong>1481400.00</strong>" in email.html_body


@pytest.mark.parametrize("currency", ["GBP", "EUR", "INR", "JPY"])
def test_texts_show_amounts_in_the_order_currency_and_the_sms_stays_gsm(shop, published, settings, currency):
    settings.ORDERS_CURRENCY = currency
    order = place_order(owner=shop, items=[order_line(quantity=1200, unit_price=Decimal("1234"))])
    sms = sms_of(order).body
    assert f"order #{order.pk}, total 1,480,800{'' if currency == 'JPY' else '.00'} {currency})" in sms
    assert sms.isascii() and len(sms) <= 160  # a symbol such as ₹ would make it UCS-2, 70 characters a segment
    email = Notification.objects.get(order=order, channel="email")
    symbol = {"GBP": "£", "EUR": "€", "INR": "₹", "JPY": "¥"}[currency]
    total = f"{symbol}1,480,800{'' if currency == 'JPY' else '.00'}"
    assert f"1200 x Green tea (TEA-1)  {total}" in email.body and f"Total: {total}" in email.body
    assert f"<strong>{total}</strong>" in email.html_body


def test_a_cancellation_email_does_not_thank_the_customer_for_the_order(shop, published):
    order = place_order(owner=shop)
    order_services.order_transition(order_id=order.pk, to_status="cancelled", by=shop, source=ChangeSource.API)
    placed = Notification.objects.get(order=order, channel="email", event="placed")
    cancelled = Notification.objects.get(order=order, channel="email", event="cancelled")
    assert placed.body.endswith("Thank you for your order.\n") and "Thank you" in placed.html_body
    assert cancelled.body.endswith(f"Your order has been cancelled (order #{order.pk}).\n")
    assert "Thank you" not in cancelled.html_body


# --- sending --------------------------------------------------------------------------------


def test_send_claims_sends_and_records(shop, published, scripted):
    sms = sms_of(place_order(owner=shop))
    assert services.notification_send(notification_id=sms.pk).outcome == "sent"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == ("sent", 1)
    assert sms.provider_message_id.startswith("scripted-")
    assert scripted.sent == [(sms.recipient, sms.body)]


@pytest.fixture(params=["one statement", "transaction"])
def record_path(request, monkeypatch):
    """Record sends both ways: in one statement (PostgreSQL) and as two in a transaction."""
    if request.param == "transaction":
        monkeypatch.setattr(services, "ONE_STATEMENT_VENDORS", set())
    return request.param


def test_a_send_is_recorded_with_its_attempt(shop, published, scripted, record_path):
    sms = sms_of(place_order(owner=shop))
    services.notification_send(notification_id=sms.pk, worker="sms@host")
    sms.refresh_from_db()
    attempt = sms.attempt_log.get()
    assert (sms.status, sms.attempts, sms.stale_after, sms.sent_at is not None) == ("sent", 1, None, True)
    assert (attempt.number, attempt.outcome, attempt.worker) == (1, "sent", "sms@host")
    assert attempt.provider_message_id == sms.provider_message_id != ""
    assert attempt.started_at <= attempt.finished_at == sms.sent_at == sms.updated_at


def test_a_send_cancelled_meanwhile_stays_cancelled_and_its_attempt_is_kept(
    shop, published, scripted, record_path, monkeypatch
):
    sms = sms_of(place_order(owner=shop))
    claim = services._claim

    def claimed_then_cancelled(notification_id, **options):
        claimed = claim(notification_id, **options)
        Notification.objects.filter(pk=notification_id).update(status="cancelled")  # an operator, meanwhile
        return claimed

    monkeypatch.setattr(services, "_claim", claimed_then_cancelled)
    services.notification_send(notification_id=sms.pk)
    sms.refresh_from_db()
    assert (sms.status, sms.provider_message_id) == ("cancelled", "")
    assert sms.attempt_log.get().outcome == "sent"  # the message did go out


def test_a_second_run_of_the_same_task_sends_nothing(shop, published, scripted):
    sms = sms_of(place_order(owner=shop))
    services.notification_send(notification_id=sms.pk)
    result = services.notification_send(notification_id=sms.pk)
    assert (result.outcome, result.retry_in) == ("skipped", None)
    assert len(scripted.sent) == 1


def test_a_claimed_notification_is_not_sent_by_a_second_worker(shop, published, scripted):
    sms = sms_of(place_order(owner=shop))
    Notification.objects.filter(pk=sms.pk).update(status="sending", stale_after=timezone.now() + timedelta(minutes=5))
    result = services.notification_send(notification_id=sms.pk)
    assert result.outcome == "deferred"
    assert 290 < result.retry_in <= 301  # looks again when the first worker's lease ends
    assert scripted.sent == []


def test_an_abandoned_claim_is_taken_over_after_its_lease(shop, published, scripted):
    sms = sms_of(place_order(owner=shop))
    Notification.objects.filter(pk=sms.pk).update(status="sending", stale_after=timezone.now() - timedelta(seconds=1))
    assert services.notification_send(notification_id=sms.pk).outcome == "sent"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
@pytest.mark.django_db(transaction=True)  # the migration runs on a connection of its own, as in a deploy
def test_claims_go_on_after_a_migration_adds_a_column_while_workers_run(
    shop, published, scripted, prepare_threshold, other_connection
):
    """The claim is a prepared statement in a running worker; one returning `*` would fail with
    "cached plan must not change result type" once another process's migration adds a column."""
    orders = [place_order(owner=shop) for _ in range(prepare_threshold + 3)]
    for order in orders[:-1]:
        assert services.notification_send(notification_id=sms_of(order).pk).outcome == "sent"
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_prepared_statements WHERE statement LIKE %s", ["%SET status = 'sending'%"])
        assert cursor.fetchall(), "the claim should be a prepared statement by now"
    table = Notification._meta.db_table
    other_connection.execute(f"ALTER TABLE {table} ADD COLUMN added_by_a_migration integer")
    try:
        assert services.notification_send(notification_id=sms_of(orders[-1]).pk).outcome == "sent"
    finally:
        other_connection.execute(f"ALTER TABLE {table} DROP COLUMN added_by_a_migration")
    assert Notification.objects.filter(status="sent", channel="sms").count() == len(orders)


def test_transient_error_schedules_a_retry_and_counts_the_attempt(shop, published, scripted):
    scripted.script.append(TransientDeliveryError("Twilio 500: oops", code="http-500"))
    sms = sms_of(place_order(owner=shop))
    result = services.notification_send(notification_id=sms.pk)
    assert result.outcome == "retry"
    assert 60 <= result.retry_in <= 66
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.last_error_code) == ("failed", 1, "http-500")
    assert sms.next_attempt_at > timezone.now() + timedelta(seconds=59)


def test_a_send_after_a_failed_attempt_clears_the_last_error_the_log_keeps_it(shop, published, scripted):
    scripted.script.append(TransientDeliveryError("Twilio 429: slow down", code="twilio-20429"))
    sms = sms_of(place_order(owner=shop))
    services.notification_send(notification_id=sms.pk)
    Notification.objects.filter(pk=sms.pk).update(next_attempt_at=timezone.now())  # the retry is due
    assert services.notification_send(notification_id=sms.pk).outcome == "sent"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.last_error_code, sms.last_error_message) == ("sent", 2, "", "")
    assert list(sms.attempt_log.order_by("number").values_list("error_code", flat=True)) == ["twilio-20429", ""]


def test_a_retry_arriving_early_waits_for_its_time(shop, published, scripted):
    scripted.script.append(TransientDeliveryError("Twilio 500: oops", code="http-500"))
    sms = sms_of(place_order(owner=shop))
    services.notification_send(notification_id=sms.pk)
    early = services.notification_send(notification_id=sms.pk)
    assert early.outcome == "deferred"
    assert 55 < early.retry_in <= 66
    assert scripted.sent == []


def channel_pauses(channel: str) -> float:
    return REGISTRY.get_sample_value("orderflow_channel_pauses_total", {"channel": channel}) or 0.0


def another_workers_limiter(settings) -> ChannelRateLimiter:
    """The SMS limiter as another worker process has it: its own object and connection."""
    return ChannelRateLimiter(channel="sms", rate=settings.NOTIFICATIONS_SMS_RATE_LIMIT, redis_url=settings.REDIS_URL)


def test_too_many_requests_pauses_the_channel_for_every_worker_and_the_retry_waits_as_asked(
    shop, published, scripted, settings, monkeypatch, caplog
):
    monkeypatch.setattr(services, "TOKEN_WAIT_SECONDS", 0)
    throttled, waiting = (sms_of(place_order(owner=shop)) for _ in range(2))
    pauses = channel_pauses("sms")
    scripted.script.append(
        TransientDeliveryError("Twilio 20429: Too Many Requests", code="twilio-20429", retry_after=90, throttled=True)
    )
    result = services.notification_send(notification_id=throttled.pk)
    assert result.outcome == "retry"
    assert result.retry_in == 90  # more than the backoff's 60 to 66 s
    throttled.refresh_from_db()
    assert throttled.next_attempt_at >= timezone.now() + timedelta(seconds=89)

    other = another_workers_limiter(settings)
    assert 89 < other.redis.pttl(other.pause_key) / 1000 <= 90
    assert not other.acquire(timeout=0)
    # The rest of the backlog waits for a token, in the broker, without using up an attempt.
    assert services.notification_send(notification_id=waiting.pk).outcome == "deferred"
    waiting.refresh_from_db()
    assert (waiting.status, waiting.attempts) == ("queued", 0)
    assert scripted.sent == []
    assert channel_pauses("sms") == pauses + 1
    [paused] = [record for record in caplog.records if record.getMessage().startswith("notification.channel_paused")]
    assert paused.levelname == "WARNING"
    assert (paused.seconds, paused.code) == (90, "twilio-20429")


def test_a_retry_that_waits_for_an_operator_to_fix_a_setting_is_logged_as_an_error_naming_it(
    shop, published, scripted, caplog
):
    notification = sms_of(place_order(owner=shop))
    scripted.script.append(
        TransientDeliveryError("Twilio 20003: Authenticate", code="twilio-20003", setting_to_fix="TWILIO_AUTH_TOKEN")
    )
    scripted.script.append(TransientDeliveryError("Twilio HTTP 500", code="http-500"))
    for _ in range(2):
        assert services.notification_send(notification_id=notification.pk).outcome == "retry"
        Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())  # the retry is due
    first, second = (record for record in caplog.records if record.getMessage().startswith("notification.retry"))
    assert (first.levelname, first.check) == ("ERROR", "TWILIO_AUTH_TOKEN")
    assert second.levelname == "INFO" and not hasattr(second, "check")


def test_too_many_requests_without_a_retry_after_pauses_for_the_default_and_retries_on_the_backoff(
    shop, published, scripted, settings, monkeypatch
):
    monkeypatch.setattr(services, "THROTTLE_PAUSE_SECONDS", 30)  # long enough to be read back
    scripted.script.append(TransientDeliveryError("Twilio HTTP 429", code="http-429", throttled=True))
    result = services.notification_send(notification_id=sms_of(place_order(owner=shop)).pk)
    assert 60 <= result.retry_in <= 66
    other = another_workers_limiter(settings)
    assert 29 < other.redis.pttl(other.pause_key) / 1000 <= 30


def test_a_provider_down_until_a_time_pauses_the_channel_that_long_within_the_backoff_cap(
    shop, published, scripted, settings
):
    settings.NOTIFICATIONS_RETRY_BACKOFF_MAX = 300
    scripted.script.append(TransientDeliveryError("Twilio HTTP 503", code="http-503", retry_after=7200))
    result = services.notification_send(notification_id=sms_of(place_order(owner=shop)).pk)
    assert result.retry_in == 300
    other = another_workers_limiter(settings)
    assert 299 < other.redis.pttl(other.pause_key) / 1000 <= 300


def test_an_error_that_asks_for_no_wait_pauses_nothing(shop, published, scripted, settings):
    scripted.script.append(TransientDeliveryError("Twilio HTTP 500", code="http-500"))
    services.notification_send(notification_id=sms_of(place_order(owner=shop)).pk)
    assert another_workers_limiter(settings).acquire(timeout=0)


@pytest.mark.parametrize("error", [LimiterUnavailable("Connection refused"), SoftTimeLimitExceeded()])
def test_a_pause_that_cannot_be_set_still_records_the_failure(shop, published, scripted, monkeypatch, caplog, error):
    def fails(self, seconds):
        raise error

    monkeypatch.setattr(ChannelRateLimiter, "pause", fails)
    scripted.script.append(TransientDeliveryError("Twilio 20429", code="twilio-20429", retry_after=5, throttled=True))
    sms = sms_of(place_order(owner=shop))
    assert services.notification_send(notification_id=sms.pk).outcome == "retry"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.last_error_code) == ("failed", 1, "twilio-20429")
    assert any(record.getMessage().startswith("notification.channel_not_paused") for record in caplog.records)


def test_exhausted_retries_go_dead_with_a_dead_letter(shop, published, scripted):
    scripted.script.extend(TransientDeliveryError("Twilio 500: oops", code="http-500") for _ in range(3))
    sms = sms_of(place_order(owner=shop))
    outcomes = []
    for _ in range(3):
        outcomes.append(services.notification_send(notification_id=sms.pk, task_id="t-1").outcome)
        Notification.objects.filter(pk=sms.pk).update(next_attempt_at=timezone.now())  # the backoff passes
    assert outcomes == ["retry", "retry", "dead"]
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == ("dead", 3)
    letter = DeadLetter.objects.get()
    assert (letter.task_name, letter.args, letter.queue, letter.attempts) == (
        "notifications.tasks.send_sms_notification",
        [sms.pk],
        "sms",
        3,
    )
    assert letter.message == "gave up after 3 attempts; last: Twilio 500: oops"
    assert letter.first_failed_at < letter.last_failed_at
    assert list(sms.attempt_log.values_list("outcome", flat=True)) == ["transient"] * 3


def test_permanent_error_goes_dead_at_once(shop, published, scripted):
    scripted.script.append(PermanentDeliveryError("Twilio 21211: invalid number", code="twilio-21211"))
    sms = sms_of(place_order(owner=shop))
    assert services.notification_send(notification_id=sms.pk).outcome == "dead"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == ("dead", 1)
    assert DeadLetter.objects.get().message == "Twilio 21211: invalid number"


def test_an_unclassified_error_goes_dead_with_its_traceback(shop, published, scripted):
    scripted.script.append(KeyError("surprise"))
    sms = sms_of(place_order(owner=shop))
    assert services.notification_send(notification_id=sms.pk).outcome == "dead"
    letter = DeadLetter.objects.get()
    assert letter.exception_type == "builtins.KeyError"
    assert "KeyError: 'surprise'" in letter.traceback


def test_waiting_for_a_token_never_uses_an_attempt(shop, published, scripted, monkeypatch):
    monkeypatch.setattr(ChannelRateLimiter, "acquire", lambda self, *, timeout: False)
    sms = sms_of(place_order(owner=shop))
    result = services.notification_send(notification_id=sms.pk)
    assert result.outcome == "deferred"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == ("queued", 0)
    assert scripted.sent == []


def test_unreachable_limiter_sends_nothing_and_waits(shop, published, scripted, monkeypatch):
    def down(self, *, timeout):
        raise LimiterUnavailable("connection refused")

    monkeypatch.setattr(ChannelRateLimiter, "acquire", down)
    sms = sms_of(place_order(owner=shop))
    result = services.notification_send(notification_id=sms.pk)
    assert (result.outcome, result.retry_in) == ("deferred", services.LIMITER_DOWN_RETRY_SECONDS)
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == ("queued", 0)
    assert scripted.sent == []


def test_a_backend_its_configuration_breaks_sends_nothing_and_gives_the_claim_back(
    shop, published, settings, monkeypatch
):
    settings.SMS_BACKEND = "notifications.backends.sms.TwilioBackend"
    settings.TWILIO_API_BASE_URL = "https://api.twilio.com"
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    backends._sms_backend.cache_clear()
    try:
        sms = sms_of(place_order(owner=shop))
        result = services.notification_send(notification_id=sms.pk)
    finally:
        backends._sms_backend.cache_clear()
    assert (result.outcome, result.retry_in) == ("deferred", services.BACKEND_UNUSABLE_RETRY_SECONDS)
    assert "HTTPS_PROXY" in result.detail
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == ("queued", 0)


def test_an_sms_backend_that_cannot_be_imported_sends_nothing_and_names_the_variable(shop, published, settings):
    settings.SMS_BACKEND = "notifications.backends.sms.NoSuchBackend"
    sms = sms_of(place_order(owner=shop))
    result = services.notification_send(notification_id=sms.pk)
    assert (result.outcome, result.retry_in) == ("deferred", services.BACKEND_UNUSABLE_RETRY_SECONDS)
    assert "SMS_BACKEND: cannot import 'notifications.backends.sms.NoSuchBackend'" in result.detail
    sms.refresh_from_db()
    assert (sms.status, sms.attempts) == ("queued", 0)


@pytest.mark.django_db(transaction=True)  # the write is retried outside any test transaction, as in a worker
def test_an_outcome_the_database_refuses_at_first_is_written_when_it_answers(shop, published, scripted):
    sms = sms_of(place_order(owner=shop))
    refusals = RefusedStatements(RECORDS, OperationalError("the database system is shutting down"))
    with connection.execute_wrapper(refusals):
        assert services.notification_send(notification_id=sms.pk).outcome == "sent"
    assert not refusals.errors, "the record was never refused; nothing was tested"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.attempt_log.count()) == ("sent", 1, 1)
    assert len(scripted.sent) == 1  # recorded, not left claimed to be sent again after its lease


def records_deferred(channel: str) -> float:
    return REGISTRY.get_sample_value("orderflow_notification_records_deferred_total", {"channel": channel}) or 0.0


def refused_once() -> RefusedStatements:
    return RefusedStatements(RECORDS, OperationalError("connection to server failed: Connection refused"))


def test_an_outcome_the_database_refuses_past_the_retry_time_is_carried_to_the_next_run(
    shop, published, scripted, record_path, monkeypatch
):
    sms = sms_of(place_order(owner=shop))
    monkeypatch.setattr(services, "RECORD_RETRY_SECONDS", 0)  # give up at the first refusal
    deferred_before = records_deferred("sms")
    with connection.execute_wrapper(refused_once()):
        first = services.notification_send(notification_id=sms.pk, worker="sms@host")
    assert (first.outcome, first.retry_in) == ("unrecorded", services.RECORD_LATER_SECONDS)
    assert records_deferred("sms") == deferred_before + 1
    assert (first.sent.channel, first.sent.attempt) == ("sms", 1)
    assert Notification.objects.get(pk=sms.pk).status == "sending"  # claimed, not yet written down

    second = services.notification_record_sent(notification_id=sms.pk, sent=first.sent, worker="sms@host")
    assert second.outcome == "sent"
    sms.refresh_from_db()
    attempt = sms.attempt_log.get()
    assert (sms.status, sms.attempts, sms.provider_message_id) == ("sent", 1, first.sent.provider_message_id)
    assert (attempt.number, attempt.outcome, attempt.provider_message_id) == (1, "sent", sms.provider_message_id)
    assert sms.sent_at == attempt.finished_at == first.sent.finished_at  # when the provider answered
    assert len(scripted.sent) == 1  # written down, never sent again


def test_a_carried_send_is_carried_again_while_the_database_is_away(shop, published, scripted, monkeypatch):
    sms = sms_of(place_order(owner=shop))
    monkeypatch.setattr(services, "RECORD_RETRY_SECONDS", 0)
    with connection.execute_wrapper(refused_once()):
        first = services.notification_send(notification_id=sms.pk)

    def database_away(execute, sql, params, many, context):
        raise OperationalError("connection to server failed: Connection refused")

    with connection.execute_wrapper(database_away):
        again = services.notification_record_sent(notification_id=sms.pk, sent=first.sent)
    assert (again.outcome, again.retry_in, again.sent) == ("unrecorded", services.RECORD_LATER_SECONDS, first.sent)
    assert services.notification_record_sent(notification_id=sms.pk, sent=again.sent).outcome == "sent"
    assert len(scripted.sent) == 1


@pytest.mark.django_db(transaction=True)  # the connection is closed and opened again, as a worker's
def test_an_outcome_the_soft_time_limit_interrupts_is_carried_to_the_next_run(shop, published, scripted):
    sms = sms_of(place_order(owner=shop))
    strikes = RefusedStatements(RECORDS, SoftTimeLimitExceeded())
    with connection.execute_wrapper(strikes):
        first = services.notification_send(notification_id=sms.pk)
    assert not strikes.errors, "the soft time limit never struck; nothing was tested"
    assert first.outcome == "unrecorded"

    assert services.notification_record_sent(notification_id=sms.pk, sent=first.sent).outcome == "sent"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.attempt_log.count()) == ("sent", 1, 1)
    assert len(scripted.sent) == 1


def test_an_error_other_than_the_database_away_is_not_carried(shop, published, scripted):
    """A defect (here a value the column refuses) goes up: carrying it would retry for ever."""
    sms = sms_of(place_order(owner=shop))
    too_long = RefusedStatements(RECORDS, DataError("value too long for type character varying(300)"))
    with connection.execute_wrapper(too_long), pytest.raises(DataError):
        services.notification_send(notification_id=sms.pk)


def test_a_carried_send_written_twice_keeps_one_attempt(shop, published, scripted, record_path):
    """A retry's message delivered twice: the second finds it written and writes nothing more."""
    sms = sms_of(place_order(owner=shop))
    services._claim(sms.pk)
    now = timezone.now()
    sent = services.SentMessage("sms", "SM1", 1, now, now)
    assert services.notification_record_sent(notification_id=sms.pk, sent=sent).outcome == "sent"
    assert services.notification_record_sent(notification_id=sms.pk, sent=sent).outcome == "sent"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.provider_message_id, sms.attempt_log.count()) == ("sent", 1, "SM1", 1)
    assert scripted.sent == []  # nothing goes to the provider from a carried send


def test_a_record_written_twice_keeps_one_attempt(shop, published, scripted, record_path, monkeypatch):
    """A commit whose reply was lost is written again; the attempt must not be logged twice."""
    sms = sms_of(place_order(owner=shop))
    until_written = services._until_written
    monkeypatch.setattr(services, "_until_written", lambda write: (write(), until_written(write)))
    services.notification_send(notification_id=sms.pk)
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.attempt_log.count()) == ("sent", 1, 1)


def test_a_failure_written_twice_keeps_one_attempt(shop, published, scripted, monkeypatch):
    sms = sms_of(place_order(owner=shop))
    scripted.script.append(TransientDeliveryError("busy", code="http-503"))
    until_written = services._until_written
    monkeypatch.setattr(services, "_until_written", lambda write: (write(), until_written(write)))
    assert services.notification_send(notification_id=sms.pk).outcome == "retry"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.attempt_log.count()) == ("failed", 1, 1)


def test_send_of_a_missing_notification_is_skipped(scripted):
    assert services.notification_send(notification_id=10**9).outcome == "skipped"


@pytest.mark.parametrize(("attempt", "base"), [(1, 60), (2, 120), (3, 240), (4, 480), (5, 600), (9, 600)])
def test_retry_delay_doubles_up_to_the_cap_with_jitter(settings, attempt, base):
    settings.NOTIFICATIONS_RETRY_BACKOFF, settings.NOTIFICATIONS_RETRY_BACKOFF_MAX = 60, 600
    delays = [services.retry_delay(attempt) for _ in range(50)]
    assert all(base <= delay <= base * 1.1 for delay in delays)
    assert len(set(delays)) > 1


def test_a_send_accepted_without_an_id_is_recorded_sent_not_sent_again(shop, monkeypatch, caplog):
    order = place_order(owner=shop, customer_email="")
    sms = order.notifications.get()
    monkeypatch.setattr(backends.get_backend("sms"), "send", lambda **_: None)  # a provider's 201 without a sid
    assert services.notification_send(notification_id=sms.pk).outcome == "sent"
    sms.refresh_from_db()
    assert (sms.status, sms.provider_message_id, sms.attempts) == ("sent", "", 1)
    assert sms.attempt_log.get().provider_message_id == ""
    assert "notification.odd_message_id" in caplog.text


def test_a_provider_error_code_longer_than_its_column_is_cut_not_refused(shop, monkeypatch):
    order = place_order(owner=shop, customer_email="")
    sms = order.notifications.get()
    code = "twilio-MESSAGE_BODY_REJECTED_BY_DOWNSTREAM_CARRIER_FILTER"

    def refuse(**_):
        raise PermanentDeliveryError("carrier filter", code=code)

    monkeypatch.setattr(backends.get_backend("sms"), "send", refuse)
    assert services.notification_send(notification_id=sms.pk).outcome == "dead"
    sms.refresh_from_db()
    assert (sms.status, sms.last_error_code) == ("dead", code[:50])
    assert DeadLetter.objects.get(notification=sms).error_code == code[:50]


def test_a_send_task_outlives_its_longest_token_wait_and_provider_call(shop, published, monkeypatch):
    """The soft time limit striking after the provider took a message would have it sent again;
    and a claim must outlast its task, or a live worker's send is taken over and made twice."""
    waits = {}

    class RecordingLimiter:
        def __init__(self, channel):
            self.channel = channel

        def acquire(self, *, timeout):
            waits[self.channel] = timeout
            return True

    monkeypatch.setattr(services, "limiter_for", RecordingLimiter)
    order = place_order(owner=shop)
    for notification in order.notifications.all():
        assert services.notification_send(notification_id=notification.pk).outcome == "sent"
    provider_call = {"sms": 2 * TWILIO_TIMEOUT_SECONDS, "email": BoundedEmailBackend.conversation_seconds}
    task = {"sms": tasks.send_sms_notification, "email": tasks.send_email_notification}
    assert set(waits) == set(provider_call)
    for channel, wait in waits.items():
        token = wait + ratelimit.LONGEST_CALL_SECONDS  # the wait may overrun by one call to Redis
        assert token + provider_call[channel] < task[channel].soft_time_limit < task[channel].time_limit


def test_each_channel_claims_for_longer_than_its_send_task_may_live(shop, published, settings):
    settings.NOTIFICATIONS_STUCK_AFTER = 5
    order = place_order(owner=shop)
    for channel, task in (("sms", tasks.send_sms_notification), ("email", tasks.send_email_notification)):
        notification = order.notifications.get(channel=channel)
        before = timezone.now()
        claimed = services._claim(notification.pk)
        lease = (claimed.stale_after - before).total_seconds()
        assert task.time_limit < lease < task.time_limit + 15, channel
    assert services.sending_lease_seconds("email") > services.sending_lease_seconds("sms")


def test_a_send_left_unrecorded_logs_its_message_id_whole(monkeypatch, caplog):
    """The line to find a sent but unrecorded email by in the mail server's logs."""

    def database_away(**_):
        raise OperationalError("connection refused")

    monkeypatch.setattr(Notification.objects, "filter", database_away)
    now = timezone.now()
    sent = services.SentMessage("email", "<1764.1.2@shop.example>", 1, now, now)
    with caplog.at_level("WARNING", logger="notifications.services"):
        assert services.notification_record_sent(notification_id=7, sent=sent).outcome == "unrecorded"
    [record] = [record for record in caplog.records if record.getMessage().startswith("notification.unrecorded")]
    MaskingFilter().filter(record)
    assert "provider_message_id=<1764.1.2@shop.example>" in record.getMessage()
    assert record.provider_message_id == "<1764.1.2@shop.example>"


def test_every_send_of_one_email_carries_one_message_id(shop, published, mailoutbox, monkeypatch):
    """Mail systems that drop a Message-ID they already delivered then show a repeated send once."""

    class AlwaysAToken:
        def __init__(self, channel):
            pass

        def acquire(self, *, timeout):
            return True

    monkeypatch.setattr(services, "limiter_for", AlwaysAToken)
    first, other = (Notification.objects.get(order=place_order(owner=shop), channel="email") for _ in range(2))
    assert services.notification_send(notification_id=first.pk).outcome == "sent"
    services.notification_resend(notification_id=first.pk, by=shop)
    assert services.notification_send(notification_id=first.pk).outcome == "sent"
    assert services.notification_send(notification_id=other.pk).outcome == "sent"
    first.refresh_from_db()
    ids = [message.extra_headers["Message-ID"] for message in mailoutbox]
    assert ids[0] == ids[1] == first.provider_message_id
    assert ids[2] != ids[0] and ids[0].endswith("@localhost>")
