"""A million notifications for bench/admin_scale.py, written with INSERT ... SELECT in PostgreSQL.

Importing this module points the process at the scale resources of its own (database
orderflow_scale, Redis databases 9 and 8; the variables below are set, not defaulted) and sets
Django up.

The seed is the live table an operator looks at: 100,000 orders over the last 30 days, ten
notifications each (five events, SMS and email), one attempt per notification that was handed to
a provider, and 100,000 dead letters in a few dozen causes. Its rows were all touched within the
retention window, so the cleanup leaves them alone; the rows the cleanup and the sweep work on are
cohorts written next to it (ids below and above the seed) and gone when those phases end.
"""

import os
from datetime import timedelta

import django

POSTGRES = "postgres://postgres@127.0.0.1:5432"
DATABASE_NAME = "orderflow_scale"

os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "orderflow.settings.local",
        # As deployed: DEBUG on would keep every query in memory.
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "scale-bench-only-not-a-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,testserver",
        "DATABASE_URL": f"{POSTGRES}/{DATABASE_NAME}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/9",
        "CELERY_RESULT_BACKEND": "django-db",
        "REDIS_URL": "redis://127.0.0.1:6379/8",
    }
)
# The sweep logs a line per message it publishes: the figures are the output, not 100,000 log lines.
os.environ.setdefault("LOG_LEVEL", "WARNING")
django.setup()

from django.conf import settings  # noqa: E402 - needs the settings above
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from notifications.fingerprints import fingerprint  # noqa: E402

ORDERS = 100_000
NOTIFICATIONS = 1_000_000  # ten per order
DEAD_LETTERS = 100_000
ORPHAN_DEAD_LETTERS = 1_000  # order-level tasks that died with no notification to point at
CLEANUP_COHORT = 1_000_000
SWEEP_COHORT = 100_000
# Ids 1..CLEANUP_COHORT are kept for the cleanup cohort: old rows have the lowest ids, as in production.
ORDER_ID_BASE = 0
NOTIFICATION_ID_BASE = CLEANUP_COHORT
SEED_LAST_NOTIFICATION_ID = NOTIFICATION_ID_BASE + NOTIFICATIONS
# A seed older than this is written again: its rows would start to fall out of retention.
SEED_MAX_AGE = timedelta(days=settings.NOTIFICATIONS_RETENTION_DAYS - 1)

SMS_TASK = "notifications.tasks.send_sms_notification"
EMAIL_TASK = "notifications.tasks.send_email_notification"
GAVE_UP = "gave up after 4 attempts; last: "
# (queue, exception type, error code, message, attempts); {recipient} is the notification's.
# Earlier causes are more frequent. Each one is a group on the dead letters' by-cause page.
CAUSES = [
    ("sms", "twilio.base.exceptions.TwilioRestException", "twilio-21211",
     "Twilio 21211: The 'To' number {recipient} is not a valid phone number.", 1),
    ("sms", "twilio.base.exceptions.TwilioRestException", "twilio-21610",
     "Twilio 21610: Attempt to send to unsubscribed recipient", 1),
    ("sms", "twilio.base.exceptions.TwilioRestException", "twilio-21614",
     "Twilio 21614: 'To' number {recipient} is not a mobile number", 1),
    ("sms", "twilio.base.exceptions.TwilioRestException", "http-503",
     GAVE_UP + "Twilio HTTP 503: Service Unavailable", 4),
    ("sms", "requests.exceptions.ConnectTimeout", "network", GAVE_UP + "Twilio unreachable: ConnectTimeout", 4),
    ("sms", "twilio.base.exceptions.TwilioRestException", "twilio-30006",
     "Twilio 30006: Landline or unreachable carrier", 1),
    ("sms", "twilio.base.exceptions.TwilioRestException", "twilio-21408",
     "Twilio 21408: Permission to send an SMS has not been enabled for the region indicated by {recipient}", 1),
    ("sms", "twilio.base.exceptions.TwilioRestException", "twilio-20429",
     GAVE_UP + "Twilio 20429: Too Many Requests", 4),
    ("sms", "celery.exceptions.SoftTimeLimitExceeded", "timeout", GAVE_UP + "send timed out", 4),
    ("sms", "twilio.base.exceptions.TwilioRestException", "http-500",
     GAVE_UP + "Twilio HTTP 500: Internal Server Error", 4),
    ("sms", "twilio.base.exceptions.TwilioRestException", "twilio-30007",
     "Twilio 30007: Message filtered by the carrier", 1),
    ("sms", "requests.exceptions.ConnectionError", "network", GAVE_UP + "Twilio unreachable: ConnectionError", 4),
    ("sms", "twilio.base.exceptions.TwilioRestException", "twilio-20003",
     "Twilio 20003: Authentication Error - invalid username", 1),
    ("sms", "twilio.base.exceptions.TwilioRestException", "twilio-30001", GAVE_UP + "Twilio 30001: Queue overflow", 4),
    ("sms", "builtins.KeyError", "unexpected", "unexpected KeyError: 'sid'", 1),
    ("email", "smtplib.SMTPRecipientsRefused", "smtp-550",
     "recipient refused: 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown in virtual mailbox table",
     1),
    ("email", "smtplib.SMTPRecipientsRefused", "smtp-450",
     GAVE_UP + "recipient refused: 450 4.2.0 <{recipient}>: Recipient address rejected: Greylisted", 4),
    ("email", "builtins.ConnectionRefusedError", "network", GAVE_UP + "SMTP unreachable: ConnectionRefusedError", 4),
    ("email", "smtplib.SMTPRecipientsRefused", "smtp-552",
     "recipient refused: 552 5.2.2 <{recipient}>: Mailbox full", 1),
    ("email", "smtplib.SMTPDataError", "smtp-554", "SMTP error: 554 5.7.1 Message rejected due to content restrictions",
     1),
    ("email", "smtplib.SMTPServerDisconnected", "network", GAVE_UP + "SMTP unreachable: SMTPServerDisconnected", 4),
    ("email", "smtplib.SMTPRecipientsRefused", "smtp-553",
     "recipient refused: 553 5.1.3 <{recipient}>: Recipient address rejected: not a valid RFC-5321 address", 1),
    ("email", "smtplib.SMTPDataError", "smtp-451", GAVE_UP + "SMTP error: 451 4.3.0 Temporary local problem", 4),
    ("email", "celery.exceptions.SoftTimeLimitExceeded", "timeout", GAVE_UP + "send timed out", 4),
    ("email", "smtplib.SMTPRecipientsRefused", "smtp-550",
     "recipient refused: 550 5.7.1 <{recipient}>: Relay access denied", 1),
    ("email", "smtplib.SMTPDataError", "smtp-421", GAVE_UP + "SMTP error: 421 4.7.0 Too many connections", 4),
    ("email", "smtplib.SMTPSenderRefused", "smtp-553",
     "SMTP error: 553 5.7.1 <orders@localhost>: Sender address rejected: not owned by user", 1),
    ("email", "socket.gaierror", "network", GAVE_UP + "SMTP unreachable: gaierror", 4),
    ("email", "smtplib.SMTPRecipientsRefused", "smtp-551",
     "recipient refused: 551 5.1.6 <{recipient}>: Recipient has moved", 1),
    ("email", "builtins.UnicodeEncodeError", "unexpected",
     "unexpected UnicodeEncodeError: 'ascii' codec can't encode character", 1),
]  # fmt: skip
CAUSES_PER_QUEUE = 15
ORPHAN_CAUSE = (
    "notifications.tasks.send_order_confirmation",
    "notifications",
    "orders.models.Order.DoesNotExist",
    "Order matching query does not exist.",
)

CREATE_CAUSE_TABLE = """
CREATE TEMP TABLE scale_cause (
    queue text, cause_no int, task_name text, exception_type text, error_code text, message text,
    traceback text, attempts int, fingerprint text
) ON COMMIT DROP
"""
# Which cause a dead notification died of: skewed, so a few causes make most of the dead letters.
CREATE_CAUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION pg_temp.cause_no(notification_id bigint) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT floor(%(causes)s * power((abs(hashint8(notification_id + 7)) %% 1000) / 1000.0, 2))::int
$$
"""

INSERT_ORDERS = """
INSERT INTO orders_order (
    id, owner_id, customer_name, customer_email, customer_phone, status, total, created_at, updated_at)
SELECT %(base)s + i, %(owner)s,
       (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Margaret', 'Ken'])[1 + c %% 8]
           || ' ' || (ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Hamilton',
                            'Thompson'])[1 + (c / 8) %% 8],
       'customer' || c || '@example.com',
       '+4477' || lpad(c::text, 8, '0'),
       CASE WHEN i %% 12 = 0 THEN 'cancelled' ELSE 'delivered' END,
       5 + (abs(hashint8(i)) %% 20000) / 100.0,
       now() - interval '31 days' + interval '30 days' * i / %(count)s,
       now()
FROM generate_series(1, %(count)s) AS i,
     LATERAL (SELECT 1 + abs(hashint8(i * 31)) %% 60000) AS customer(c)
"""

# Ten per order: five events on two channels. Statuses by a hash of the id:
# 40% sent, 47% delivered, 8% dead, 2% queued, 1.5% failed, 1% cancelled, 0.4% pending, 0.1% sending.
INSERT_NOTIFICATIONS = """
WITH slot AS (
    SELECT %(base)s + i AS id, %(order_base)s + 1 + (i - 1) / 10 AS order_id, (i - 1) %% 10 AS slot,
           abs(hashint8(i)) %% 1000 AS draw
    FROM generate_series(1, %(count)s) AS i
), shaped AS (
    SELECT s.id, o.id AS order_id, o.customer_name, o.customer_phone, o.customer_email,
           CASE WHEN s.slot %% 2 = 0 THEN 'sms' ELSE 'email' END AS channel,
           CASE WHEN s.slot / 2 = 4 AND o.status = 'cancelled' THEN 'cancelled'
                ELSE (ARRAY['placed', 'confirmed', 'processing', 'shipped', 'delivered'])[s.slot / 2 + 1] END AS event,
           CASE WHEN s.draw < 400 THEN 'sent' WHEN s.draw < 870 THEN 'delivered' WHEN s.draw < 950 THEN 'dead'
                WHEN s.draw < 970 THEN 'queued' WHEN s.draw < 985 THEN 'failed' WHEN s.draw < 995 THEN 'cancelled'
                WHEN s.draw < 999 THEN 'pending' ELSE 'sending' END AS status,
           least(o.created_at + (s.slot / 2) * interval '9 hours' + (s.slot %% 2) * interval '1 second',
                 now() - interval '1 minute') AS created_at
    FROM slot AS s JOIN orders_order AS o ON o.id = s.order_id
), told AS (
    SELECT shaped.*, headline,
           CASE WHEN channel = 'sms' THEN customer_phone ELSE customer_email END AS recipient,
           c.error_code, replace(c.message, '{recipient}',
               CASE WHEN channel = 'sms' THEN customer_phone ELSE customer_email END) AS error_message,
           coalesce(c.attempts, 1) AS dead_attempts
    FROM shaped
    JOIN (VALUES ('placed', 'we received your order'), ('confirmed', 'your order is confirmed'),
                 ('processing', 'we are preparing your order'), ('shipped', 'your order is on its way'),
                 ('delivered', 'your order was delivered'), ('cancelled', 'your order was cancelled'))
         AS headlines(event, headline) USING (event)
    LEFT JOIN scale_cause AS c
         ON shaped.status = 'dead' AND c.queue = shaped.channel AND c.cause_no = pg_temp.cause_no(shaped.id)
)
INSERT INTO notifications_notification (
    id, order_id, channel, event, dedup_key, recipient, subject, body, html_body, status, attempts, retry_base,
    last_error_code, last_error_message, provider_message_id, next_attempt_at, stale_after, queued_at,
    created_at, updated_at, sent_at, delivered_at)
SELECT id, order_id, channel, event, order_id || ':' || event || ':' || channel, recipient,
       CASE WHEN channel = 'email' THEN 'Order #' || order_id || ': ' || headline ELSE '' END,
       CASE WHEN channel = 'sms' THEN left(customer_name, 24) || ', ' || headline || ' (order #' || order_id || ').'
            ELSE 'Hello ' || customer_name || E',\n\n' || upper(left(headline, 1)) || substr(headline, 2)
                 || ' (order #' || order_id || E').\n\nThank you for your order.' END,
       CASE WHEN channel = 'email' THEN '<html><body><p>Hello ' || customer_name || ',</p><p>'
                 || upper(left(headline, 1)) || substr(headline, 2) || ' (order #' || order_id
                 || ').</p><p>Thank you for your order.</p></body></html>' ELSE '' END,
       status,
       CASE status WHEN 'dead' THEN dead_attempts WHEN 'sent' THEN 1 WHEN 'delivered' THEN 1 WHEN 'failed' THEN 1
                   ELSE 0 END,
       0,
       CASE status WHEN 'dead' THEN error_code WHEN 'failed' THEN 'http-503' ELSE '' END,
       CASE status WHEN 'dead' THEN error_message WHEN 'failed' THEN 'Twilio HTTP 503: Service Unavailable'
                   ELSE '' END,
       CASE WHEN status IN ('sent', 'delivered') AND channel = 'sms' THEN 'SM' || md5(id::text)
            WHEN status IN ('sent', 'delivered') THEN '<' || md5(id::text) || '@localhost>' ELSE '' END,
       CASE WHEN status = 'failed' THEN now() + interval '2 minutes' END,
       CASE WHEN status IN ('pending', 'sending') THEN now() + interval '5 minutes' END,
       CASE WHEN status = 'queued' THEN now() END,
       created_at,
       now(),  -- touched within the retention window: the cleanup leaves the seed alone
       CASE WHEN status IN ('sent', 'delivered') THEN created_at + interval '4 seconds' END,
       CASE WHEN status = 'delivered' THEN created_at + interval '30 seconds' END
FROM told
"""

INSERT_ATTEMPTS = """
INSERT INTO notifications_notificationattempt (
    notification_id, number, outcome, error_code, error_message, provider_message_id, worker, started_at, finished_at)
SELECT id, attempts,
       CASE WHEN status IN ('sent', 'delivered') THEN 'sent' WHEN status = 'dead' AND attempts = 1 THEN 'permanent'
            ELSE 'transient' END,
       last_error_code, last_error_message, provider_message_id,
       'celery@' || channel || '-worker-' || (id %% 3 + 1),
       created_at + interval '1 second', created_at + interval '2 seconds'
FROM notifications_notification
WHERE attempts > 0 AND id BETWEEN %(first)s AND %(last)s
"""

# One per dead notification (one in eight discarded by an operator), then requeued ones whose
# notification was sent after all. Resolved within the last 20 days: the cleanup keeps them 30.
INSERT_DEAD_LETTERS = """
INSERT INTO notifications_deadletter (
    notification_id, task_name, task_id, args, kwargs, queue, exception_type, error_code, message, traceback,
    attempts, first_failed_at, last_failed_at, fingerprint, status, resolved_at, resolved_by_id)
WITH picked AS (
    SELECT n.id, n.channel, n.recipient, n.created_at, 'dead' AS notification_status
    FROM notifications_notification AS n WHERE n.status = 'dead' AND n.id BETWEEN %(first)s AND %(last)s
    UNION ALL
    (SELECT n.id, n.channel, n.recipient, n.created_at, n.status
     FROM notifications_notification AS n
     WHERE n.status IN ('sent', 'delivered') AND n.id BETWEEN %(first)s AND %(last)s
     ORDER BY hashint8(n.id) LIMIT %(requeued)s)
), letter AS (
    SELECT p.*, c.*, least(p.created_at + c.attempts * interval '4 minutes', now()) AS failed_at,
           CASE WHEN p.notification_status <> 'dead' THEN 'requeued'
                WHEN abs(hashint8(p.id * 3)) %% 8 = 0 THEN 'discarded' ELSE 'dead' END AS letter_status
    FROM picked AS p JOIN scale_cause AS c ON c.queue = p.channel AND c.cause_no = pg_temp.cause_no(p.id)
)
SELECT id, task_name, md5('task' || id)::uuid::text, jsonb_build_array(id), '{}'::jsonb, queue, exception_type,
       error_code, replace(message, '{recipient}', recipient), traceback, attempts,
       created_at + interval '1 second', failed_at, fingerprint, letter_status,
       CASE WHEN letter_status <> 'dead'
            THEN least(greatest(failed_at + interval '2 hours', now() - interval '20 days'), now()) END,
       CASE WHEN letter_status <> 'dead' THEN %(operator)s END
FROM letter
"""
INSERT_ORPHAN_DEAD_LETTERS = """
INSERT INTO notifications_deadletter (
    notification_id, task_name, task_id, args, kwargs, queue, exception_type, error_code, message, traceback,
    attempts, first_failed_at, last_failed_at, fingerprint, status, resolved_at, resolved_by_id)
SELECT NULL, %(task)s, md5('orphan' || i)::uuid::text, jsonb_build_array(%(order_base)s + i * 97),
       '{"send_sms": true, "send_email": true}'::jsonb, %(queue)s, %(exception)s, '', %(message)s,
       %(traceback)s, 1, now() - interval '1 day' * (i %% 30), now() - interval '1 day' * (i %% 30), %(fingerprint)s,
       'dead', NULL, NULL
FROM generate_series(1, %(count)s) AS i
"""

# Old and finished, with the lowest ids; half sent, most of the rest delivered, a few cancelled or dead.
INSERT_CLEANUP_COHORT = """
WITH shaped AS (
    SELECT i AS id, o.id AS order_id, CASE WHEN i %% 2 = 0 THEN 'sms' ELSE 'email' END AS channel,
           CASE WHEN i %% 2 = 0 THEN o.customer_phone ELSE o.customer_email END AS recipient,
           CASE WHEN i %% 100 < 55 THEN 'sent' WHEN i %% 100 < 97 THEN 'delivered'
                WHEN i %% 100 < 99 THEN 'cancelled' ELSE 'dead' END AS status,
           now() - interval '38 days' + interval '30 days' * i / %(count)s AS created_at
    FROM generate_series(1, %(count)s) AS i
    JOIN orders_order AS o ON o.id = %(order_base)s + 1 + (i - 1) %% %(orders)s
)
INSERT INTO notifications_notification (
    id, order_id, channel, event, dedup_key, recipient, subject, body, html_body, status, attempts, retry_base,
    last_error_code, last_error_message, provider_message_id, created_at, updated_at, sent_at)
SELECT id, order_id, channel, 'placed', 'cleanup:' || id, recipient, '', 'We received your order #' || order_id,
       '', status, CASE WHEN status = 'cancelled' THEN 0 ELSE 1 END, 0,
       CASE WHEN status = 'dead' THEN 'twilio-21211' ELSE '' END, '', '', created_at,
       created_at + interval '1 minute', CASE WHEN status IN ('sent', 'delivered') THEN created_at END
FROM shaped
"""
INSERT_CLEANUP_COHORT_ATTEMPTS = """
INSERT INTO notifications_notificationattempt (
    notification_id, number, outcome, error_code, error_message, provider_message_id, worker, started_at, finished_at)
SELECT id, 1, CASE WHEN status = 'dead' THEN 'permanent' ELSE 'sent' END, last_error_code, '', '',
       'celery@' || channel || '-worker-1', created_at, created_at
FROM notifications_notification
WHERE id <= %(count)s AND attempts > 0
"""

# Written with the order, never published (the broker was down): pending past stale_after.
INSERT_SWEEP_COHORT = """
INSERT INTO notifications_notification (
    order_id, channel, event, dedup_key, recipient, subject, body, html_body, status, attempts, retry_base,
    last_error_code, last_error_message, provider_message_id, stale_after, created_at, updated_at)
SELECT o.id, CASE WHEN i %% 2 = 0 THEN 'sms' ELSE 'email' END, 'shipped', 'sweep:' || i,
       CASE WHEN i %% 2 = 0 THEN o.customer_phone ELSE o.customer_email END, '',
       'Your order #' || o.id || ' is on its way', '', 'pending', 0, 0, '', '', '',
       now() - interval '10 minutes', now() - interval '15 minutes', now() - interval '15 minutes'
FROM generate_series(1, %(count)s) AS i
JOIN orders_order AS o ON o.id = %(order_base)s + 1 + (i - 1) %% %(orders)s
"""
# The seed's own queued, failed, pending and sending rows are waiting work, not lost work.
SEED_NOT_DUE = [
    "UPDATE notifications_notification SET queued_at = now() WHERE status = 'queued' AND id <= %(last)s",
    "UPDATE notifications_notification SET next_attempt_at = now() + interval '1 hour'"
    " WHERE status = 'failed' AND id <= %(last)s",
    "UPDATE notifications_notification SET stale_after = now() + interval '1 hour'"
    " WHERE status IN ('pending', 'sending') AND id <= %(last)s",
]
SEED_TABLES = [
    "orders_order",
    "orders_orderitem",
    "orders_orderstatuschange",
    "orders_idempotencykey",
    "notifications_notification",
    "notifications_notificationattempt",
    "notifications_deadletter",
    "notifications_recipientcorrection",
    "notifications_requeuebatch",
    "django_celery_results_taskresult",
]


# --- database --------------------------------------------------------------------------------


def database_prepare() -> None:
    """Create orderflow_scale if it is missing and bring its schema up to date."""
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone():
            admin.execute("CREATE DATABASE orderflow_scale")
    call_command("migrate", interactive=False, verbosity=0)


def operator():
    """The superuser the admin pages are fetched as; also the owner of the seeded orders."""
    user_model = get_user_model()
    user = user_model.objects.filter(username="scale-admin").first()
    return user or user_model.objects.create_superuser("scale-admin", "scale-admin@example.com", password=None)


def execute(sql: str, params: dict | None = None) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def fetch_value(sql: str, params: dict | None = None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def analyze() -> None:
    execute(
        "ANALYZE orders_order, notifications_notification, notifications_notificationattempt, notifications_deadletter"
    )


# --- the seed --------------------------------------------------------------------------------


def seed_is_complete() -> bool:
    """The seed is there, whole, nothing else is next to it, and it is young enough to reuse."""
    counts = {
        "orders": fetch_value("SELECT count(*) FROM orders_order"),
        "notifications": fetch_value("SELECT count(*) FROM notifications_notification"),
        "dead letters": fetch_value("SELECT count(*) FROM notifications_deadletter"),
    }
    if counts != {"orders": ORDERS, "notifications": NOTIFICATIONS, "dead letters": DEAD_LETTERS}:
        return False
    attempts = fetch_value("SELECT count(*) FROM notifications_notificationattempt")
    expected_attempts = fetch_value("SELECT count(*) FROM notifications_notification WHERE attempts > 0")
    oldest_touch = fetch_value("SELECT min(updated_at) FROM notifications_notification")
    return attempts == expected_attempts and oldest_touch > timezone.now() - SEED_MAX_AGE


def seed_write(*, owner_id: int) -> None:
    """Empty the tables and write the seed in one transaction, then ANALYZE."""
    seed_range = {"first": NOTIFICATION_ID_BASE + 1, "last": SEED_LAST_NOTIFICATION_ID}
    with transaction.atomic():
        execute("TRUNCATE " + ", ".join(SEED_TABLES) + " RESTART IDENTITY CASCADE")
        execute("SET LOCAL work_mem = '256MB'")
        causes_create()
        execute(INSERT_ORDERS, {"base": ORDER_ID_BASE, "owner": owner_id, "count": ORDERS})
        execute(
            INSERT_NOTIFICATIONS, {"base": NOTIFICATION_ID_BASE, "order_base": ORDER_ID_BASE, "count": NOTIFICATIONS}
        )
        execute(INSERT_ATTEMPTS, seed_range)
        dead_notifications = fetch_value(
            "SELECT count(*) FROM notifications_notification WHERE status = 'dead'", seed_range
        )
        requeued = DEAD_LETTERS - ORPHAN_DEAD_LETTERS - dead_notifications
        execute(INSERT_DEAD_LETTERS, {**seed_range, "requeued": requeued, "operator": owner_id})
        orphan_dead_letters_write()
        sequences_advance()
    analyze()


def causes_create() -> None:
    """The causes dead notifications died of, with the fingerprint the product gives each."""
    execute(CREATE_CAUSE_TABLE)
    execute(CREATE_CAUSE_FUNCTION, {"causes": CAUSES_PER_QUEUE})
    rows = []
    for queue in ("sms", "email"):
        task_name = SMS_TASK if queue == "sms" else EMAIL_TASK
        in_queue = [cause for cause in CAUSES if cause[0] == queue]
        for cause_no, (_, exception_type, error_code, message, attempts) in enumerate(in_queue):
            cause_print = fingerprint(
                task_name=task_name, exception_type=exception_type, error_code=error_code, message=message
            )
            trace = traceback_text(exception_type, message)
            rows.append((queue, cause_no, task_name, exception_type, error_code, message, trace, attempts, cause_print))
    with connection.cursor() as cursor:
        cursor.executemany("INSERT INTO scale_cause VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)


def orphan_dead_letters_write() -> None:
    task_name, queue, exception_type, message = ORPHAN_CAUSE
    execute(
        INSERT_ORPHAN_DEAD_LETTERS,
        {
            "task": task_name,
            "queue": queue,
            "exception": exception_type,
            "message": message,
            "traceback": traceback_text(exception_type, message),
            "fingerprint": fingerprint(
                task_name=task_name, exception_type=exception_type, error_code="", message=message
            ),
            "order_base": ORDER_ID_BASE,
            "count": ORPHAN_DEAD_LETTERS,
        },
    )


def traceback_text(exception_type: str, message: str) -> str:
    frames = [
        ("celery/app/trace.py", 453, "trace_task", "R = retval = fun(*args, **kwargs)"),
        ("notifications/tasks.py", 41, "send_notification", "result = services.notification_send(**kwargs)"),
        ("notifications/services.py", 170, "notification_send", "provider_message_id = get_backend(...).send("),
    ]
    lines = ["Traceback (most recent call last):"]
    for path, line, function, code in frames:
        lines += [f'  File "/app/{path}", line {line}, in {function}', f"    {code}"]
    return "\n".join([*lines, f"{exception_type}: {message}", ""])


def sequences_advance() -> None:
    """Ids written by hand: new rows continue after the highest."""
    execute("SELECT setval(pg_get_serial_sequence('orders_order', 'id'), %(last)s)", {"last": ORDER_ID_BASE + ORDERS})
    execute(
        "SELECT setval(pg_get_serial_sequence('notifications_notification', 'id'), %(last)s)",
        {"last": SEED_LAST_NOTIFICATION_ID},
    )


def seed_counts() -> dict[str, int]:
    return {
        "orders": fetch_value("SELECT count(*) FROM orders_order"),
        "notifications": fetch_value("SELECT count(*) FROM notifications_notification"),
        "attempts": fetch_value("SELECT count(*) FROM notifications_notificationattempt"),
        "dead letters": fetch_value("SELECT count(*) FROM notifications_deadletter"),
    }


# --- cohorts next to the seed ----------------------------------------------------------------


def cleanup_cohort_write() -> int:
    """CLEANUP_COHORT finished notifications older than the retention, each with its attempt."""
    params = {"count": CLEANUP_COHORT, "order_base": ORDER_ID_BASE, "orders": ORDERS}
    with transaction.atomic():
        written = execute(INSERT_CLEANUP_COHORT, params)
        execute(INSERT_CLEANUP_COHORT_ATTEMPTS, params)
    analyze()
    return written


def sweep_cohort_write() -> int:
    """SWEEP_COHORT notifications left pending past stale_after; the seed's own rows are not due."""
    with transaction.atomic():
        for statement in SEED_NOT_DUE:
            execute(statement, {"last": SEED_LAST_NOTIFICATION_ID})
        written = execute(INSERT_SWEEP_COHORT, {"count": SWEEP_COHORT, "order_base": ORDER_ID_BASE, "orders": ORDERS})
    execute("ANALYZE notifications_notification")
    return written


def sweep_cohort_delete() -> int:
    return execute("DELETE FROM notifications_notification WHERE id > %(last)s", {"last": SEED_LAST_NOTIFICATION_ID})


def vacuum_analyze() -> None:
    execute(
        "VACUUM (ANALYZE) orders_order, notifications_notification, notifications_notificationattempt,"
        " notifications_deadletter"
    )
