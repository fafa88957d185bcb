from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from orderflow.masking import mask_recipient


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"


class Event(models.TextChoices):
    """What the customer is told about: the order was placed, or it reached a status."""

    PLACED = "placed"
    CONFIRMED = "confirmed"
    PROCESSING = "processing"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class NotificationStatus(models.TextChoices):
    PENDING = "pending"  # not handed to the broker: its publish failed, or it waits for an earlier one of its order
    QUEUED = "queued"  # published to its channel queue
    SENDING = "sending"  # claimed by a worker
    SENT = "sent"  # accepted by the provider
    DELIVERED = "delivered"  # confirmed by a delivery receipt
    FAILED = "failed"  # a transient error; another attempt is due at next_attempt_at
    DEAD = "dead"  # a permanent error or retries exhausted; see its DeadLetter
    CANCELLED = "cancelled"  # withdrawn by an operator, or its recipient is suppressed


# Statuses whose stale_after deadline the sweep watches: not yet published, or claimed by a worker.
LEASED_STATUSES = (NotificationStatus.PENDING, NotificationStatus.SENDING)
FINISHED_STATUSES = (
    NotificationStatus.SENT,
    NotificationStatus.DELIVERED,
    NotificationStatus.DEAD,
    NotificationStatus.CANCELLED,
)
# Still to go: written, queued, being sent or waiting for a retry.
UNFINISHED_STATUSES = tuple(status for status in NotificationStatus if status not in FINISHED_STATUSES)
# Pending without a lease: published, then made to wait by a worker for an earlier notification
# of its order on its channel (notifications.services.WAIT_SQL); not lost, the sweep leaves it.
WAITING = Q(status=NotificationStatus.PENDING, stale_after__isnull=True)


# Twilio's SIDs are 34 characters; an email's Message-ID is <time.pid.random@domain>, about 45
# plus the sending domain's own length (up to 253).
PROVIDER_MESSAGE_ID_LENGTH = 300


class NotificationQuerySet(models.QuerySet):
    def update(self, **fields):
        # Status changes are conditional UPDATEs; updated_at must move with them, as auto_now
        # would on save(), because cleanup ages finished rows by it.
        fields.setdefault("updated_at", timezone.now())
        return super().update(**fields)


# The recipient as the admin's search compares it: an email address is found however its case
# was typed (Ada.Lovelace@Example.com by ada.lovelace@example.com); a phone in E.164 is itself.
# Lower case, as suppressions keep a recipient (services.suppression_key).
RECIPIENT_SEARCHED = Lower("recipient")


class Notification(models.Model):
    # Indexed by notification_order (order, created_at): every index is written by every send.
    order = models.ForeignKey("orders.Order", on_delete=models.CASCADE, related_name="notifications", db_index=False)
    channel = models.CharField(max_length=10, choices=Channel)
    event = models.CharField(max_length=20, choices=Event)
    dedup_key = models.CharField(
        max_length=100, help_text="order:event:channel; one notification per event and channel"
    )
    recipient = models.CharField(max_length=254, help_text="E.164 phone number or email address")
    subject = models.CharField(max_length=255, blank=True)
    body = models.TextField()
    html_body = models.TextField(blank=True)

    status = models.CharField(max_length=10, choices=NotificationStatus, default=NotificationStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Sends handed to the provider")
    retry_base = models.PositiveIntegerField(
        default=0, help_text="Attempts made before the last requeue; retries are counted from here"
    )
    last_error_code = models.CharField(max_length=50, blank=True)
    last_error_message = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=PROVIDER_MESSAGE_ID_LENGTH, blank=True)

    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="When a failed send is retried")
    stale_after = models.DateTimeField(
        null=True, blank=True, help_text="When the sweep may treat a pending or sending row as lost"
    )
    queued_at = models.DateTimeField(null=True, blank=True, help_text="Last published to its channel queue")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["order", "created_at"], name="notification_order"),
            models.Index(fields=["stale_after"], name="notification_leased", condition=Q(status__in=LEASED_STATUSES)),
            models.Index(
                fields=["channel", "queued_at"],
                name="notification_queued",
                condition=Q(status=NotificationStatus.QUEUED),
            ),
            models.Index(
                fields=["next_attempt_at"],
                name="notification_retry_due",
                condition=Q(status=NotificationStatus.FAILED),
            ),
            models.Index(fields=["status", "-created_at"], name="notification_status_created"),
            models.Index(fields=["-created_at", "-id"], name="notification_created"),
            models.Index(RECIPIENT_SEARCHED, name="notification_recipient_lower"),
            models.Index(fields=["provider_message_id"], name="notification_provider_id"),
            models.Index(
                fields=["updated_at"], name="notification_finished", condition=Q(status__in=FINISHED_STATUSES)
            ),
        ]
        constraints = [
            # A constraint rather than unique=True, which would add a LIKE index no query uses.
            models.UniqueConstraint(fields=["dedup_key"], name="notification_dedup_key"),
        ]
        permissions = [
            ("resend_notification", "Can resend or correct notifications"),
            ("cancel_notification", "Can cancel notifications"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} {self.event} for order {self.order_id}"

    @property
    def waits_in_order(self) -> bool:
        """Pending because an earlier notification of its order on its channel goes first (WAITING)."""
        return self.status == NotificationStatus.PENDING and self.stale_after is None

    @staticmethod
    def make_dedup_key(order_id: int, event: str, channel: str) -> str:
        return f"{order_id}:{event}:{channel}"


class NotificationAttempt(models.Model):
    """One row per hand-over to the provider, whatever came of it."""

    class Outcome(models.TextChoices):
        SENT = "sent"
        TRANSIENT_ERROR = "transient", "transient error"
        PERMANENT_ERROR = "permanent", "permanent error"

    # Indexed by attempt_notification (notification, number).
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempt_log", db_index=False)
    number = models.PositiveIntegerField()
    outcome = models.CharField(max_length=10, choices=Outcome)
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=PROVIDER_MESSAGE_ID_LENGTH, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    class Meta:
        ordering = ["notification", "number"]
        indexes = [
            models.Index(fields=["notification", "number"], name="attempt_notification"),
            models.Index(fields=["finished_at"], name="attempt_finished"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.outcome}"


class DeadLetterStatus(models.TextChoices):
    DEAD = "dead"  # waiting for an operator
    REQUEUED = "requeued"
    DISCARDED = "discarded"


class DeadLetter(models.Model):
    """A task that failed for good: what it was, why, and what an operator did about it."""

    notification = models.ForeignKey(
        Notification, null=True, blank=True, on_delete=models.SET_NULL, related_name="dead_letters"
    )
    task_name = models.CharField(max_length=200)
    task_id = models.CharField(max_length=255, blank=True)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    queue = models.CharField(max_length=50)
    exception_type = models.CharField(max_length=200)
    error_code = models.CharField(max_length=50, blank=True)
    message = models.TextField()
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField()
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    fingerprint = models.CharField(
        max_length=40, blank=True, help_text="Same task, error and normalised message: the same cause"
    )
    status = models.CharField(max_length=10, choices=DeadLetterStatus, default=DeadLetterStatus.DEAD)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-last_failed_at", "-id"]
        permissions = [
            ("requeue_deadletter", "Can requeue dead letters"),
            ("discard_deadletter", "Can discard dead letters"),
        ]
        indexes = [
            models.Index(fields=["-last_failed_at", "-id"], name="deadletter_failed"),
            models.Index(fields=["status", "-last_failed_at"], name="deadletter_status_failed"),
            models.Index(fields=["queue", "-last_failed_at"], name="deadletter_queue_failed"),
            models.Index(fields=["task_name", "-last_failed_at"], name="deadletter_task_failed"),
            models.Index(fields=["exception_type", "-last_failed_at"], name="deadletter_exception_failed"),
            models.Index(fields=["fingerprint", "status"], name="deadletter_fingerprint"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} ({self.exception_type})"


class RecipientCorrection(models.Model):
    """An operator's fix of a notification's recipient: what it was, what it became, who and why."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="corrections")
    old_recipient = models.CharField(max_length=254)
    new_recipient = models.CharField(max_length=254)
    reason = models.TextField()
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.old_recipient} -> {self.new_recipient}"


class Suppression(models.Model):
    """A recipient a channel's provider refused for good (unsubscribed, not a mobile number, no
    such mailbox): later notifications to it are cancelled unsent, not sent into the same refusal.

    An operator lifts one by deleting it (the customer subscribed again) or by requeueing the
    dead letter that made it.
    """

    channel = models.CharField(max_length=10, choices=Channel)
    recipient = models.CharField(max_length=254, help_text="E.164 phone number or email address")
    error_code = models.CharField(max_length=50, blank=True, help_text="The provider's refusal, e.g. twilio-21610")
    reason = models.TextField()
    notification = models.ForeignKey(
        Notification,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The send the provider refused",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty when a provider's refusal made it",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Also the index the claim's NOT EXISTS reads on every send.
            models.UniqueConstraint(fields=["recipient", "channel"], name="suppression_recipient_channel"),
        ]

    def __str__(self) -> str:
        # Masked: the admin shows it in lists, confirmations and its history.
        return f"{self.get_channel_display()} to {mask_recipient(self.recipient)}"

    def explained(self) -> str:
        """Why nothing is sent to the recipient, and what to do about it, for an operator."""
        since = f"{self.created_at:%Y-%m-%d}"
        why = (
            f"the provider refused this recipient on {since} ({self.error_code}: {self.reason})"
            if self.error_code
            else f"an operator suppressed this recipient on {since} ({self.reason})"
        )
        # Who may lift it is said: an operator who may only resend cannot open that page.
        return (
            f"{why}; to send to it again, lift its suppression (Suppressions, #{self.pk}; "
            "needs the permission “Can delete suppression”)"
        )


class RequeueBatch(models.Model):
    """A set of dead letters frozen when an operator asked to requeue everything matching a filter.

    Rows that die after the confirmation page was shown are not in it.
    """

    class Status(models.TextChoices):
        AWAITING_CONFIRMATION = "awaiting", "awaiting confirmation"
        RUNNING = "running"
        DONE = "done"
        CANCELLED = "cancelled"

    description = models.CharField(max_length=500)
    dead_letter_ids = models.JSONField(default=list)
    status = models.CharField(max_length=10, choices=Status, default=Status.AWAITING_CONFIRMATION)
    requeued = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # The operator who confirmed it: the requeues are theirs, whoever froze the set.
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    confirmed_at = models.DateTimeField(null=True, blank=True)
    # Or the operator who called it off instead (finished_at is then when): nothing was requeued.
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The run's last sign of life (the confirmation, then each chunk done): a running batch quiet
    # for longer than NOTIFICATIONS_STUCK_AFTER lost its run, and the sweep starts it again.
    progress_at = models.DateTimeField("last progress", null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "requeue batches"

    def __str__(self) -> str:
        return f"requeue of {len(self.dead_letter_ids)} dead letter(s)"

    @property
    def size(self) -> int:
        return len(self.dead_letter_ids)
