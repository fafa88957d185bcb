"""Celery tasks: each loads by id and calls a service; the services decide what happens."""

import logging

from celery import shared_task
from celery.signals import task_prerun, worker_init
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections

from notifications import dead_letters, services, sweeps
from notifications.backends import get_backend
from notifications.models import Channel, Event

logger = logging.getLogger(__name__)

# The retry policy lives in notifications.services; a task only re-runs when the service
# says so (SendResult.retry_in). Database outages: the service writes the outcome of a send
# already made again for a few seconds (services._until_written), then hands it to the task's
# retry (`sent`), which only writes it. A send meeting the database away waits for it in the
# service (services.CLAIM_DATABASE_WAIT_SECONDS at the claim), then goes to the end of its
# queue; another DatabaseError (a bad statement) runs it again after a backoff.
SEND_TASK_OPTIONS = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,
    "autoretry_for": (DatabaseError,),
    # The attempt log is the record of a send; a result row per send would double the writes.
    "ignore_result": True,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
}


def _send(task, notification_id: int, sent: dict | None) -> str:
    who = {"notification_id": notification_id, "task_id": task.request.id or "", "worker": task.request.hostname or ""}
    if sent is None:
        try:
            result = services.notification_send(**who)
        except (OperationalError, InterfaceError) as error:
            # The database away for longer than the service waits for it: to the end of the
            # queue in the broker, not into this worker's memory as a countdown, which would take
            # in the whole backlog. A row left claimed (a claim given back or a failure that could
            # not be written) is then found busy, and looked at again when its lease ends.
            raise task.retry(exc=error, countdown=0, max_retries=None) from error
    else:
        result = services.notification_record_sent(sent=services.SentMessage.from_task_argument(sent), **who)
    if result.retry_in is not None:
        # A send made but not written down travels in the retry's message: it is written, not made again.
        kwargs = {**task.request.kwargs, "sent": result.sent.as_task_argument()} if result.sent else None
        raise task.retry(countdown=max(0.0, result.retry_in), max_retries=None, kwargs=kwargs)
    return result.outcome


def _send_task_options(channel: str) -> dict:
    # Each channel's own time limits: an SMTP conversation may take longer than a Twilio request.
    return {
        **SEND_TASK_OPTIONS,
        "soft_time_limit": services.SEND_SOFT_TIME_LIMITS[channel],
        "time_limit": services.SEND_TIME_LIMITS[channel],
    }


@shared_task(name="notifications.tasks.send_sms_notification", **_send_task_options(Channel.SMS))
def send_sms_notification(self, notification_id: int, sent: dict | None = None) -> str:
    """Send one SMS notification through the SMS backend, under the global SMS rate limit.

    `sent` is set only by the task's own retry, for a send made whose outcome is still to be written.
    """
    return _send(self, notification_id, sent)


@shared_task(name="notifications.tasks.send_email_notification", **_send_task_options(Channel.EMAIL))
def send_email_notification(self, notification_id: int, sent: dict | None = None) -> str:
    """Send one email notification through the email backend, under the global email rate limit.

    `sent` is set only by the task's own retry, for a send made whose outcome is still to be written.
    """
    return _send(self, notification_id, sent)


@shared_task(name="notifications.tasks.send_order_confirmation", acks_late=True)
def send_order_confirmation(order_id: int, send_sms: bool = True, send_email: bool = True) -> int:
    """Make sure the order's confirmation exists on the chosen channels and is queued (idempotent)."""
    channels = [channel for channel, wanted in ((Channel.SMS, send_sms), (Channel.EMAIL, send_email)) if wanted]
    return services.notifications_queue_for_event(order_id=order_id, event=Event.PLACED, channels=channels)


@shared_task(name="notifications.tasks.send_order_status_update", acks_late=True)
def send_order_status_update(order_id: int, old_status: str, new_status: str) -> int:
    """Make sure the notifications for the order reaching `new_status` exist and are queued (idempotent)."""
    if new_status not in Event.values or new_status == Event.PLACED:
        raise ValueError(f"{new_status!r} is not a status orders notify about; use one of {Event.values[1:]}")
    return services.notifications_queue_for_event(
        order_id=order_id, event=new_status, channels=[Channel.SMS, Channel.EMAIL]
    )


# The database away: tried again for about an hour (a receipt handed over by the webhook while
# it was away, services.RECEIPT_DATABASE_WAIT_SECONDS), then logged as failed.
@shared_task(
    name=services.RECORD_RECEIPT_TASK,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    max_retries=15,
    retry_backoff=services.RECEIPT_DATABASE_WAIT_SECONDS,
    retry_backoff_max=300,
)
def record_receipt(provider_message_id: str, provider_status: str, error_code: str = "", tries: int = 0) -> str:
    """Apply a delivery receipt that came before its message was written down; later again while it is not."""
    outcome = services.notification_record_receipt(
        provider_message_id=provider_message_id, provider_status=provider_status, error_code=error_code
    )
    if outcome == services.UNKNOWN_MESSAGE:
        services.notification_record_receipt_later(
            provider_message_id=provider_message_id, provider_status=provider_status, error_code=error_code, tries=tries
        )
    return outcome


@shared_task(name="notifications.tasks.retry_failed_notifications")
def retry_failed_notifications() -> dict:
    """The sweep: re-publish due retries and lost outbox rows."""
    return sweeps.notifications_sweep()


@shared_task(name="notifications.tasks.cleanup_old_notifications")
def cleanup_old_notifications() -> dict:
    """Delete finished notifications, task results and resolved dead letters past their age."""
    return sweeps.notifications_cleanup()


@shared_task(name="notifications.tasks.health_check")
def health_check() -> str:
    """A no-op round trip through a worker, for monitoring."""
    return "ok"


# The database away or locked mid-run: tried again a few times, then the sweep starts it again.
@shared_task(
    name="notifications.tasks.requeue_dead_letter_batch",
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    max_retries=5,
    retry_backoff=2,
    retry_backoff_max=60,
)
def requeue_dead_letter_batch(batch_id: int) -> dict:
    """Requeue a frozen set of dead letters an operator confirmed in the admin."""
    batch = dead_letters.requeue_batch_run(batch_id=batch_id)
    return {"requeued": batch.requeued, "skipped": batch.skipped}


@task_prerun.connect
def drop_unusable_connections(**kwargs):
    """Connections are reused across tasks; one the database dropped (a restart) is replaced here."""
    close_old_connections()


@worker_init.connect
def build_backends_before_the_pool_starts(sender, **kwargs):
    """Build the backends of the channels this worker consumes in its main process, so that each
    pool process forked from it, also after a recycle, has them ready instead of loading them."""
    consumed = sender.app.amqp.queues.consume_from or {}  # the queues of -Q; empty: all of them
    for channel in Channel.values:
        if consumed and channel not in consumed:
            continue
        try:
            get_backend(channel)
        except ImproperlyConfigured as error:
            # Sends on this channel wait (deferred) until it is fixed; say so once, at start-up.
            logger.error("configuration error: %s", error)
