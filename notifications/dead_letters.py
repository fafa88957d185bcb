"""What operators do with dead letters: requeue, discard, and requeue a frozen set in bulk.

Requeueing puts the original task back on its original queue with its original arguments
and gives the notification a fresh set of retries. A dead letter is requeued at most once,
and never when its notification has been sent (or is on its way) since. Requeueing a refusal
that suppressed its recipient lifts that suppression: it says "send to this recipient".
"""

import logging
from dataclasses import dataclass, field
from itertools import islice

from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, QuerySet
from django.db.models.functions import Lower
from django.utils import timezone

from notifications import broker
from notifications.events import log_event
from notifications.models import (
    DeadLetter,
    DeadLetterStatus,
    Notification,
    NotificationStatus,
    RequeueBatch,
    Suppression,
)
from notifications.services import (
    PublishJob,
    notification_reset_for_sending,
    publish_after_commit,
    publish_jobs,
    suppression_key,
    suppressions_of,
)
from orderflow.errors import ApplicationError, Conflict, NotFound

# Dead letters handled per transaction: short locks, and a batch's progress shows as it goes.
logger = logging.getLogger(__name__)

CHUNK = 200
# The most a single "requeue everything matching" may freeze.
MAX_BATCH = 200_000
BATCH_TASK = "notifications.tasks.requeue_dead_letter_batch"


@dataclass
class RequeueOutcome:
    requeued: int = 0
    skipped: dict[int, str] = field(default_factory=dict)  # dead letter id -> why it was left alone
    notification_ids: list[int] = field(default_factory=list)  # of the requeued dead letters


def dead_letters_requeue(*, ids: list[int], by) -> RequeueOutcome:
    """Requeue the dead letters among `ids` that are still dead and whose notification still is."""
    outcome = RequeueOutcome()
    for chunk in batched(sorted(set(ids)), CHUNK):
        with transaction.atomic():
            letters = list(
                DeadLetter.objects.select_for_update(of=("self",))
                .filter(pk__in=chunk)
                .select_related("notification")
                .order_by("pk")
            )
            found = {letter.pk for letter in letters}
            outcome.skipped.update({pk: "no such dead letter" for pk in chunk if pk not in found})
            still_dead = set(
                Notification.objects.select_for_update()
                .filter(pk__in=[letter.notification_id for letter in letters], status=NotificationStatus.DEAD)
                .order_by("created_at", "pk")  # earliest first, as every lock of notifications is taken
                .values_list("pk", flat=True)
            )
            eligible = []
            for letter in letters:
                reason = _why_not_requeueable(letter, still_dead)
                if reason:
                    outcome.skipped[letter.pk] = reason
                else:
                    eligible.append(letter)
            notifications = [letter.notification for letter in eligible if letter.notification]
            # A suppressed recipient (the customer said STOP, the provider refused it, an
            # operator was asked) would only be cancelled unsent: the operator is told instead.
            # A requeue never lifts one: "retry what the outage killed" must not re-subscribe
            # the people who asked to hear no more. It is lifted in Suppressions, on purpose.
            blocked = {
                (suppression.channel, suppression.recipient): suppression
                for suppression in suppressions_of(notifications)
            }
            for letter in list(eligible):
                notification = letter.notification
                suppression = notification and blocked.get(
                    (notification.channel, suppression_key(notification.recipient))
                )
                if suppression:
                    outcome.skipped[letter.pk] = f"its recipient is suppressed: {suppression.explained()}"
                    eligible.remove(letter)
            if not eligible:
                continue
            notification_reset_for_sending([letter.notification_id for letter in eligible if letter.notification_id])
            _resolve(eligible, DeadLetterStatus.REQUEUED, by=by, message="Requeued")
            jobs = [
                PublishJob(
                    letter.notification_id, broker.Message(letter.task_name, letter.args, letter.kwargs, letter.queue)
                )
                for letter in eligible
            ]
            publish_after_commit(publish_jobs, jobs)
            for letter in eligible:
                if letter.notification:
                    log_event("notification.requeued", letter.notification, dead_letter_id=letter.pk, by=by)
        outcome.requeued += len(eligible)
        outcome.notification_ids += [letter.notification_id for letter in eligible if letter.notification_id]
    return outcome


def dead_letters_discard(*, ids: list[int], by) -> int:
    """Mark dead letters as dealt with, without sending anything."""
    discarded = 0
    for chunk in batched(sorted(set(ids)), CHUNK):
        with transaction.atomic():
            letters = list(
                DeadLetter.objects.select_for_update().filter(pk__in=chunk, status=DeadLetterStatus.DEAD).order_by("pk")
            )
            _resolve(letters, DeadLetterStatus.DISCARDED, by=by, message="Discarded")
        discarded += len(letters)
    return discarded


def to_suppressed_recipients(letters: QuerySet) -> QuerySet:
    """The dead letters among `letters` whose recipient is suppressed: a requeue leaves them alone."""
    suppressed = Suppression.objects.filter(
        channel=OuterRef("notification__channel"), recipient=Lower(OuterRef("notification__recipient"))
    )
    return letters.filter(Exists(suppressed))


def requeue_batch_still_dead(batch: RequeueBatch) -> int:
    """How many of a batch's dead letters are still dead: the others were requeued or discarded
    since it was frozen, and a requeue leaves them alone."""
    return _still_dead_in(batch, lambda letters: letters)


def requeue_batch_suppressed(batch: RequeueBatch) -> int:
    """How many of a batch's dead letters, still dead, go to a suppressed recipient."""
    return _still_dead_in(batch, to_suppressed_recipients)


def _still_dead_in(batch: RequeueBatch, narrowed) -> int:
    """The batch's dead letters still dead, narrowed, counted in chunks: a batch holds up to
    MAX_BATCH ids, more than SQLite takes as parameters."""
    return sum(
        narrowed(DeadLetter.objects.filter(pk__in=chunk, status=DeadLetterStatus.DEAD)).count()
        for chunk in batched(batch.dead_letter_ids, 10_000)
    )


def requeue_batch_freeze(*, dead_letters: QuerySet, description: str, by) -> RequeueBatch:
    """Freeze the dead letters a filter matches now, for an operator to confirm."""
    ids = list(
        dead_letters.filter(status=DeadLetterStatus.DEAD).order_by("pk").values_list("pk", flat=True)[: MAX_BATCH + 1]
    )
    if len(ids) > MAX_BATCH:
        raise Conflict(f"More than {MAX_BATCH} dead letters match; narrow the filter and requeue in parts.")
    if not ids:
        raise ApplicationError("No dead letter waiting for an operator matches these filters; nothing to requeue.")
    return RequeueBatch.objects.create(description=description[:500], dead_letter_ids=ids, created_by=by)


def _locked_awaiting_batch(batch_id: int, *, if_cancelled: str, if_confirmed: str) -> RequeueBatch:
    """The batch, locked for the transaction, if it still awaits confirmation; else why not."""
    batch = RequeueBatch.objects.select_for_update().filter(pk=batch_id).first()
    if batch is None:
        raise NotFound(f"Requeue batch {batch_id} does not exist.")
    if batch.status == RequeueBatch.Status.CANCELLED:
        raise Conflict(if_cancelled)
    if batch.status != RequeueBatch.Status.AWAITING_CONFIRMATION:
        raise Conflict(if_confirmed.format(status=batch.get_status_display()))
    return batch


def requeue_batch_confirm(*, batch_id: int, by) -> RequeueBatch:
    """Start requeueing a frozen set in the background."""
    with transaction.atomic():
        batch = _locked_awaiting_batch(
            batch_id,
            if_cancelled="This requeue was cancelled, so nothing was requeued; freeze the dead letters again.",
            if_confirmed="This requeue was already confirmed ({status}).",
        )
        batch.status, batch.confirmed_by = RequeueBatch.Status.RUNNING, by
        batch.confirmed_at = batch.progress_at = timezone.now()
        batch.save(update_fields=["status", "confirmed_by", "confirmed_at", "progress_at"])
    try:
        broker.publish(BATCH_TASK, args=[batch.pk])
    except broker.BrokerUnavailable:
        RequeueBatch.objects.filter(pk=batch.pk).update(
            status=RequeueBatch.Status.AWAITING_CONFIRMATION, confirmed_by=None, confirmed_at=None, progress_at=None
        )
        raise Conflict("The broker is unavailable, so nothing was requeued; try again when it is back.") from None
    return batch


def requeue_batch_cancel(*, batch_id: int, by) -> RequeueBatch:
    """Call off a frozen set before anyone confirms it: it can no longer be confirmed."""
    with transaction.atomic():
        batch = _locked_awaiting_batch(
            batch_id,
            if_cancelled="This requeue was already cancelled.",
            if_confirmed="This requeue was already confirmed ({status}); it can no longer be cancelled.",
        )
        batch.status, batch.cancelled_by, batch.finished_at = RequeueBatch.Status.CANCELLED, by, timezone.now()
        batch.save(update_fields=["status", "cancelled_by", "finished_at"])
    return batch


def requeue_batch_run(*, batch_id: int) -> RequeueBatch:
    """Requeue a confirmed batch chunk by chunk, recording progress as it goes; a run started
    again (its message lost, or a database error) goes on after the last chunk recorded."""
    batch = RequeueBatch.objects.select_related("confirmed_by", "created_by").get(pk=batch_id)
    if batch.status != RequeueBatch.Status.RUNNING:
        return batch
    by = batch.confirmed_by or batch.created_by
    requeued, skipped = batch.requeued, batch.skipped
    for chunk in batched(batch.dead_letter_ids[requeued + skipped :], CHUNK):
        outcome = dead_letters_requeue(ids=list(chunk), by=by)
        requeued += outcome.requeued
        skipped += len(outcome.skipped)
        RequeueBatch.objects.filter(pk=batch.pk).update(requeued=requeued, skipped=skipped, progress_at=timezone.now())
    RequeueBatch.objects.filter(pk=batch.pk).update(status=RequeueBatch.Status.DONE, finished_at=timezone.now())
    batch.refresh_from_db()
    return batch


def requeue_batches_resume(*, quiet_since) -> int:
    """Publish again the run of each confirmed batch quiet since `quiet_since` (its message was
    lost with the broker, or its worker stopped); how many. With the broker gone, the rest wait
    for the next sweep."""
    stalled = list(
        RequeueBatch.objects.filter(status=RequeueBatch.Status.RUNNING, progress_at__lte=quiet_since).values_list(
            "pk", flat=True
        )
    )
    for resumed, batch_id in enumerate(stalled):
        try:
            broker.publish(BATCH_TASK, args=[batch_id])
        except broker.BrokerUnavailable as error:
            logger.warning("requeue batch %s stays quiet until the next sweep, broker unavailable: %s", batch_id, error)
            return resumed
        # Not again before another NOTIFICATIONS_STUCK_AFTER, whether the run starts or not.
        RequeueBatch.objects.filter(pk=batch_id).update(progress_at=timezone.now())
        logger.warning("requeue batch %s had gone quiet; its run is published again", batch_id)
    return len(stalled)


def dead_letter_groups(*, status: str = DeadLetterStatus.DEAD) -> QuerySet:
    """Dead letters grouped by cause, largest group first."""
    return (
        DeadLetter.objects.filter(status=status)
        .values("fingerprint")
        .annotate(
            count=Count("id"),
            task_name=Min("task_name"),
            error_code=Min("error_code"),
            exception_type=Min("exception_type"),
            sample_message=Min("message"),
            last_failed_at=Max("last_failed_at"),
        )
        .order_by("-count", "fingerprint")
    )


def batched(items, size: int):
    """Successive tuples of `size` items (itertools.batched arrives in Python 3.12)."""
    iterator = iter(items)
    while chunk := tuple(islice(iterator, size)):
        yield chunk


def _why_not_requeueable(letter: DeadLetter, still_dead: set[int]) -> str:
    if letter.status != DeadLetterStatus.DEAD:
        return f"already {letter.status}"
    if letter.notification_id and letter.notification_id not in still_dead:
        return f"its notification is {letter.notification.status} now"
    return ""


def _resolve(letters: list[DeadLetter], status: str, *, by, message: str) -> None:
    if not letters:
        return
    DeadLetter.objects.filter(pk__in=[letter.pk for letter in letters]).update(
        status=status, resolved_at=timezone.now(), resolved_by=by
    )
    if by is not None:
        LogEntry.objects.log_actions(
            user_id=by.pk, queryset=letters, action_flag=CHANGE, change_message=message, single_object=False
        )
