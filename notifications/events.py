"""One log line per thing that happens to a notification, carrying its order, notification
and task ids. Plain text reads as `event key=value ...`; the JSON format has the same fields."""

import logging

from orderflow.masking import mask_recipient

logger = logging.getLogger("orderflow.notifications")


def log_event(event: str, notification, *, level: int = logging.INFO, **fields) -> None:
    if not logger.isEnabledFor(level):
        return  # every send logs twice: build nothing when no one reads it
    context = {
        "event": event,
        "order_id": notification.order_id,
        "notification_id": notification.pk,
        "channel": notification.channel,
        "recipient": mask_recipient(notification.recipient),
        **{key: value for key, value in fields.items() if value not in (None, "")},
    }
    logger.log(level, " ".join([event, *(f"{key}={value}" for key, value in list(context.items())[1:])]), extra=context)
