"""Tasks the benchmark workers load next to the product's (`--include=bench.celery_tasks`).

They run with the same task options as the product's SMS send task, so that a comparison
changes only what the task does.
"""

from celery import shared_task
from django.conf import settings

from notifications.backends import get_backend
from notifications.tasks import send_sms_notification

SAME_AS_SEND_TASKS = {
    option: getattr(send_sms_notification, option)
    for option in ("acks_late", "reject_on_worker_lost", "soft_time_limit", "time_limit")
}


@shared_task(name="bench.noop", ignore_result=True, **SAME_AS_SEND_TASKS)
def noop(number: int) -> None:
    """Nothing at all: Celery's own ceiling on this broker and worker."""


@shared_task(name="bench.noop_with_result", **SAME_AS_SEND_TASKS)
def noop_with_result(number: int) -> str:
    """Nothing, but its result is stored (CELERY_RESULT_BACKEND): the cost of one result row."""
    return "sent"


@shared_task(
    name="bench.sms_celery_rate_limited", rate_limit=str(settings.NOTIFICATIONS_SMS_RATE_LIMIT), **SAME_AS_SEND_TASKS
)
def sms_celery_rate_limited(recipient: str, body: str) -> str:
    """One SMS through the product's SMS backend, limited only by Celery's per-worker `rate_limit`
    set to the same rate as the global limit."""
    return get_backend("sms").send(recipient=recipient, body=body)
