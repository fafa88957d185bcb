"""The periodic work beat schedules: the retry sweep and the cleanup.

The sweep finds lost work and leaves waiting work alone. A row is lost when:
- pending past its stale_after: its publish failed (broker down) or never ran;
- sending past its lease: its worker died mid-send;
- failed and overdue by NOTIFICATIONS_STUCK_AFTER: its retry message never arrived;
- queued for longer than NOTIFICATIONS_STUCK_AFTER, and its channel queue holds fewer
  messages than there are queued rows: the oldest rows beyond the queue's depth have no
  message (the broker lost them). A backlog waiting its turn behind the rate limit still has
  its messages, so the sweep does not publish it again;
- waiting for an earlier notification of its order (WAITING) when none is still to
  go: the earlier one finished without publishing it (its worker was killed in between, or
  the database failed it just then). One still waiting is left alone, however long it waits.

A confirmed requeue batch whose run went quiet for NOTIFICATIONS_STUCK_AFTER is published
again too, and goes on after its last chunk recorded.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Q
from django.utils import timezone
from django_celery_results.models import TaskResult

from notifications import broker, dead_letters, selectors, services
from notifications.models import (
    FINISHED_STATUSES,
    WAITING,
    Channel,
    DeadLetter,
    DeadLetterStatus,
    Notification,
    NotificationStatus,
)

logger = logging.getLogger(__name__)

# Rows handled per transaction: small enough that no lock is held for long.
SWEEP_BATCH = 500
CLEANUP_BATCH = 1000


def notifications_sweep() -> dict:
    """Re-publish lost notifications, each once per sweep; return counts by reason."""
    now = timezone.now()
    stuck_after = timedelta(seconds=settings.NOTIFICATIONS_STUCK_AFTER)
    try:
        depths = {channel: broker.queue_depth(channel) for channel in Channel.values}
    except broker.BrokerUnavailable as error:
        logger.warning("sweep skipped, broker unavailable: %s", error)
        return {"skipped": "broker unavailable"}

    counts = {
        # Each ordered by the column of its partial index, so a batch reads the index, not a sort.
        "unpublished": _republish(Q(status=NotificationStatus.PENDING, stale_after__lte=now), order_by="stale_after"),
        "abandoned": _republish(Q(status=NotificationStatus.SENDING, stale_after__lte=now), order_by="stale_after"),
        "retry_lost": _republish(
            Q(status=NotificationStatus.FAILED, next_attempt_at__lte=now - stuck_after), order_by="next_attempt_at"
        ),
        "wait_over": _republish(
            WAITING & ~Q(Exists(selectors.notifications_to_go_before_outer())), order_by="stale_after"
        ),
        "message_lost": 0,
    }
    for channel, depth in depths.items():
        queued = Notification.objects.filter(status=NotificationStatus.QUEUED, channel=channel)
        missing = queued.count() - depth
        if missing > 0:
            counts["message_lost"] += _republish(
                Q(status=NotificationStatus.QUEUED, channel=channel, queued_at__lte=now - stuck_after),
                limit=missing,
                order_by="queued_at",
            )
    counts["requeue_batches_resumed"] = dead_letters.requeue_batches_resume(quiet_since=now - stuck_after)
    if any(counts.values()):
        logger.info("sweep re-published %s", counts)
    return counts


def _republish(condition: Q, *, limit: int | None = None, order_by: str = "pk") -> int:
    """Move matching rows back to pending in batches, then publish each batch once."""
    total = 0
    while limit is None or total < limit:
        size = SWEEP_BATCH if limit is None else min(SWEEP_BATCH, limit - total)
        with transaction.atomic():
            batch = list(
                Notification.objects.select_for_update(skip_locked=True)
                .filter(condition)
                .order_by(order_by)
                .values_list("pk", "channel")[:size]
            )
            if not batch:
                break
            Notification.objects.filter(pk__in=[pk for pk, _ in batch]).update(
                status=NotificationStatus.PENDING,
                stale_after=timezone.now() + timedelta(seconds=settings.NOTIFICATIONS_STUCK_AFTER),
            )
        total += len(batch)
        if services.notifications_publish(notifications=batch) < len(batch):
            break  # the broker went away; what is left stays pending for the next sweep
    return total


def notifications_cleanup() -> dict:
    """Delete what is finished and old, in small batches. Nothing an operator must still act on."""
    now = timezone.now()
    cutoff = now - timedelta(days=settings.NOTIFICATIONS_RETENTION_DAYS)
    # updated_at is when a finished row reached its final status.
    finished = Notification.objects.filter(status__in=FINISHED_STATUSES, updated_at__lt=cutoff).exclude(
        dead_letters__status=DeadLetterStatus.DEAD
    )
    # A requeued dead letter stays until its notification was sent after all.
    delivered_or_gone = Q(notification__isnull=True) | Q(
        notification__status__in=[NotificationStatus.SENT, NotificationStatus.DELIVERED]
    )
    resolved_dead_letters = DeadLetter.objects.filter(
        Q(status=DeadLetterStatus.DISCARDED) | Q(delivered_or_gone, status=DeadLetterStatus.REQUEUED),
        resolved_at__lt=now - timedelta(days=settings.NOTIFICATIONS_DEAD_LETTER_RETENTION_DAYS),
    )
    return {
        "dead_letters": _delete_in_batches(resolved_dead_letters),
        "notifications": _delete_in_batches(finished),
        "task_results": _delete_in_batches(TaskResult.objects.filter(date_done__lt=cutoff)),
    }


def _delete_in_batches(queryset) -> int:
    deleted = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:CLEANUP_BATCH])
        if not ids:
            return deleted
        with transaction.atomic():
            queryset.model.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
