"""Every write to notifications: the outbox rows, publishing, claiming, sending and recording.

A send is claim (commit), send (no transaction held), record (commit). Whether a failure is
retried is decided here from the error's class, and nowhere else.
"""

import contextlib
import logging
import random
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Lower
from django.db.models.lookups import In
from django.db.models.sql import Query
from django.utils import timezone
from django.utils.crypto import salted_hmac

from notifications import broker, metrics
from notifications.backends import get_backend
from notifications.backends.sms import RECIPIENT_REFUSING_TWILIO_CODES
from notifications.backends.smtp import SMTP_CONVERSATION_SECONDS
from notifications.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from notifications.events import log_event
from notifications.fingerprints import fingerprint
from notifications.models import (
    FINISHED_STATUSES,
    PROVIDER_MESSAGE_ID_LENGTH,
    RECIPIENT_SEARCHED,
    UNFINISHED_STATUSES,
    WAITING,
    Channel,
    DeadLetter,
    DeadLetterStatus,
    Event,
    Notification,
    NotificationAttempt,
    NotificationStatus,
    RecipientCorrection,
    Suppression,
)
from notifications.ratelimit import LONGEST_CALL_SECONDS, LimiterUnavailable, limiter_for
from notifications.rendering import render_notification
from orderflow.connectivity import database_error_line
from orderflow.database import prepared_cursor
from orderflow.errors import ApplicationError, Conflict, NotFound
from orderflow.masking import mask_recipient
from orders.models import Order
from orders.phones import phone_to_e164

logger = logging.getLogger(__name__)

CHANNEL_TASKS = {
    Channel.SMS: "notifications.tasks.send_sms_notification",
    Channel.EMAIL: "notifications.tasks.send_email_notification",
}
# Seconds. The longest a provider call may take: a Twilio request 10 s to connect and 10 s to
# answer (backends.sms.TWILIO_TIMEOUT_SECONDS; not imported, the web process has no need of the
# library); an SMTP conversation is cut at its bound (backends/smtp.py), however slow its replies.
PROVIDER_CALL_SECONDS = {Channel.SMS: 20, Channel.EMAIL: SMTP_CONVERSATION_SECONDS}
# The longest a send waits for a rate-limit token; without one by then it gives its claim back.
TOKEN_WAIT_SECONDS = 25
# A send task is interrupted at its soft limit and killed at its hard one. The soft limit comes
# after the longest token wait (with its last call to Redis), the provider call, and 2 s for the
# claim and the record: a limit striking after the provider took the message would have it sent again.
SEND_SOFT_TIME_LIMITS = {
    channel: TOKEN_WAIT_SECONDS + LONGEST_CALL_SECONDS + seconds + 2
    for channel, seconds in PROVIDER_CALL_SECONDS.items()
}
SEND_TIME_LIMITS = {channel: seconds + 10 for channel, seconds in SEND_SOFT_TIME_LIMITS.items()}
# How long to wait before trying again when Redis (the rate limiter) does not answer.
LIMITER_DOWN_RETRY_SECONDS = 15
# last_error_code of a notification cancelled unsent because its recipient is suppressed.
SUPPRESSED_CODE = "suppressed"
# last_error_code and _message of a notification an operator cancelled: it is why it was not
# sent, not the provider's error of an earlier attempt (that stays in its attempt log). The
# message names the operator for the admin; the API shows a shop CANCELLED_MESSAGE alone.
CANCELLED_CODE = "cancelled"
CANCELLED_MESSAGE = "not sent: cancelled by an operator"
# How long a channel pauses when its provider says "too many requests" without a Retry-After.
THROTTLE_PAUSE_SECONDS = 1.0
# A channel backend that cannot be built (its configuration) is tried again this often, unsent.
BACKEND_UNUSABLE_RETRY_SECONDS = 60
# How long a worker keeps trying to write down what it already knows (the provider's answer, a
# claim given back) while the database is away, e.g. restarting. A soft time limit striking
# meanwhile hands a send made to the task's next run (RECORD_LATER_ERRORS), to be written then.
RECORD_RETRY_SECONDS = 8
# A send made whose outcome could still not be written is carried by the task's next run this
# much later, to be written then (SentMessage), not sent again.
RECORD_LATER_SECONDS = 5
# How long a send waits for the database at its claim before its message goes back to the end
# of its queue (tasks._send): with the database away, a worker holds one message per pool
# process, not the backlog as countdowns in its memory. Counted in the token wait
# (TOKEN_WAIT_SECONDS), so that the soft time limit still comes after both.
CLAIM_DATABASE_WAIT_SECONDS = 10


@dataclass(frozen=True)
class SentMessage:
    """A message the provider accepted: all that recording it needs, also in a later task run."""

    channel: str
    provider_message_id: str
    attempt: int
    started_at: datetime
    finished_at: datetime

    def as_task_argument(self) -> dict:
        return {
            "channel": self.channel,
            "provider_message_id": self.provider_message_id,
            "attempt": self.attempt,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
        }

    @classmethod
    def from_task_argument(cls, value: dict) -> "SentMessage":
        return cls(
            channel=value["channel"],
            provider_message_id=value["provider_message_id"],
            attempt=value["attempt"],
            started_at=datetime.fromisoformat(value["started_at"]),
            finished_at=datetime.fromisoformat(value["finished_at"]),
        )


@dataclass(frozen=True)
class SendResult:
    outcome: str  # sent | retry | dead | deferred | waiting | skipped | unrecorded
    retry_in: float | None = None  # set when the task should run again after this many seconds
    detail: str = ""
    sent: SentMessage | None = None  # unrecorded: the send made, for the task's next run to write down


# --- outbox ---------------------------------------------------------------------------------


def notifications_create(
    *, order, event: str, channels=(Channel.SMS, Channel.EMAIL), items: list | None = None
) -> list[Notification]:
    """Write the outbox rows for one order event: one per channel the customer can be reached on.

    Runs inside the order's transaction; an event already written for a channel is not written again.
    """
    recipients = {Channel.SMS: order.customer_phone, Channel.EMAIL: order.customer_email}
    now = timezone.now()
    if items is None and event == Event.PLACED:  # only the confirmation lists the items
        items = list(order.items.all())
    rows = []
    for channel in channels:
        if not recipients[channel]:
            continue
        rendered = render_notification(order=order, items=items, event=event, channel=channel)
        rows.append(
            Notification(
                order=order,
                channel=channel,
                event=event,
                dedup_key=Notification.make_dedup_key(order.pk, event, channel),
                recipient=recipients[channel],
                subject=rendered.subject,
                body=rendered.body,
                html_body=rendered.html_body,
                # Queued as the order commits; a publish that fails turns them pending for the sweep.
                status=NotificationStatus.QUEUED,
                queued_at=now,
            )
        )
    if not rows:
        return []
    # No log line here: the rows are not real until the order commits, and the web process
    # writes the order's own; each row's story starts with notification.published.
    _insert_outbox(rows)
    return rows


def _insert_outbox(rows: list[Notification]) -> None:
    """Insert the rows in one statement and give each its id, also a row an earlier run wrote
    (the no-op update keeps what it holds; publishing it again sends nothing twice).

    Written out because it runs in every order's transaction: Django's bulk_create, which
    adapts each column as an array, cost twice the CPU for the same statement.
    """
    fields = [field for field in Notification._meta.concrete_fields if not field.primary_key]
    row_sql = f"({', '.join(['%s'] * len(fields))})"
    params = [field.get_db_prep_save(field.pre_save(row, add=True), connection) for row in rows for field in fields]
    with prepared_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Notification._meta.db_table} ({', '.join(field.column for field in fields)})"  # noqa: S608
            f" VALUES {', '.join([row_sql] * len(rows))}"
            " ON CONFLICT (dedup_key) DO UPDATE SET dedup_key = EXCLUDED.dedup_key"
            " RETURNING id, dedup_key",
            params,
        )
        ids = {dedup_key: pk for pk, dedup_key in cursor.fetchall()}
    for row in rows:
        row.pk = ids[row.dedup_key]
        row._state.adding, row._state.db = False, connection.alias


def publish_after_commit(publish, *args, **kwargs) -> None:
    """Call `publish(*args, **kwargs)` once the surrounding transaction commits. Whatever it
    raises is logged and goes no further: the rows are committed, the sweep publishes them later,
    and the request that wrote them must not fail.

    Django logs such a failure by the callback's __qualname__, which a functools.partial lacks:
    the logging itself failed, and the order just committed answered 500.
    """

    def after_commit():
        publish(*args, **kwargs)

    after_commit.__qualname__ = f"{publish.__qualname__} (after commit)"
    transaction.on_commit(after_commit, robust=True)


def notifications_publish_on_commit(notifications: list[Notification]) -> None:
    """Publish notifications once the surrounding transaction commits."""
    jobs = [_channel_job(row.pk, row.channel) for row in notifications]
    if jobs:
        publish_after_commit(_publish, jobs)


def notifications_queue_for_event(*, order_id: int, event: str, channels) -> int:
    """Make sure an order event's notifications exist on `channels` and are published, outside
    the order's own transaction (the send_order_* tasks); how many.

    NotFound for an order that is not there; ApplicationError for a status the order is not in
    (never reached, or left), which its customer must not be told about. The order's row is
    locked first, as a status change does before it writes them and a correction before it
    locks them: the insert locks an existing row it meets (ON CONFLICT).
    """
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first()
        if order is None:
            raise NotFound(f"Order {order_id} does not exist; nothing is queued.")
        if event != Event.PLACED and order.status != event:
            # Nor one it has left: the customer would read it after the news that followed it.
            raise ApplicationError(f"Order {order.pk} is {order.status}, not {event}; nothing is queued.")
        notifications = notifications_create(order=order, event=event, channels=channels)
        notifications_publish_on_commit(notifications)
    return len(notifications)


def notifications_publish(*, notifications: list[tuple[int, str]]) -> int:
    """Hand (id, channel) pairs to their channel queues; return how many were published.

    With the broker down the rest stay `pending`, due for the next sweep.
    """
    return publish_jobs([_channel_job(notification_id, channel) for notification_id, channel in notifications])


@dataclass(frozen=True)
class PublishJob:
    """A message to publish, and the notification it is for (None: none, e.g. a sweep's task)."""

    notification_id: int | None
    message: broker.Message


# Messages published together, in one round trip on Redis; each batch is confirmed before the next.
PUBLISH_BATCH_SIZE = 500


def _channel_job(notification_id: int, channel: str) -> PublishJob:
    return PublishJob(notification_id, broker.Message(CHANNEL_TASKS[channel], [notification_id]))


def publish_jobs(jobs: list[PublishJob]) -> int:
    """Publish messages for pending notifications and mark them queued; return how many went out."""
    published = _publish(jobs)
    if published:
        # A worker may already have claimed one, or made it wait for an earlier one of its
        # order: only rows still pending to be published become queued.
        Notification.objects.filter(pk__in=published, status=NotificationStatus.PENDING).exclude(WAITING).update(
            status=NotificationStatus.QUEUED, queued_at=timezone.now(), stale_after=None
        )
    return len(published)


def _publish(jobs: list[PublishJob]) -> list[int | None]:
    """Publish batch by batch until publishing fails; what is left becomes pending, due for the sweep."""
    published = []
    try:
        for start in range(0, len(jobs), PUBLISH_BATCH_SIZE):
            batch = jobs[start : start + PUBLISH_BATCH_SIZE]
            task_ids = broker.publish_many([job.message for job in batch])
            for job, task_id in zip(batch, task_ids, strict=True):
                published.append(job.notification_id)
                logger.info(
                    "notification.published notification_id=%s task_id=%s task=%s",
                    job.notification_id,
                    task_id,
                    job.message.task_name,
                    extra={
                        "event": "notification.published",
                        "notification_id": job.notification_id,
                        "task_id": task_id,
                    },
                )
    except Exception as error:
        left = [job.notification_id for job in jobs[len(published) :]]
        if isinstance(error, broker.BrokerUnavailable):
            logger.warning("broker unavailable, %d notification(s) left for the sweep: %s", len(left), error)
        else:  # a defect, or a setting that breaks publishing (a result backend that cannot load): in full
            logger.exception("publishing failed, %d notification(s) left for the sweep", len(left))
        # A row a worker made wait for an earlier one of its order has no message to lose.
        Notification.objects.filter(
            pk__in=left, status__in=[NotificationStatus.PENDING, NotificationStatus.QUEUED]
        ).exclude(WAITING).update(status=NotificationStatus.PENDING, stale_after=timezone.now())
    return published


# --- sending --------------------------------------------------------------------------------


def notification_send(*, notification_id: int, task_id: str = "", worker: str = "") -> SendResult:
    """Claim a notification, wait for a rate-limit token, send it and record what happened.

    OperationalError or InterfaceError: the database stayed away, or kept failing, longer than
    the claim waits for it (CLAIM_DATABASE_WAIT_SECONDS), or than a claim given back or a failed
    attempt is written again (RECORD_RETRY_SECONDS).
    """
    waits_end = time.monotonic() + TOKEN_WAIT_SECONDS  # for the database at the claim and for the token
    claimed = _while_the_database_is_away(
        partial(_claim, notification_id), seconds=CLAIM_DATABASE_WAIT_SECONDS, doing="claiming"
    )
    if isinstance(claimed, SendResult):
        logger.info(
            "notification.not_claimed notification_id=%s task_id=%s outcome=%s detail=%s",
            notification_id,
            task_id,
            claimed.outcome,
            claimed.detail,
            extra={"event": "notification.not_claimed", "notification_id": notification_id, "task_id": task_id},
        )
        return claimed
    notification = claimed
    log_event("notification.claimed", notification, task_id=task_id, worker=worker)

    try:
        backend = get_backend(notification.channel)  # built before the token, so the send follows it at once
    except ImproperlyConfigured as error:  # e.g. an unusable proxy: nothing can go until an operator fixes it
        log_event("notification.deferred", notification, level=logging.WARNING, task_id=task_id, reason=str(error))
        _release(notification)
        return SendResult("deferred", retry_in=BACKEND_UNUSABLE_RETRY_SECONDS, detail=f"backend unusable: {error}")
    waited_from = time.monotonic()
    try:
        has_token = limiter_for(notification.channel).acquire(timeout=max(0.0, waits_end - time.monotonic()))
    except LimiterUnavailable as error:
        log_event(
            "notification.deferred",
            notification,
            level=logging.WARNING,
            task_id=task_id,
            reason=f"rate limiter unavailable: {error}",
        )
        _release(notification)
        return SendResult("deferred", retry_in=LIMITER_DOWN_RETRY_SECONDS, detail="rate limiter unavailable")
    metrics.RATE_LIMIT_WAIT_SECONDS.labels(notification.channel).observe(time.monotonic() - waited_from)
    if not has_token:
        log_event("notification.deferred", notification, task_id=task_id, reason="no rate-limit token yet")
        _release(notification)
        return SendResult("deferred", retry_in=0, detail="no rate-limit token yet")

    started_at = timezone.now()
    try:
        provider_message_id = backend.send(
            recipient=notification.recipient,
            subject=notification.subject,
            body=notification.body,
            html_body=notification.html_body,
            reference=notification_reference(notification),
        )
    except SoftTimeLimitExceeded as error:
        failure = TransientDeliveryError("send timed out", code="timeout")
        failure.__cause__ = error
        return _record_failure(notification, failure, started_at=started_at, task_id=task_id, worker=worker)
    except DeliveryError as error:
        return _record_failure(notification, error, started_at=started_at, task_id=task_id, worker=worker)
    except Exception as error:
        # A failure no backend classified is a defect: stop and show it rather than retry blindly.
        failure = PermanentDeliveryError(f"unexpected {error.__class__.__name__}: {error}", code="unexpected")
        failure.__cause__ = error
        return _record_failure(notification, failure, started_at=started_at, task_id=task_id, worker=worker)
    finished_at = timezone.now()
    provider_message_id = _storable_message_id(provider_message_id, notification)
    metrics.SENDS.labels(notification.channel).inc()
    metrics.SEND_SECONDS.labels(notification.channel).observe((finished_at - started_at).total_seconds())
    sent = SentMessage(notification.channel, provider_message_id, notification.attempts + 1, started_at, finished_at)
    return _record_sent(notification, sent, task_id=task_id, worker=worker)


def notification_reference(notification: Notification) -> str:
    """The same for every send of one notification, and not guessable: an email's Message-ID is
    made from it, so a mail system that drops a Message-ID it already delivered shows a send
    repeated (an answer lost, a requeue) once. Not the bare id: a customer would read the shop's
    volume in it."""
    return salted_hmac(
        "notifications.reference", f"{notification.pk}:{notification.created_at.isoformat()}"
    ).hexdigest()[:32]


def _storable_message_id(provider_message_id, notification: Notification) -> str:
    """The provider's id as the record can hold it. A send the provider accepted must be written
    down whatever id came back (none, one too long): a record refused would send it again."""
    stored = str(provider_message_id or "").replace("\x00", "")[:PROVIDER_MESSAGE_ID_LENGTH]
    if stored != provider_message_id:
        log_event(
            "notification.odd_message_id",
            notification,
            level=logging.WARNING,
            given=repr(provider_message_id)[:80],
            stored=stored,
        )
    return stored


def retry_delay(attempt: int) -> float:
    """Seconds before retry number `attempt` (1, 2, ...): exponential, capped, plus up to 10% jitter."""
    base = min(settings.NOTIFICATIONS_RETRY_BACKOFF * 2 ** (attempt - 1), settings.NOTIFICATIONS_RETRY_BACKOFF_MAX)
    return base + random.uniform(0, base / 10)


def sending_lease_seconds(channel: str) -> int:
    # Longer than a send task on `channel` can live, so a live worker's claim is never taken over.
    return max(settings.NOTIFICATIONS_STUCK_AFTER, SEND_TIME_LIMITS[channel] + 10)


# The statements' shared parts, from the models.
NOTIFICATIONS_TABLE = Notification._meta.db_table
CLAIMABLE_SQL = """(status IN ('pending', 'queued')
            OR (status = 'failed' AND next_attempt_at <= %(now)s)
            OR (status = 'sending' AND stale_after <= %(now)s))"""
UNFINISHED_SQL = ", ".join(f"'{status}'" for status in UNFINISHED_STATUSES)


def _to_go(row: str) -> str:
    """SQL: the notification `row` (a table alias) is still to go."""
    return f"{row}.status IN ({UNFINISHED_SQL})"


def _before(earlier: str, later: str) -> str:
    """SQL: `earlier` is a notification of `later`'s order and channel, made before it."""
    return f"""{earlier}.order_id = {later}.order_id AND {earlier}.channel = {later}.channel
               AND ({earlier}.created_at < {later}.created_at
                    OR ({earlier}.created_at = {later}.created_at AND {earlier}.id < {later}.id))"""


# One statement claims the row and returns it (an UPDATE, then a SELECT, cost a round trip per
# send). Claimable: not yet sent, a retry that is due, or a send whose worker died mid-way; to a
# recipient not suppressed (one probe of the suppressions' unique index); and with no earlier
# notification of its order on its channel still to go (one probe of notification_order), so
# that a customer reads "confirmed" after "received" even when a send waited behind the rate
# limit and went to the back of the queue. The columns are named: a prepared statement
# returning `*` fails once a migration adds a column. The lease depends on the channel, the
# row's: each channel's send task has its own time limits.
CLAIM_FIELDS = Notification._meta.concrete_fields
CLAIM_LEASE = "CASE channel {} ELSE %(lease_longest)s END".format(
    " ".join(f"WHEN '{channel}' THEN %(lease_{channel})s" for channel in Channel.values)
)
CLAIM_SQL = f"""
    UPDATE {NOTIFICATIONS_TABLE}
       SET status = 'sending', stale_after = {CLAIM_LEASE}, updated_at = %(now)s
     WHERE id = %(id)s
       AND {CLAIMABLE_SQL}
       AND NOT EXISTS (SELECT 1 FROM {Suppression._meta.db_table} suppressed
                        WHERE suppressed.recipient = LOWER({NOTIFICATIONS_TABLE}.recipient)
                          AND suppressed.channel = {NOTIFICATIONS_TABLE}.channel)
       AND NOT EXISTS (SELECT 1 FROM {NOTIFICATIONS_TABLE} earlier
                        WHERE {_before("earlier", NOTIFICATIONS_TABLE)} AND {_to_go("earlier")})
    RETURNING {", ".join(field.column for field in CLAIM_FIELDS)}
"""  # noqa: S608 - only the table and column names are formatted in, from the models

# A send that must wait for an earlier notification of its order waits out of the broker and
# out of every worker's memory: its row turns `pending` without a lease (stale_after NULL:
# WAITING) and its message is acknowledged. The earlier one publishes it once finished (sent,
# dead or cancelled: notification_publish_next), and the sweep publishes a waiting row whose
# earlier ones are all finished, should that not have happened. The earlier rows are locked
# (FOR SHARE), earliest first as every lock of an order's notifications is taken, and all of
# them before this row is updated (count(*) reads them all; EXISTS would stop at the first), so
# that one finishing at this moment either commits first, and this row does not wait, or
# after, and then finds this row waiting. {lock} is empty where the database
# has no row locks (SQLite writes one statement at a time).
WAIT_SQL = f"""
    WITH earlier AS (SELECT earlier.id, earlier.created_at
                       FROM {NOTIFICATIONS_TABLE} earlier, {NOTIFICATIONS_TABLE} later
                      WHERE later.id = %(id)s AND {_before("earlier", "later")} AND {_to_go("earlier")}
                      ORDER BY earlier.created_at, earlier.id {{lock}})
    UPDATE {NOTIFICATIONS_TABLE}
       SET status = 'pending', stale_after = NULL, next_attempt_at = NULL, updated_at = %(now)s
     WHERE id = %(id)s AND {CLAIMABLE_SQL} AND (SELECT count(*) FROM earlier) > 0
    RETURNING (SELECT id FROM earlier ORDER BY created_at, id LIMIT 1)
"""  # noqa: S608 - only the table and column names are formatted in, from the models
# The first waiting notification of an order on a channel, once nothing before it is still to
# go, gets the lease of a row to publish; at most one a call.
PUBLISH_NEXT_SQL = f"""
    UPDATE {NOTIFICATIONS_TABLE} SET stale_after = %(lease)s, updated_at = %(now)s
     WHERE id = (SELECT waiting.id FROM {NOTIFICATIONS_TABLE} waiting
                  WHERE waiting.order_id = %(order_id)s AND waiting.channel = %(channel)s
                    AND waiting.status = 'pending' AND waiting.stale_after IS NULL
                  ORDER BY waiting.created_at, waiting.id LIMIT 1)
       AND status = 'pending' AND stale_after IS NULL
       AND NOT EXISTS (SELECT 1 FROM {NOTIFICATIONS_TABLE} earlier
                        WHERE {_before("earlier", NOTIFICATIONS_TABLE)} AND {_to_go("earlier")})
    RETURNING id, channel
"""  # noqa: S608 - only the table and column names are formatted in, from the models


def _db_datetime(value):
    """A datetime as the ORM writes it (naive UTC text on SQLite), for the written-out statements."""
    return connection.ops.adapt_datetimefield_value(value)


def _claimed(row: tuple) -> Notification:
    """The claimed row as the ORM reads it, its converters applied (e.g. datetimes on SQLite)."""
    converters = _claim_converters(connection.alias)
    if converters:
        row = next(Query(Notification).get_compiler(connection=connection).apply_converters([row], converters))
    return Notification.from_db(connection.alias, [field.attname for field in CLAIM_FIELDS], row)


@cache  # per database: finding them costs more than the claim's own Python (none on PostgreSQL)
def _claim_converters(alias: str) -> dict:
    compiler = Query(Notification).get_compiler(using=alias)
    return compiler.get_converters(field.get_col(Notification._meta.db_table) for field in CLAIM_FIELDS)


# A claim that finds its row claimable with nothing before it left to go (that changed since the
# claim's statement) is made again; this many times, then the task tries again a second later.
CLAIM_TRIES = 3


def _claim(notification_id: int) -> Notification | SendResult:
    for _ in range(CLAIM_TRIES):
        now = timezone.now()
        params = {"id": notification_id, "now": _db_datetime(now)}
        leases = {channel: sending_lease_seconds(channel) for channel in Channel.values}
        for channel, seconds in [*leases.items(), ("longest", max(leases.values()))]:
            params[f"lease_{channel}"] = _db_datetime(now + timedelta(seconds=seconds))
        with prepared_cursor() as cursor:
            cursor.execute(CLAIM_SQL, params)
            claimed = cursor.fetchone()
        if claimed is not None:
            return _claimed(claimed)
        notification = Notification.objects.filter(pk=notification_id).first()
        if notification is None:
            return SendResult("skipped", detail="no such notification")
        if notification.status not in FINISHED_STATUSES and _cancel_if_suppressed(notification, now=now):
            return SendResult("skipped", detail="recipient suppressed")
        if not _claimable(notification, now):
            return _unclaimable(notification, now)
        if earlier := _wait_behind_earlier(notification_id, now):
            return SendResult("waiting", detail=f"after {earlier}")
    return SendResult("deferred", retry_in=1, detail="claim contended")


def _unclaimable(notification: Notification, now) -> SendResult:
    if notification.status == NotificationStatus.SENDING:
        # Another worker holds it; look again when its lease ends in case that worker died.
        return SendResult("deferred", retry_in=(notification.stale_after - now).total_seconds() + 1, detail="busy")
    if notification.status == NotificationStatus.FAILED:
        return SendResult("deferred", retry_in=(notification.next_attempt_at - now).total_seconds(), detail="not due")
    return SendResult("skipped", detail=f"already {notification.status}")


def _claimable(notification: Notification, now) -> bool:
    """As the claim's conditions, bar its order's: the row itself could be sent now."""
    status = notification.status
    return (
        status in (NotificationStatus.PENDING, NotificationStatus.QUEUED)
        or (status == NotificationStatus.FAILED and notification.next_attempt_at <= now)
        or (status == NotificationStatus.SENDING and notification.stale_after <= now)
    )


def _wait_behind_earlier(notification_id: int, now) -> int | None:
    """Make the notification wait for the earlier one of its order still to go (WAIT_SQL); its id."""
    lock = "FOR SHARE OF earlier" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(WAIT_SQL.format(lock=lock), {"id": notification_id, "now": _db_datetime(now)})
        row = cursor.fetchone()
    return row[0] if row else None


def notification_publish_next(*, notification: Notification) -> None:
    """Publish the notification of the same order and channel that waits for this finished one,
    if nothing else before it is still to go; after the surrounding transaction commits, for
    only then can a send finishing meanwhile see this one's end.

    A database error (or the task's soft time limit) is logged and goes no further: this one's
    end is written, and the sweep publishes the waiting one.
    """
    if connection.in_atomic_block:
        transaction.on_commit(partial(_publish_next, notification), robust=True)
    else:
        _publish_next(notification)


def _publish_next(notification: Notification) -> None:
    now = timezone.now()
    params = {
        "order_id": notification.order_id,
        "channel": notification.channel,
        "now": _db_datetime(now),
        "lease": _db_datetime(now + timedelta(seconds=settings.NOTIFICATIONS_STUCK_AFTER)),
    }
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(PUBLISH_NEXT_SQL, params)
            woken = [tuple(row) for row in cursor.fetchall()]
    except (DatabaseError, SoftTimeLimitExceeded) as error:
        reason = _unrecorded_reason(error)
        log_event("notification.next_left_to_sweep", notification, level=logging.WARNING, reason=reason)
        return
    if woken:
        publish_after_commit(notifications_publish, notifications=woken)


def _cancel_if_suppressed(notification: Notification, *, now) -> bool:
    """Cancel a notification, unsent, whose recipient its channel's provider refused for good
    earlier; True if it was. One a worker holds (its lease still running) is left to that worker."""
    suppression = next(iter(suppressions_of([notification])), None)
    if suppression is None:
        return False
    reason = f"not sent: {suppression.explained()}"
    cancelled = (
        Notification.objects.filter(pk=notification.pk)
        .filter(
            Q(status__in=[NotificationStatus.PENDING, NotificationStatus.QUEUED, NotificationStatus.FAILED])
            | Q(status=NotificationStatus.SENDING, stale_after__lte=now)
        )
        .update(
            status=NotificationStatus.CANCELLED,
            last_error_code=SUPPRESSED_CODE,
            last_error_message=reason,
            next_attempt_at=None,
            stale_after=None,
        )
    )
    if cancelled:
        notification_publish_next(notification=notification)
        metrics.SUPPRESSED.labels(notification.channel).inc()
        log_event("notification.suppressed", notification, suppression_id=suppression.pk, code=suppression.error_code)
    return bool(cancelled)


def _release(notification: Notification) -> None:
    """Give a claim back without counting an attempt (no token could be had)."""
    _until_written(
        lambda: Notification.objects.filter(pk=notification.pk, status=NotificationStatus.SENDING).update(
            status=NotificationStatus.QUEUED, queued_at=timezone.now(), stale_after=None
        )
    )


def _until_written(write) -> None:
    """Run `write` (one statement or transaction) again while the database cannot be reached.

    Giving up at once would leave the row claimed until its lease ends; a sent message would
    then be sent again. After RECORD_RETRY_SECONDS the error goes up (the task retries later).
    """
    _while_the_database_is_away(write, seconds=RECORD_RETRY_SECONDS, doing="writing")


def _while_the_database_is_away(call, *, seconds: float, doing: str):
    """What `call` returns, run again while the database cannot be reached or fails it (a
    deadlock, a restart); after `seconds` the error goes up. Logged once a wait, as `doing`
    again: a worker whose database is away for long would otherwise log every second."""
    deadline = time.monotonic() + seconds
    pause = 0.25
    logged = False
    while True:
        try:
            return call()
        except (OperationalError, InterfaceError) as error:
            if time.monotonic() + pause > deadline:
                raise
            if not logged:
                logger.warning(
                    "database error, %s again for up to %.0f s: %s", doing, seconds, database_error_line(error)
                )
                logged = True
            close_old_connections()  # drops the broken connection; the next try opens another
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


# Recording a send is the hot path of every worker. On PostgreSQL it is one statement (a
# data-modifying WITH), one round trip and one commit; elsewhere (SQLite for quick local runs)
# the same two statements run in a transaction. The UPDATE is guarded by the claim, so an
# operator's cancel or a takeover meanwhile is not overwritten; the attempt is recorded either
# way, for the message went out.
MARK_SENT_SQL = f"""
    UPDATE {NOTIFICATIONS_TABLE}
       SET status = %(sent)s, attempts = attempts + 1, provider_message_id = %(provider_message_id)s,
           sent_at = %(now)s, updated_at = %(now)s, stale_after = NULL, next_attempt_at = NULL,
           last_error_code = '', last_error_message = ''
     WHERE id = %(id)s AND status = %(sending)s
"""  # noqa: S608 - only the table name is formatted in, from the model
# The last error goes with the send that ended it: a sent notification showing `twilio-20429`
# reads as failed. Every attempt's error stays in the attempt log.
# Not twice for one attempt number: a commit whose reply was lost is written again (_until_written).
ADD_SENT_ATTEMPT_SQL = f"""
    INSERT INTO {NotificationAttempt._meta.db_table}
           (notification_id, number, outcome, error_code, error_message, provider_message_id,
            worker, started_at, finished_at)
    SELECT %(id)s, %(number)s, %(outcome)s, '', '', %(provider_message_id)s, %(worker)s, %(started_at)s, %(now)s
     WHERE NOT EXISTS (SELECT 1 FROM {NotificationAttempt._meta.db_table}
                        WHERE notification_id = %(id)s AND number = %(number)s)
"""  # noqa: S608 - only the table names are formatted in, from the models
ONE_STATEMENT_VENDORS = {"postgresql"}
# The same statement tells whether a later notification of the order on the channel is still
# to go: only then can one be waiting for this send (notification_publish_next). Asked of the
# row as it was, so that a statement written again (its commit's reply lost) asks it too.
RECORD_SENT_SQL = f"""
    WITH sent AS ({MARK_SENT_SQL}), attempt AS ({ADD_SENT_ATTEMPT_SQL})
    SELECT EXISTS (SELECT 1 FROM {NOTIFICATIONS_TABLE} this, {NOTIFICATIONS_TABLE} later
                    WHERE this.id = %(id)s AND {_before("this", "later")} AND {_to_go("later")})
"""  # noqa: S608 - only the table names are formatted in, from the models


def _record_sent(notification: Notification, sent: SentMessage, *, task_id, worker) -> SendResult:
    """Write down a send the provider accepted; if the database cannot take it yet, hand it
    to the task's next run (a row left claimed would be sent again once its lease ends)."""
    params = {
        "id": notification.pk,
        "number": sent.attempt,
        "provider_message_id": sent.provider_message_id,
        "worker": worker,
        "started_at": _db_datetime(sent.started_at),
        "now": _db_datetime(sent.finished_at),
        "sent": NotificationStatus.SENT,
        "sending": NotificationStatus.SENDING,
        "outcome": NotificationAttempt.Outcome.SENT,
    }

    later_to_go = True  # where the database cannot say in the same statement: look

    def write():
        nonlocal later_to_go
        if connection.vendor in ONE_STATEMENT_VENDORS:
            with prepared_cursor() as cursor:
                cursor.execute(RECORD_SENT_SQL, params)
                later_to_go = cursor.fetchone()[0]
        else:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(MARK_SENT_SQL, params)
                cursor.execute(ADD_SENT_ATTEMPT_SQL, params)

    try:
        _until_written(write)
    except RECORD_LATER_ERRORS as error:
        log_event(
            "notification.unrecorded",
            notification,
            level=logging.WARNING,
            task_id=task_id,
            attempt=sent.attempt,
            provider_message_id=sent.provider_message_id,
            retry_in=RECORD_LATER_SECONDS,
            reason=_unrecorded_reason(error),
        )
        return _unrecorded(sent, error)
    if later_to_go:
        notification_publish_next(notification=notification)
    log_event(
        "notification.sent",
        notification,
        task_id=task_id,
        attempt=sent.attempt,
        provider_message_id=sent.provider_message_id,
        seconds=round((sent.finished_at - sent.started_at).total_seconds(), 3),
    )
    return SendResult("sent")


# The database away (past RECORD_RETRY_SECONDS), or the soft time limit while writing. Any
# other error is a defect and goes up: its task retries from the claim.
RECORD_LATER_ERRORS = (OperationalError, InterfaceError, SoftTimeLimitExceeded)


def _unrecorded_reason(error: BaseException) -> str:
    return "soft time limit reached" if isinstance(error, SoftTimeLimitExceeded) else str(error)


def _unrecorded(sent: SentMessage, error: BaseException) -> SendResult:
    if isinstance(error, SoftTimeLimitExceeded):
        # It may have struck mid-statement: the connection's state is unknown, start afresh.
        with contextlib.suppress(DatabaseError):
            connection.close()
    metrics.RECORDS_DEFERRED.labels(sent.channel).inc()
    return SendResult("unrecorded", retry_in=RECORD_LATER_SECONDS, detail=_unrecorded_reason(error), sent=sent)


def notification_record_sent(
    *, notification_id: int, sent: SentMessage, task_id: str = "", worker: str = ""
) -> SendResult:
    """Write down a send an earlier run of the task made but could not record; send nothing."""
    try:
        notification = Notification.objects.filter(pk=notification_id).first()
    except RECORD_LATER_ERRORS as error:
        logger.warning(
            "notification.unrecorded notification_id=%s task_id=%s provider_message_id=%s retry_in=%s reason=%s",
            notification_id,
            task_id,
            sent.provider_message_id,
            RECORD_LATER_SECONDS,
            _unrecorded_reason(error),
            extra={
                "event": "notification.unrecorded",
                "notification_id": notification_id,
                "task_id": task_id,
                "provider_message_id": sent.provider_message_id,  # kept whole by the log masking
            },
        )
        return _unrecorded(sent, error)
    if notification is None:
        return SendResult("skipped", detail="no such notification")
    return _record_sent(notification, sent, task_id=task_id, worker=worker)


def _record_failure(notification: Notification, error: DeliveryError, *, started_at, task_id, worker) -> SendResult:
    if not error.permanent and (error.throttled or error.retry_after):
        _pause_channel(notification, error, task_id=task_id)
    now = timezone.now()
    metrics.FAILURES.labels(notification.channel, "permanent" if error.permanent else "transient").inc()
    metrics.SEND_SECONDS.labels(notification.channel).observe((now - started_at).total_seconds())
    attempt = notification.attempts + 1
    attempt_since_requeue = attempt - notification.retry_base
    dead = error.permanent or attempt_since_requeue > settings.NOTIFICATIONS_MAX_RETRIES
    if dead:
        reason = (
            error.message
            if error.permanent
            else f"gave up after {attempt_since_requeue} attempts; last: {error.message}"
        )
    else:
        delay = retry_delay(attempt_since_requeue)
        if error.retry_after:  # never sooner than the provider asked, within the same cap
            delay = max(delay, min(error.retry_after, settings.NOTIFICATIONS_RETRY_BACKOFF_MAX))

    @transaction.atomic
    def write():
        # get_or_create: a commit whose reply was lost is written again, the attempt only once.
        NotificationAttempt.objects.get_or_create(
            notification=notification,
            number=attempt,
            defaults={
                "outcome": NotificationAttempt.Outcome.PERMANENT_ERROR
                if error.permanent
                else NotificationAttempt.Outcome.TRANSIENT_ERROR,
                "error_code": error.code,
                "error_message": error.message,
                "worker": worker,
                "started_at": started_at,
                "finished_at": now,
            },
        )
        fields = {
            "attempts": attempt,
            "last_error_code": error.code,
            "last_error_message": error.message,
            "stale_after": None,
        }
        if dead:
            still_ours = Notification.objects.filter(pk=notification.pk, status=NotificationStatus.SENDING).update(
                status=NotificationStatus.DEAD, next_attempt_at=None, **fields
            )
            if still_ours:
                _bury(notification, error, reason=reason, attempts=attempt_since_requeue, task_id=task_id, now=now)
                if error.refuses_recipient:
                    _suppress(notification, error)
        else:
            Notification.objects.filter(pk=notification.pk, status=NotificationStatus.SENDING).update(
                status=NotificationStatus.FAILED, next_attempt_at=now + timedelta(seconds=delay), **fields
            )

    _until_written(write)
    if dead:
        notification_publish_next(notification=notification)
        log_event(
            "notification.dead",
            notification,
            level=logging.WARNING,
            task_id=task_id,
            attempt=attempt,
            code=error.code,
            reason=reason,
        )
        return SendResult("dead", detail=reason)
    log_event(
        "notification.retry",
        notification,
        level=logging.ERROR if error.setting_to_fix else logging.INFO,
        task_id=task_id,
        attempt=attempt,
        code=error.code,
        retry_in=round(delay, 1),
        check=error.setting_to_fix or None,
    )
    return SendResult("retry", retry_in=delay, detail=error.message)


def suppression_key(recipient: str) -> str:
    """A recipient as suppressions hold it: an email address in lower case (mail systems treat
    Ada@Example.com and ada@example.com as one mailbox); a phone in E.164 has no case."""
    return recipient.lower()


def _suppress(notification: Notification, error: DeliveryError) -> None:
    """Keep the recipient the provider refused for good, so that nothing more is sent to it."""
    _, created = Suppression.objects.get_or_create(
        channel=notification.channel,
        recipient=suppression_key(notification.recipient),
        defaults={"error_code": error.code, "reason": error.message, "notification": notification},
    )
    if created:
        log_event("notification.recipient_suppressed", notification, level=logging.WARNING, code=error.code)


def suppression_add(*, channel: str, recipient: str, reason: str, by) -> Suppression:
    """An operator stops every notification to a recipient on a channel (the customer asked)."""
    reason = reason.strip()
    if not reason:
        raise ApplicationError("Say why nothing more is sent to it.", fields={"reason": ["This field is required."]})
    recipient = suppression_key(valid_recipient(channel, recipient))
    suppression, created = Suppression.objects.get_or_create(
        channel=channel, recipient=recipient, defaults={"reason": reason, "created_by": by}
    )
    if not created:
        raise Conflict(
            f"{mask_recipient(recipient)} is already suppressed on {channel} since {suppression.created_at:%Y-%m-%d}.",
            fields={"recipient": ["Already suppressed on this channel."]},
        )
    logger.info("suppression.added id=%s channel=%s by=%s", suppression.pk, channel, by)
    return suppression


def suppressions_remove(*, suppressions, by) -> int:
    """An operator lifts suppressions: their recipients can be sent to again. Returns how many."""
    ids = [suppression.pk for suppression in suppressions]
    removed, _ = Suppression.objects.filter(pk__in=ids).delete()
    if removed:
        logger.info("suppression.lifted ids=%s by=%s", ids, by)
    return removed


def cancelled_for(suppressions) -> list[int]:
    """Ids of the notifications cancelled unsent because of these suppressions, earliest first:
    lifting a suppression sends nothing by itself, and these stay cancelled until resent."""
    wanted = Q(pk__in=[])
    for suppression in suppressions:
        wanted |= Q(In(RECIPIENT_SEARCHED, [Lower(Value(suppression.recipient))]), channel=suppression.channel)
    cancelled = Notification.objects.filter(
        wanted, status=NotificationStatus.CANCELLED, last_error_code=SUPPRESSED_CODE
    ).order_by("pk")
    return list(cancelled.values_list("pk", flat=True))


def suppressions_of(notifications: list[Notification]) -> list[Suppression]:
    """The suppressions that stop these notifications' recipients."""
    wanted = Q(pk__in=[])
    for notification in notifications:
        wanted |= Q(channel=notification.channel, recipient=suppression_key(notification.recipient))
    return list(Suppression.objects.filter(wanted))


def _pause_channel(notification: Notification, error: DeliveryError, *, task_id: str) -> None:
    """The provider said "too fast" or "not before": hold every worker's sends on the channel
    for as long as it asked (THROTTLE_PAUSE_SECONDS when it did not say), so that the rest of
    a backlog waits for a token instead of using up its attempts on the same answer. One call to
    Redis, after the provider call, so the send task's time limits need no room for it."""
    seconds = min(error.retry_after or THROTTLE_PAUSE_SECONDS, settings.NOTIFICATIONS_RETRY_BACKOFF_MAX)
    try:
        limiter_for(notification.channel).pause(seconds)
    except (LimiterUnavailable, SoftTimeLimitExceeded) as unpaused:
        # The message's own retry still waits; the others find out from the provider. The
        # soft time limit striking here comes after the provider call: the failure is written.
        log_event(
            "notification.channel_not_paused",
            notification,
            level=logging.WARNING,
            task_id=task_id,
            reason="soft time limit reached"
            if isinstance(unpaused, SoftTimeLimitExceeded)
            else f"rate limiter unavailable: {unpaused}",
        )
        return
    metrics.CHANNEL_PAUSES.labels(notification.channel).inc()
    log_event(
        "notification.channel_paused",
        notification,
        level=logging.WARNING,
        task_id=task_id,
        code=error.code,
        seconds=round(seconds, 3),
    )


# --- delivery receipts ----------------------------------------------------------------------

# Twilio's codes for undelivered messages, as a person would want to read them.
# https://www.twilio.com/docs/api/errors
CARRIER_REASONS = {
    "30003": "unreachable destination handset",
    "30004": "message blocked",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by the carrier",
    "30008": "unknown error",
    "21610": "the recipient unsubscribed (replied STOP)",
    "21614": "not a mobile number",
}
UNDELIVERED_STATUSES = {"undelivered", "failed"}


# Twilio's error codes are five digits; a compatible provider's may differ, but must fit
# last_error_code behind the prefix.
RECEIPT_CODE_PREFIX = "twilio-"
RECEIPT_ERROR_CODE_LENGTH = Notification._meta.get_field("last_error_code").max_length - len(RECEIPT_CODE_PREFIX)
# Twilio's message statuses are single words (delivered, undelivered, failed, ...): a longer or
# unprintable one is not one, and would break the log line it is written to.
RECEIPT_STATUS_LENGTH = 32


# What notification_record_receipt answers for a message id no SMS notification has.
UNKNOWN_MESSAGE = "unknown message"
# A receipt can come before its send is written down: the provider answers the worker and sends
# the receipt at once, and the receipt can win the race with the worker's record. The receipt of
# a message not known yet is applied again after each of these pauses (the task
# record_receipt), then dropped: a message sent by something else, or one deleted since.
RECEIPT_RETRY_SECONDS = (5, 30, 120)
# The receipts that move a sent notification on; the others (queued, sent, ...) change nothing.
FINAL_RECEIPT_STATUSES = ("delivered", *sorted(UNDELIVERED_STATUSES))
RECORD_RECEIPT_TASK = "notifications.tasks.record_receipt"
# A receipt that met the database away is handed to a worker, which first applies it after this
# pause, then again after each retry while the database stays away (the task record_receipt):
# Twilio does not post a receipt again.
RECEIPT_DATABASE_WAIT_SECONDS = 10


def notification_record_receipt(*, provider_message_id: str, provider_status: str, error_code: str = "") -> str:
    """Apply an SMS provider's delivery receipt; replays and receipts for unknown messages change nothing."""
    if "\x00" in provider_message_id or len(provider_message_id) > PROVIDER_MESSAGE_ID_LENGTH:
        raise ApplicationError(
            f"MessageSid is not a message id: at most {PROVIDER_MESSAGE_ID_LENGTH} characters, no NUL.",
            fields={"MessageSid": ["not a message id"]},
        )
    if len(provider_status) > RECEIPT_STATUS_LENGTH or not provider_status.isprintable():
        raise ApplicationError(
            f"MessageStatus {provider_status[:20]!r} is not a status: "
            f"up to {RECEIPT_STATUS_LENGTH} printable characters, e.g. delivered.",
            fields={"MessageStatus": ["not a status"]},
        )
    if len(error_code) > RECEIPT_ERROR_CODE_LENGTH or not error_code.isprintable():
        raise ApplicationError(
            f"ErrorCode {error_code[:20]!r} is not an error code: "
            f"up to {RECEIPT_ERROR_CODE_LENGTH} printable characters.",
            fields={"ErrorCode": ["not an error code"]},
        )
    # An email's Message-ID is also a provider message id: a receipt from the SMS provider never touches one.
    notification = Notification.objects.filter(provider_message_id=provider_message_id, channel=Channel.SMS).first()
    if notification is None:
        logger.info("receipt for unknown message %s (%s) acknowledged", provider_message_id, provider_status)
        return UNKNOWN_MESSAGE
    # Only a sent notification moves on; a replay, or a receipt after an earlier final one, does nothing.
    just_sent = Notification.objects.filter(pk=notification.pk, status=NotificationStatus.SENT)
    now = timezone.now()
    log_event("notification.receipt", notification, provider_status=provider_status, code=error_code)
    if provider_status == "delivered":
        moved = just_sent.update(status=NotificationStatus.DELIVERED, delivered_at=now)
        return "delivered" if moved else "ignored"
    if provider_status not in UNDELIVERED_STATUSES:
        return "ignored"  # queued, sending, sent: nothing new
    reason = CARRIER_REASONS.get(error_code, "no reason given")
    error = PermanentDeliveryError(
        f"carrier reports {provider_status}: {error_code or '-'} {reason}",
        code=f"{RECEIPT_CODE_PREFIX}{error_code or provider_status}",
        # A Messaging Service reports an unsubscribed number (21610) here rather than in its answer.
        refuses_recipient=error_code.isdigit() and int(error_code) in RECIPIENT_REFUSING_TWILIO_CODES,
    )
    with transaction.atomic():
        moved = just_sent.update(
            status=NotificationStatus.DEAD, last_error_code=error.code, last_error_message=error.message
        )
        if moved:
            _bury(
                notification,
                error,
                reason=error.message,
                attempts=notification.attempts - notification.retry_base,
                task_id="",
                now=now,
            )
            if error.refuses_recipient:
                _suppress(notification, error)
    if moved:
        metrics.FAILURES.labels(notification.channel, "permanent").inc()
    return provider_status if moved else "ignored"


def notification_record_receipt_later(
    *, provider_message_id: str, provider_status: str, error_code: str = "", tries: int = 0
) -> bool | None:
    """Have the receipt of a message not known yet applied again after a pause; False, logged,
    when it was tried often enough (RECEIPT_RETRY_SECONDS) or the broker does not take it.

    None for a receipt that could change nothing even once its message is written down
    (queued, sent: only FINAL_RECEIPT_STATUSES move a notification on): it is not tried again.
    """
    if provider_status not in FINAL_RECEIPT_STATUSES:
        return None
    described = f"{provider_message_id} ({provider_status})"
    if tries >= len(RECEIPT_RETRY_SECONDS):
        logger.warning("receipt for unknown message %s dropped after %d tries", described, tries + 1)
        return False
    error = _publish_receipt(
        (provider_message_id, provider_status, error_code), tries=tries + 1, countdown=RECEIPT_RETRY_SECONDS[tries]
    )
    if error:
        logger.warning("receipt for unknown message %s not tried again: %s", described, error)
    return error is None


def notification_record_receipt_when_database_back(
    *, provider_message_id: str, provider_status: str, error_code: str = ""
) -> bool:
    """Hand a receipt the database could not take to a worker, which applies it once the
    database is back; False, logged, when the broker does not take it either."""
    described = f"{provider_message_id} ({provider_status})"
    error = _publish_receipt(
        (provider_message_id, provider_status, error_code), countdown=RECEIPT_DATABASE_WAIT_SECONDS
    )
    if error:
        logger.error("receipt for %s lost: the database and the broker are unavailable (%s)", described, error)
        return False
    logger.warning("database unavailable: receipt for %s handed to a worker to apply when it is back", described)
    return True


def _publish_receipt(receipt: tuple[str, str, str], *, countdown: float, tries: int = 0):
    """Hand a receipt to record_receipt after `countdown` seconds; the broker's error if it did not take it."""
    try:
        broker.publish(
            RECORD_RECEIPT_TASK, args=list(receipt), kwargs={"tries": tries} if tries else None, countdown=countdown
        )
    except broker.BrokerUnavailable as error:
        return error
    return None


# --- operators ------------------------------------------------------------------------------

RESENDABLE_STATUSES = (
    NotificationStatus.DEAD,
    NotificationStatus.FAILED,
    NotificationStatus.CANCELLED,
    NotificationStatus.SENT,
    NotificationStatus.DELIVERED,
)
CANCELLABLE_STATUSES = (NotificationStatus.PENDING, NotificationStatus.QUEUED, NotificationStatus.FAILED)
CORRECTABLE_STATUSES = (
    NotificationStatus.DEAD,
    NotificationStatus.FAILED,
    NotificationStatus.CANCELLED,
    NotificationStatus.PENDING,
    NotificationStatus.QUEUED,
)


def not_correctable(notification: Notification) -> str:
    """Why a notification not in CORRECTABLE_STATUSES keeps its recipient."""
    return f"Notification {notification.pk} is {notification.status}; its recipient can no longer be changed."


def notification_reset_for_sending(notification_ids: list[int]) -> int:
    """Make notifications sendable again with a fresh set of retries; their history stays."""
    return Notification.objects.filter(pk__in=notification_ids).update(
        status=NotificationStatus.PENDING,
        retry_base=F("attempts"),
        next_attempt_at=None,
        stale_after=timezone.now() + timedelta(seconds=settings.NOTIFICATIONS_STUCK_AFTER),
        last_error_code="",
        last_error_message="",
        provider_message_id="",
    )


# notification_resend without what the operator saw: resent whatever happened meanwhile.
UNSEEN = object()


def notification_resend(*, notification_id: int, by, sent_at_seen: datetime | object | None = UNSEEN) -> Notification:
    """Send a notification again on an operator's word: one that died, failed, was cancelled or was sent.

    `sent_at_seen`, when given, is when the operator saw it last sent (None: never): one sent
    since, by a worker or by another operator's resend, is refused rather than sent twice."""
    with transaction.atomic():
        # Lock order everywhere: dead letters, then their notification (as dead_letters_requeue does).
        open_letters = list(
            DeadLetter.objects.select_for_update()
            .filter(notification_id=notification_id, status=DeadLetterStatus.DEAD)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        notification = _locked(notification_id)
        if notification.waits_in_order:
            raise Conflict(
                f"Notification {notification.pk} waits for an earlier notification of its order: "
                "it is sent once that one is sent, dead or cancelled."
            )
        if notification.status not in RESENDABLE_STATUSES:
            raise Conflict(f"Notification {notification.pk} is {notification.status}: it is already on its way.")
        if sent_at_seen is not UNSEEN and notification.sent_at != sent_at_seen:
            when = f" at {notification.sent_at:%Y-%m-%d %H:%M:%S %Z}" if notification.sent_at else ""
            raise Conflict(
                f"Notification {notification.pk} was sent{when} since you looked at it; not sent again. "
                "Resend it on its own if it must go twice."
            )
        if still_suppressed := suppressions_of([notification]):
            raise Conflict(f"Notification {notification.pk} would not be sent: {still_suppressed[0].explained()}.")
        notification_reset_for_sending([notification.pk])
        DeadLetter.objects.filter(pk__in=open_letters).update(
            status=DeadLetterStatus.REQUEUED, resolved_at=timezone.now(), resolved_by=by
        )
        publish_after_commit(notifications_publish, notifications=[(notification.pk, notification.channel)])
        _log_operator_action(notification, by, "Resent")
    notification.refresh_from_db()
    log_event("notification.resend", notification, by=by)
    return notification


def _log_operator_action(notification: Notification, by, message: str) -> None:
    """In the notification's admin history, under the operator's name."""
    if by is not None:
        LogEntry.objects.log_actions(
            user_id=by.pk, queryset=[notification], action_flag=CHANGE, change_message=message, single_object=True
        )


def notification_cancel(*, notification_id: int, by) -> Notification:
    """Withdraw a notification that has not been sent yet."""
    with transaction.atomic():
        notification = _locked(notification_id)
        if notification.status == NotificationStatus.SENDING:
            raise Conflict(f"Notification {notification.pk} is being sent right now and cannot be stopped.")
        if notification.status == NotificationStatus.CANCELLED:
            raise Conflict(f"Notification {notification.pk} is already cancelled.")
        if notification.status not in CANCELLABLE_STATUSES:
            *first, last = CANCELLABLE_STATUSES
            instead = (
                "; a dead one stays as it is, or discard its dead letter"
                if notification.status == NotificationStatus.DEAD
                else ""
            )
            raise Conflict(
                f"Notification {notification.pk} is {notification.status}; only one still to be sent "
                f"({', '.join(first)} or {last}) can be cancelled{instead}."
            )
        Notification.objects.filter(pk=notification.pk).update(
            status=NotificationStatus.CANCELLED,
            stale_after=None,
            next_attempt_at=None,
            last_error_code=CANCELLED_CODE,
            last_error_message=f"{CANCELLED_MESSAGE} ({by})" if by is not None else CANCELLED_MESSAGE,
        )
        _log_operator_action(notification, by, "Cancelled")
    notification_publish_next(notification=notification)
    notification.refresh_from_db()
    log_event("notification.cancelled", notification, by=by)
    return notification


@dataclass(frozen=True)
class RecipientCorrected:
    notification: Notification
    order_contact: str = ""  # the order's field corrected with it ("customer_phone"), if any
    also: tuple[Notification, ...] = ()  # the order's other notifications corrected with it
    # The order's field asked to be corrected too and left as it was: it holds neither the
    # notification's recipient nor one it was corrected from, so someone set it on purpose.
    order_contact_left: str = ""

    @property
    def sent_only_once_resent(self) -> list[Notification]:
        """Those of `also` that no worker sends again by itself: dead or cancelled."""
        return [row for row in self.also if row.status in (NotificationStatus.DEAD, NotificationStatus.CANCELLED)]


def notification_correct_recipient(
    *,
    notification_id: int,
    recipient: str,
    reason: str,
    by,
    seen_recipient: str | None = None,
    for_the_order: bool = False,
) -> RecipientCorrected:
    """Fix where a notification goes, keeping the old value, who changed it and why.

    `seen_recipient`: the value the operator corrected; if someone changed it meanwhile,
    nothing is changed (two corrections at once must not both be told they were used).
    `for_the_order`: the order's contact on that channel is corrected too, where it still is
    the old value, with the order's other notifications not yet on their way to it; else its
    next status update would go to the old value again.
    """
    reason = reason.strip()
    if not reason:
        raise ApplicationError("Say why the recipient is changed.", fields={"reason": ["This field is required."]})
    with transaction.atomic():
        if for_the_order:
            order, notification, others = _locked_with_the_order(notification_id)
        else:
            order, notification, others = None, _locked(notification_id), []
        if seen_recipient is not None and notification.recipient != seen_recipient:
            raise Conflict(
                f"The recipient of notification {notification.pk} was changed by someone else while you were "
                "correcting it; look at it again and correct it if it still needs it."
            )
        recipient = valid_recipient(notification.channel, recipient)
        if notification.status not in CORRECTABLE_STATUSES:
            raise Conflict(not_correctable(notification))
        if recipient == notification.recipient:
            said = f"{recipient} is already its recipient; to send to it again, resend the notification instead."
            raise ApplicationError(said, fields={"recipient": [said]})
        order_contact = (
            _correct_the_order_contact(order, notification, recipient, reason=reason, by=by) if order else ""
        )
        left = ORDER_CONTACT_FIELDS[notification.channel] if order and not order_contact else ""
        # The order's others not yet on their way that go to the old value go to the new one.
        also = [row for row in others if row.recipient == notification.recipient]
        corrected = [notification, *also]
        RecipientCorrection.objects.bulk_create(
            RecipientCorrection(
                notification=row, old_recipient=row.recipient, new_recipient=recipient, reason=reason, changed_by=by
            )
            for row in corrected
        )
        Notification.objects.filter(pk__in=[row.pk for row in corrected]).update(recipient=recipient)
    notification.refresh_from_db()
    log_event("notification.recipient_corrected", notification, by=by, with_the_order=for_the_order or None)
    return RecipientCorrected(notification, order_contact, tuple(also), order_contact_left=left)


# The order's contact field for each channel.
ORDER_CONTACT_FIELDS = {Channel.SMS: "customer_phone", Channel.EMAIL: "customer_email"}


def _correct_the_order_contact(order: Order, notification: Notification, recipient: str, *, reason: str, by) -> str:
    """Correct the order's phone or email (its row locked) where it still is the notification's
    old recipient, or one it was corrected from before (a first correction of the notification
    alone), recorded in the order's history in the admin; the field corrected, if any."""
    field = ORDER_CONTACT_FIELDS[notification.channel]
    earlier = {notification.recipient, *notification.corrections.values_list("old_recipient", flat=True)}
    if getattr(order, field) not in earlier:
        return ""
    Order.objects.filter(pk=order.pk).update(**{field: recipient}, updated_at=timezone.now())
    if by is not None:
        LogEntry.objects.log_actions(
            user_id=by.pk,
            queryset=[order],
            action_flag=CHANGE,
            change_message=f"{field} corrected with notification {notification.pk}: {reason}",
            single_object=True,
        )
    return field


def valid_recipient(channel: str, recipient: str) -> str:
    """`recipient` as the channel stores it (a phone in E.164, an email address), or ApplicationError."""
    recipient = recipient.strip()
    if channel == Channel.SMS:
        return phone_to_e164(recipient, field="recipient")
    try:
        validate_email(recipient)
    except ValidationError:
        message = f"{recipient!r} is not a valid email address."
        raise ApplicationError(message, fields={"recipient": [message]}) from None
    return recipient


def _locked_with_the_order(notification_id: int) -> tuple[Order, Notification, list[Notification]]:
    """The order, the notification and the order's others on its channel that may still be
    corrected, all locked: the order first, then the notifications earliest first, as a send
    deciding to wait for an earlier one locks them (WAIT_SQL). Taken in one order everywhere, no
    two transactions each hold a row the other waits for (a deadlock, which PostgreSQL ends by
    failing one)."""
    found = Notification.objects.filter(pk=notification_id).values("order_id", "channel").first()
    if found is None:
        raise NotFound(f"Notification {notification_id} does not exist.")
    order = Order.objects.select_for_update().filter(pk=found["order_id"]).first()
    rows = list(
        Notification.objects.select_for_update()
        .filter(order_id=found["order_id"], channel=found["channel"])
        .filter(Q(pk=notification_id) | Q(status__in=CORRECTABLE_STATUSES))
        .order_by("created_at", "pk")
    )
    notification = next((row for row in rows if row.pk == notification_id), None)
    if order is None or notification is None:  # deleted with its order meanwhile
        raise NotFound(f"Notification {notification_id} does not exist.")
    return order, notification, [row for row in rows if row.pk != notification_id]


def _locked(notification_id: int) -> Notification:
    notification = Notification.objects.select_for_update().filter(pk=notification_id).first()
    if notification is None:
        raise NotFound(f"Notification {notification_id} does not exist.")
    return notification


def _bury(notification: Notification, error: DeliveryError, *, reason: str, attempts: int, task_id: str, now) -> None:
    cause = error.__cause__ or error
    exception_type = f"{type(cause).__module__}.{type(cause).__qualname__}"
    first_failure = (
        notification.attempt_log.filter(number__gt=notification.retry_base)
        .exclude(outcome=NotificationAttempt.Outcome.SENT)
        .order_by("number")
        .values_list("finished_at", flat=True)
        .first()
    )
    DeadLetter.objects.create(
        notification=notification,
        task_name=CHANNEL_TASKS[notification.channel],
        task_id=task_id,
        args=[notification.pk],
        kwargs={},
        queue=notification.channel,
        exception_type=exception_type,
        error_code=error.code,
        message=reason,
        fingerprint=fingerprint(
            task_name=CHANNEL_TASKS[notification.channel],
            exception_type=exception_type,
            error_code=error.code,
            message=reason,
        ),
        traceback="".join(traceback.format_exception(cause)),
        attempts=attempts,
        first_failed_at=first_failure or now,
        last_failed_at=now,
    )
