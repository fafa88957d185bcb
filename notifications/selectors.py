"""Reads: for the operator's dashboard, and the sweep's test of a waiting notification."""

from datetime import timedelta

from django.db.models import Count, OuterRef, Q, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from notifications import broker
from notifications.metrics import QUEUES
from notifications.models import (
    UNFINISHED_STATUSES,
    Channel,
    DeadLetter,
    DeadLetterStatus,
    Notification,
    NotificationAttempt,
)
from orderflow.celery import app


def queue_depths() -> dict[str, int | None]:
    """Messages waiting per queue; None for each when the broker does not answer."""
    try:
        return {queue: broker.queue_depth(queue) for queue in QUEUES}
    except broker.BrokerUnavailable:
        return dict.fromkeys(QUEUES)


def workers_seen(*, timeout: float = 1.0) -> list[str]:
    """Node names of the workers that answered a ping within `timeout` seconds."""
    try:
        replies = app.control.ping(timeout=timeout) or []
    except broker.BROKER_ERRORS:
        return []
    return sorted(name for reply in replies for name in reply)


def dead_letters_waiting() -> int:
    return DeadLetter.objects.filter(status=DeadLetterStatus.DEAD).count()


def delivery_timeline(*, hours: int = 24) -> dict[str, list[dict]]:
    """Per channel, one entry an hour (oldest first): sends accepted and sends failed."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=hours - 1)
    slots = {
        channel: {start + timedelta(hours=h): {"sent": 0, "failed": 0} for h in range(hours)}
        for channel in Channel.values
    }
    rows = (
        NotificationAttempt.objects.filter(finished_at__gte=start)
        .annotate(hour=TruncHour("finished_at"))
        .values("hour", "notification__channel", "outcome")
        .annotate(count=Count("id"))
        .order_by()
    )
    for row in rows:
        slot = slots[row["notification__channel"]].get(row["hour"])
        if slot is not None:
            slot["sent" if row["outcome"] == NotificationAttempt.Outcome.SENT else "failed"] += row["count"]
    return {channel: [{"hour": hour, **counts} for hour, counts in hourly.items()] for channel, hourly in slots.items()}


def notifications_to_go_before_outer() -> QuerySet:
    """For Exists(): notifications of the outer row's order and channel, made before it, still to go."""
    return Notification.objects.filter(
        Q(created_at__lt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), pk__lt=OuterRef("pk")),
        order_id=OuterRef("order_id"),
        channel=OuterRef("channel"),
        status__in=UNFINISHED_STATUSES,
    )
