"""The operator's console: notifications, dead letters, what failed and why, and sending again."""

import contextlib
import json
from datetime import datetime

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ALL_VAR, ERROR_FLAG, ORDER_VAR, PAGE_VAR, ChangeList
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import Q, Value
from django.db.models.functions import Lower
from django.db.models.lookups import In
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from notifications import dead_letters, services
from notifications.models import (
    RECIPIENT_SEARCHED,
    Channel,
    DeadLetter,
    DeadLetterStatus,
    Notification,
    NotificationAttempt,
    NotificationStatus,
    RecipientCorrection,
    RequeueBatch,
    Suppression,
)
from orderflow.admin import (
    LinksOnlyWhereAllowed,
    ReadOnlyInline,
    RefusedActionsNamed,
    SelectedRowsGoneNamed,
    ids_listed,
    needs,
    number_searched,
    refused_as_too_many,
    report_outcome,
)
from orderflow.errors import ApplicationError, Conflict, first_line
from orderflow.masking import mask_recipient, mask_text
from orderflow.middleware import is_bad_filter_error

# Above this many selected rows, requeue goes through a frozen batch and a background task.
INLINE_REQUEUE_LIMIT = 500


class AttemptInline(ReadOnlyInline):
    model = NotificationAttempt
    fields = ["number", "outcome", "error_code", "error_message", "provider_message_id", "worker", "finished_at"]
    readonly_fields = fields


class CorrectionInline(ReadOnlyInline):
    model = RecipientCorrection
    fields = ["created_at", "old_recipient", "new_recipient", "reason", "changed_by"]
    readonly_fields = fields
    verbose_name_plural = "recipient corrections"


class PipelineRowAdmin(LinksOnlyWhereAllowed, RefusedActionsNamed, SelectedRowsGoneNamed, admin.ModelAdmin):
    """Rows the pipeline writes: operators read them and act through actions and forms."""

    show_full_result_count = False  # no second COUNT(*) over a million rows per page

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Rows leave through discard (recorded) or cleanup (aged), never by hand.
        return False

    def get_fields(self, request, obj=None):
        return self.links_the_operator_may_open(request, super().get_fields(request, obj))

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)  # every field is read-only here

    def report(self, request, done: str, skipped: dict[int, str] | list[str]):
        reasons = [f"{pk}: {why}" for pk, why in skipped.items()] if isinstance(skipped, dict) else skipped
        report_outcome(self, request, done=done, reasons=reasons)


ORDER_CONTACT_NAMES = {"customer_phone": "phone", "customer_email": "email"}


def _corrected_message(corrected: services.RecipientCorrected, *, sent_again: bool) -> str:
    """What a correction changed (the notification, and with it the order's contact and its
    other notifications), and whether the notification went again."""
    parts = [f"the order's {ORDER_CONTACT_NAMES[corrected.order_contact]}"] if corrected.order_contact else []
    if corrected.also:
        ids = ", ".join(str(row.pk) for row in corrected.also)
        parts.append(f"the order's notification{'s' if len(corrected.also) > 1 else ''} {ids}")
    changed = f"Recipient corrected, with {' and '.join(parts)}" if parts else "Recipient corrected"
    return f"{changed}; {'queued to send again' if sent_again else 'not sent again'}."


def recipient_forms(term: str) -> set[str]:
    """A searched recipient as typed and as stored: a phone written any way becomes its E.164."""
    forms = {term}
    for channel in Channel.values:
        with contextlib.suppress(ApplicationError):
            forms.add(services.valid_recipient(channel, term))
    return forms


SENT_STATUSES = (NotificationStatus.SENT, NotificationStatus.DELIVERED)
# What freezing and confirming a requeue of all matching takes (may_requeue_in_bulk).
REQUEUE_IN_BULK_PERMISSIONS = "“Can view dead letter” and “Can requeue dead letters”"


# A list's query parameters that choose its order or page, not its rows.
NOT_FILTERS = {ORDER_VAR, PAGE_VAR, ALL_VAR}
# The confirmation of resending a sent notification: when the operator was shown it was sent.
RESEND_SENT_CONFIRMED = "sent_at_seen"


def _sent_at_confirmed(value: str):
    """The sent time a confirmation page showed (its ISO form; empty: never sent)."""
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        raise ApplicationError("The confirmation was not understood; open the notification and resend it.") from None


# Notifications found by a recipient they had before an operator corrected it, at most.
CORRECTED_FROM_SHOWN = 1000


def sent_to(term: str) -> Q:
    """Notifications to the searched recipient: a phone written any way, an email address in any
    case (a probe of the index on RECIPIENT_SEARCHED). The database folds the case of both
    sides, so that they agree beyond ASCII (Python's upper() of ß is SS, SQLite's is ß).

    Also those whose recipient was corrected from it: the provider's refusal in a dead letter
    quotes the number it refused. Their ids are looked up first, so that the search stays a
    probe of indexes (an OR with a subquery would read every notification)."""
    forms = [Lower(Value(form)) for form in sorted(recipient_forms(term))]
    corrected_from = RecipientCorrection.objects.filter(In(Lower("old_recipient"), forms))
    ids = list(corrected_from.values_list("notification_id", flat=True).distinct()[:CORRECTED_FROM_SHOWN])
    return Q(In(RECIPIENT_SEARCHED, forms)) | Q(pk__in=ids)


class CorrectRecipientForm(forms.Form):
    recipient = forms.CharField(max_length=254, help_text="Phone in international form for SMS, or an email address.")
    # The recipient as this form showed it: a change by someone else meanwhile is refused.
    seen_recipient = forms.CharField(max_length=254, widget=forms.HiddenInput, strip=False, required=False)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))
    for_the_order = forms.BooleanField(
        required=False,
        initial=True,
        label="Also for the order",
        help_text="Correct the order's phone or email too, and its other unsent notifications that go to the "
        "old one, so that its next updates reach the customer.",
    )
    requeue = forms.BooleanField(required=False, initial=True, label="Send it again now")


def discarded_without_a_dead_letter_waiting(notification_ids: list[int]) -> set[int]:
    """Of these notifications, those with a discarded dead letter and none still dead."""
    statuses: dict[int, set[str]] = {}
    letters = DeadLetter.objects.filter(notification_id__in=notification_ids).values_list("notification_id", "status")
    for notification_id, status in letters:
        statuses.setdefault(notification_id, set()).add(status)
    return {
        notification_id
        for notification_id, seen in statuses.items()
        if DeadLetterStatus.DISCARDED in seen and DeadLetterStatus.DEAD not in seen
    }


class NotificationChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        dead = [row.pk for row in self.result_list if row.status == NotificationStatus.DEAD]
        discarded = discarded_without_a_dead_letter_waiting(dead) if dead else set()
        for row in self.result_list:
            row.dead_letter_discarded = row.pk in discarded


@admin.register(Notification)
class NotificationAdmin(PipelineRowAdmin):
    list_display = [
        "id",
        "order_link",
        "channel",
        "event",
        "masked_recipient",
        "status_shown",
        "attempts",
        "last_error_code",
        "created_at",
    ]
    list_filter = ["status", "channel", "event", "created_at"]
    search_fields = ["recipient"]  # searched by get_search_results below, so indexes serve it
    search_help_text = (
        "Notification id, order id, recipient (a phone with its country code, written any way, or a whole "
        "email address in any case) or provider message id."
    )
    list_select_related = ["order"]
    readonly_fields = [
        "order_link", "channel", "event", "recipient", "status_shown", "attempts", "retry_base",
        "last_error_code", "last_error_message", "provider_message_id", "subject", "body",
        "next_attempt_at", "queued_at", "stale_after", "created_at", "sent_at", "delivered_at",
    ]  # fmt: skip
    fields = readonly_fields
    links = {"order_link": ("orders.order", "order_number")}
    inlines = [AttemptInline, CorrectionInline]
    actions = ["resend_selected", "cancel_selected"]

    def get_search_results(self, request, queryset, search_term):
        # Exact matches on indexed columns: the admin's own "=field" search compares UPPER(text)
        # and scans a million rows.
        term = search_term.strip()
        if not term:
            return queryset, False
        # An email's Message-ID is stored in its angle brackets; a mail log quotes it with or without.
        bare = term.strip("<>")
        matches = sent_to(term) | Q(provider_message_id__in={term, bare, f"<{bare}>"})
        # Digits alone may be an id, an order number or a phone typed without separators (00...).
        if (number := number_searched(term)) is not None:
            matches |= Q(pk=number) | Q(order_id=number)
        return queryset.filter(matches), False

    def get_urls(self):
        custom = [
            path(
                "<int:notification_id>/correct-recipient/",
                self.admin_site.admin_view(self.correct_recipient_view),
                name="notifications_notification_correct_recipient",
            )
        ]
        return custom + super().get_urls()

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is None or obj.status not in services.CORRECTABLE_STATUSES or not self.has_resend_permission(request):
            return fields
        return ["recipient_to_correct" if field == "recipient" else field for field in fields]

    @admin.display(description="order", ordering="order_id")
    def order_link(self, notification):
        url = reverse("admin:orders_order_change", args=[notification.order_id])
        return format_html('<a href="{}">#{}</a>', url, notification.order_id)

    @admin.display(description="order", ordering="order_id")
    def order_number(self, notification):
        return f"#{notification.order_id}"

    @admin.display(description="recipient")
    def recipient_to_correct(self, notification):
        url = reverse("admin:notifications_notification_correct_recipient", args=[notification.pk])
        return format_html('{} (<a href="{}">correct it</a>)', notification.recipient, url)

    @admin.display(description="recipient")
    def masked_recipient(self, notification):
        return mask_recipient(notification.recipient)

    @admin.display(description="status", ordering="status")
    def status_shown(self, notification):
        if notification.waits_in_order:  # not one the broker missed
            return "pending: waits for an earlier notification of its order"
        if notification.status == NotificationStatus.DEAD and self._dead_letter_discarded(notification):
            return "dead: its dead letter was discarded (dealt with, not to be sent)"
        return notification.get_status_display()

    @staticmethod
    def _dead_letter_discarded(notification) -> bool:
        """Whether an operator discarded its dead letter, none waiting since. A list page sets
        the answer on each row it shows (NotificationChangeList), in one query for all."""
        if hasattr(notification, "dead_letter_discarded"):
            return notification.dead_letter_discarded
        return discarded_without_a_dead_letter_waiting([notification.pk]) == {notification.pk}

    def get_changelist(self, request, **kwargs):
        return NotificationChangeList

    def has_resend_permission(self, request):
        return request.user.has_perm("notifications.resend_notification")

    def has_cancel_permission(self, request):
        return request.user.has_perm("notifications.cancel_notification")

    @staticmethod
    def may_requeue_dead_letters(request) -> bool:
        return request.user.has_perm("notifications.requeue_deadletter")

    def dead_letter_refusal(self, request, notification_id: int) -> str:
        """Sending a dead notification again requeues its dead letter: that takes the permission
        the dead-letter console asks for too, not only resend_notification."""
        if self.may_requeue_dead_letters(request):
            return ""
        if not DeadLetter.objects.filter(notification_id=notification_id, status=DeadLetterStatus.DEAD).exists():
            return ""
        return (
            f"Notification {notification_id} has a dead letter waiting; sending it again requeues that, "
            "which needs the permission notifications.requeue_deadletter."
        )

    @admin.action(description="Send selected notifications again", permissions=["resend"])
    def resend_selected(self, request, queryset):
        if refused_as_too_many(self, request, queryset, what="notifications"):
            return None
        done, waiting, refused = 0, 0, []
        selection = list(queryset.order_by("pk").values_list("pk", "status", "sent_at"))
        confirmed = request.POST.get(RESEND_SENT_CONFIRMED)
        if len(selection) == 1 and selection[0][1] in SENT_STATUSES and confirmed is None:
            # The customer has it already, perhaps only since the list was loaded: say when.
            return self._confirm_resending_a_sent_one(request, queryset.get())
        discarded = discarded_without_a_dead_letter_waiting(
            [notification_id for notification_id, status, _ in selection if status == NotificationStatus.DEAD]
        )
        resent_though_discarded = []
        for notification_id, status, sent_at in selection:
            if len(selection) > 1 and status in SENT_STATUSES:
                # Sending it again is a choice made one at a time, on a page that says when it went.
                refused.append(f"Notification {notification_id} was {status}; resend it on its own.")
                continue
            if refusal := self.dead_letter_refusal(request, notification_id):
                refused.append(refusal)
                continue
            try:
                resent = services.notification_resend(
                    notification_id=notification_id,
                    by=request.user,
                    sent_at_seen=_sent_at_confirmed(confirmed) if confirmed is not None else sent_at,
                )
            except ApplicationError as error:
                refused.append(error.message)
                continue
            # Published once its transaction commits; still pending with a lease after that
            # commit, it was not handed to the broker (away). Pending without one, a worker took
            # it and it waits for an earlier one of its order. Inside an outer transaction
            # nothing is known yet.
            unpublished = resent.status == NotificationStatus.PENDING and not resent.waits_in_order
            if unpublished and not connection.in_atomic_block:
                waiting += 1
            else:
                done += 1
            if notification_id in discarded:
                resent_though_discarded.append(notification_id)
        self.report(request, f"{done} notification(s) queued to send again." if done else "", refused)
        if resent_though_discarded:
            self.message_user(
                request,
                f"The dead letter of notification(s) {ids_listed(resent_though_discarded)} had been discarded "
                "(dealt with, not to be sent); they are sent again all the same.",
                messages.WARNING,
            )
        if waiting:
            self.message_user(
                request,
                f"{waiting} notification(s) to send again could not be handed to the broker now; "
                "the sweep sends them once it is back.",
                messages.WARNING,
            )

    def _confirm_resending_a_sent_one(self, request, notification):
        context = {
            **self.admin_site.each_context(request),
            "title": f"Send notification {notification.pk} again?",
            "notification": notification,
            "recipient": mask_recipient(notification.recipient),
            "sent_at_seen": notification.sent_at.isoformat() if notification.sent_at else "",
            "confirmed_field": RESEND_SENT_CONFIRMED,
            "selected_field": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/notifications/resend_sent.html", context)

    @admin.action(description="Cancel selected notifications", permissions=["cancel"])
    def cancel_selected(self, request, queryset):
        if refused_as_too_many(self, request, queryset, what="notifications"):
            return
        done, refused = 0, []
        for notification_id in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                services.notification_cancel(notification_id=notification_id, by=request.user)
                done += 1
            except ApplicationError as error:
                refused.append(error.message)
        self.report(request, f"{done} notification(s) cancelled." if done else "", refused)

    def correct_recipient_view(self, request, notification_id):
        if not self.has_resend_permission(request):
            raise PermissionDenied(needs("“Can resend or correct notifications”"))
        notification = get_object_or_404(Notification, pk=notification_id)
        if notification.status not in services.CORRECTABLE_STATUSES:  # a form it would only refuse
            self.message_user(request, services.not_correctable(notification), messages.ERROR)
            return redirect("admin:notifications_notification_change", notification.pk)
        form = CorrectRecipientForm(
            request.POST or None,
            initial={"recipient": notification.recipient, "seen_recipient": notification.recipient},
        )
        if refusal := self.dead_letter_refusal(request, notification.pk):
            # Offered, it would be ticked and then not done.
            requeue = form.fields["requeue"]
            requeue.initial, requeue.disabled, requeue.help_text = False, True, refusal
        if not request.user.has_perm("orders.change_order"):
            # The order's contact is the order's: changing it takes what changing an order takes.
            for_the_order = form.fields["for_the_order"]
            for_the_order.initial, for_the_order.disabled = False, True
            for_the_order.help_text = (
                "Correcting the order's phone or email needs the permission to change orders "
                "(“Can change order”); only this notification is corrected."
            )
        if request.method == "POST" and form.is_valid():
            try:
                corrected = services.notification_correct_recipient(
                    notification_id=notification.pk,
                    recipient=form.cleaned_data["recipient"],
                    reason=form.cleaned_data["reason"],
                    by=request.user,
                    seen_recipient=form.cleaned_data["seen_recipient"] or None,
                    for_the_order=form.cleaned_data["for_the_order"],
                )
                self.log_change(request, notification, f"Recipient corrected: {form.cleaned_data['reason']}")
                sent_again = form.cleaned_data["requeue"] and self._send_corrected(request, notification)
                self.message_user(request, _corrected_message(corrected, sent_again=sent_again), messages.SUCCESS)
                if field := corrected.order_contact_left:
                    order = corrected.notification.order
                    self.message_user(
                        request,
                        f"The order's {ORDER_CONTACT_NAMES[field]} was left as it is "
                        f"({mask_recipient(getattr(order, field))}): it is not one this notification went to, so "
                        "someone changed it since. Its next updates go there; correct the order if that is wrong.",
                        messages.WARNING,
                    )
                if idle := corrected.sent_only_once_resent:
                    listed = ", ".join(f"notification {row.pk} ({row.status})" for row in idle)
                    self.message_user(
                        request, f"Sent to the new recipient only once resent: {listed}.", messages.WARNING
                    )
                return redirect("admin:notifications_notification_change", notification.pk)
            except Conflict as error:  # changed meanwhile, or no longer correctable: show it as it is now
                self.message_user(request, error.message, messages.ERROR)
                notification.refresh_from_db()
                page = "correct_recipient" if notification.status in services.CORRECTABLE_STATUSES else "change"
                return redirect(f"admin:notifications_notification_{page}", notification.pk)
            except ApplicationError as error:
                for field, problems in error.fields.items():
                    form.add_error(field if field in form.fields else None, problems)
                if not error.fields:
                    form.add_error(None, error.message)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Correct the recipient of notification {notification.pk}",
            "notification": notification,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/notifications/correct_recipient.html", context)

    def _send_corrected(self, request, notification) -> bool:
        """Send the corrected notification again; False, said why, when it was not."""
        if refusal := self.dead_letter_refusal(request, notification.pk):
            self.message_user(request, f"{refusal} The recipient is corrected; it was not sent.", messages.WARNING)
            return False
        open_letters = list(notification.dead_letters.filter(status="dead").values_list("pk", flat=True))
        try:
            if open_letters:
                outcome = dead_letters.dead_letters_requeue(ids=open_letters, by=request.user)
                if not outcome.requeued:
                    self.message_user(request, "; ".join(map(str, outcome.skipped.values())), messages.WARNING)
                    return False
            else:
                services.notification_resend(notification_id=notification.pk, by=request.user)
        except ApplicationError as error:
            self.message_user(request, error.message, messages.WARNING)
            return False
        return True


class FingerprintFilter(admin.SimpleListFilter):
    """Set from the failures-by-cause page; lists no choices of its own."""

    title = "cause"
    parameter_name = "fingerprint"

    def lookups(self, request, model_admin):
        value = self.value()
        return [(value, "the selected cause")] if value else []

    def queryset(self, request, queryset):
        return queryset.filter(fingerprint=self.value()) if self.value() else queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(PipelineRowAdmin):
    list_display = [
        "id", "task", "queue", "masked_recipient", "order_link", "exception", "short_reason",
        "attempts", "last_failed_at", "status",
    ]  # fmt: skip
    list_filter = ["status", "queue", "task_name", "exception_type", "last_failed_at", FingerprintFilter]
    search_fields = ["message"]  # searched by get_search_results below
    search_help_text = (
        "Order id, recipient (a phone with its country code, written any way, or a whole email address in any "
        "case), or words from the error."
    )
    list_select_related = ["notification"]
    actions = ["requeue_selected", "discard_selected"]
    readonly_fields = [
        "status", "resolved", "task_name", "task_id", "queue", "pretty_args", "pretty_kwargs",
        "exception_type", "error_code", "message", "attempts", "first_failed_at", "last_failed_at",
        "notification_link", "order_link", "recipient", "attempt_history", "pretty_traceback",
    ]  # fmt: skip
    fields = readonly_fields
    links = {
        "order_link": ("orders.order", "order_number"),
        "notification_link": ("notifications.notification", "notification_text"),
    }

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        # "correct it" leads to a form only those who may resend can use; the others see the recipient.
        if request.user.has_perm("notifications.resend_notification"):
            return fields
        return ["plain_recipient" if field == "recipient" else field for field in fields]

    def get_urls(self):
        wrap = self.admin_site.admin_view
        custom = [
            path("by-cause/", wrap(self.groups_view), name="notifications_deadletter_groups"),
            path(
                "requeue-matching/", wrap(self.requeue_matching_view), name="notifications_deadletter_requeue_matching"
            ),
            path("requeue-batch/<int:batch_id>/", wrap(self.batch_view), name="notifications_deadletter_batch"),
        ]
        return custom + super().get_urls()

    def get_search_results(self, request, queryset, search_term):
        # Subqueries on indexed notification columns instead of an OR across a join, which
        # made the database hash every notification.
        term = search_term.strip()
        if not term:
            return queryset, False
        to_them = sent_to(term)
        if (number := number_searched(term)) is not None:  # an order number, or a phone typed as digits
            to_them |= Q(order_id=number)
        matches = Q(message__icontains=term) | Q(notification__in=Notification.objects.filter(to_them).values("pk"))
        return queryset.filter(matches), False

    # --- columns and detail ---

    @admin.display(description="task", ordering="task_name")
    def task(self, letter):
        return letter.task_name.rpartition(".")[2]

    @admin.display(description="exception", ordering="exception_type")
    def exception(self, letter):
        return letter.error_code or letter.exception_type.rpartition(".")[2]

    @admin.display(description="reason")
    def short_reason(self, letter):
        # A provider's error may quote the recipient: masked here as in the recipient column.
        return Truncator(mask_text(letter.message)).chars(80)

    @admin.display(description="recipient")
    def masked_recipient(self, letter):
        return mask_recipient(letter.notification.recipient) if letter.notification else "-"

    @admin.display(description="recipient")
    def recipient(self, letter):
        if not letter.notification:
            return "-"
        url = reverse("admin:notifications_notification_correct_recipient", args=[letter.notification_id])
        return format_html('{} (<a href="{}">correct it</a>)', letter.notification.recipient, url)

    @admin.display(description="recipient")
    def plain_recipient(self, letter):
        return letter.notification.recipient if letter.notification else "-"

    @admin.display(description="order")
    def order_link(self, letter):
        if not letter.notification:
            return "-"
        url = reverse("admin:orders_order_change", args=[letter.notification.order_id])
        return format_html('<a href="{}">#{}</a>', url, letter.notification.order_id)

    @admin.display(description="order")
    def order_number(self, letter):
        return f"#{letter.notification.order_id}" if letter.notification else "-"

    @admin.display(description="notification")
    def notification_link(self, letter):
        if not letter.notification_id:
            return "-"
        url = reverse("admin:notifications_notification_change", args=[letter.notification_id])
        return format_html('<a href="{}">{}</a> ({})', url, letter.notification, letter.notification.status)

    @admin.display(description="notification")
    def notification_text(self, letter):
        return f"{letter.notification} ({letter.notification.status})" if letter.notification else "-"

    @admin.display(description="resolved")
    def resolved(self, letter):
        if not letter.resolved_at:
            return "-"
        return f"{letter.status} by {letter.resolved_by or 'the system'} at {letter.resolved_at:%Y-%m-%d %H:%M:%S}"

    @admin.display(description="args")
    def pretty_args(self, letter):
        return format_html("<pre>{}</pre>", json.dumps(letter.args, indent=2))

    @admin.display(description="kwargs")
    def pretty_kwargs(self, letter):
        return format_html("<pre>{}</pre>", json.dumps(letter.kwargs, indent=2, sort_keys=True))

    @admin.display(description="traceback")
    def pretty_traceback(self, letter):
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', letter.traceback or "-")

    @admin.display(description="attempts of the notification")
    def attempt_history(self, letter):
        if not letter.notification:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (a.number, a.finished_at.strftime("%Y-%m-%d %H:%M:%S"), a.outcome, a.error_code, a.error_message)
                for a in letter.notification.attempt_log.all()
            ),
        )
        return format_html(
            "<table><tr><th>#</th><th>when</th><th>outcome</th><th>code</th><th>message</th></tr>{}</table>", rows
        )

    # --- actions ---

    def has_requeue_permission(self, request):
        return request.user.has_perm("notifications.requeue_deadletter")

    def may_requeue_in_bulk(self, request) -> bool:
        # The batch page lists its dead letters, so it needs the view permission the list needs;
        # the requeue permission alone must not show them.
        return self.has_view_permission(request) and self.has_requeue_permission(request)

    def has_discard_permission(self, request):
        return request.user.has_perm("notifications.discard_deadletter")

    @admin.action(description="Requeue selected dead letters", permissions=["requeue"])
    def requeue_selected(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True)[: INLINE_REQUEUE_LIMIT + 1])
        if len(ids) > INLINE_REQUEUE_LIMIT:
            try:
                batch = dead_letters.requeue_batch_freeze(
                    dead_letters=queryset, description="selected in the dead-letter list", by=request.user
                )
            except ApplicationError as error:
                self.message_user(request, error.message, messages.ERROR)
                return None
            return redirect("admin:notifications_deadletter_batch", batch.pk)
        outcome = dead_letters.dead_letters_requeue(ids=ids, by=request.user)
        # Published as each chunk commits; a notification still pending with a lease after that
        # was not handed to the broker (away). Inside an outer transaction nothing is known yet.
        waiting = 0
        if not connection.in_atomic_block:
            waiting = Notification.objects.filter(
                pk__in=outcome.notification_ids, status=NotificationStatus.PENDING, stale_after__isnull=False
            ).count()
        done = outcome.requeued - waiting
        self.report(request, f"{done} dead letter(s) requeued." if done else "", outcome.skipped)
        if waiting:
            self.message_user(
                request,
                f"{waiting} requeued dead letter(s) could not be handed to the broker now; "
                "the sweep sends them once it is back.",
                messages.WARNING,
            )
        return None

    @admin.action(description="Discard selected dead letters", permissions=["discard"])
    def discard_selected(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        discarded = dead_letters.dead_letters_discard(ids=ids, by=request.user)
        left = len(ids) - discarded
        self.report(
            request,
            f"{discarded} dead letter(s) discarded." if discarded else "",
            [f"{left} already requeued or discarded, left alone."] if left else [],
        )

    # --- pages ---

    def changelist_view(self, request, extra_context=None):
        if request.method == "GET" and ERROR_FLAG in request.GET:  # where Django sends a list it could not filter
            self.message_user(
                request,
                "The list could not apply the filters it was given, and shows every dead letter instead.",
                messages.WARNING,
            )
        extra_context = {**(extra_context or {}), "can_requeue": self.has_requeue_permission(request)}
        return super().changelist_view(request, extra_context)

    def groups_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied(needs("“Can view dead letter”"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Dead letters by cause",
            "groups": dead_letters.dead_letter_groups()[:200],
            "opts": self.model._meta,
            "can_requeue": self.has_requeue_permission(request),
        }
        return TemplateResponse(request, "admin/notifications/deadletter/groups.html", context)

    def requeue_matching_view(self, request):
        """Freeze what the changelist's current filters match (a POST: it writes the batch), then
        show it for confirmation. Filters it cannot apply freeze nothing: never "all" instead."""
        if not self.may_requeue_in_bulk(request):
            raise PermissionDenied(needs(REQUEUE_IN_BULK_PERMISSIONS))
        changelist_url = reverse("admin:notifications_deadletter_changelist")
        filtered_url = f"{changelist_url}?{request.GET.urlencode()}" if request.GET else changelist_url
        if request.method != "POST":
            return redirect(filtered_url)
        # As the operator reads them: q=+1415..., not q=%2B1415..., with a phone or address in the
        # search masked as the lists show them (the description is kept and shown with the batch).
        # The order and page of the list are not filters: the batch is every row matching.
        filters = ", ".join(
            f"{name}={mask_text(value)}"
            for name, values in request.GET.lists()
            if name not in NOT_FILTERS
            for value in values
        )
        filters = filters or "no filter"
        if ERROR_FLAG in request.GET:  # the list dropped filters it could not apply, and shows every row
            self.message_user(
                request,
                "Nothing was frozen: the list could not apply the filters it was given and shows every dead "
                "letter; choose the filters again.",
                messages.ERROR,
            )
            return redirect(changelist_url)
        search = self.get_changelist(request).search_form_class(request.GET)
        if not search.is_valid():  # the changelist would drop the search and match every row
            reasons = "; ".join(error for errors in search.errors.values() for error in errors)
            self.message_user(request, f"Nothing was frozen: the search is not usable ({reasons}).", messages.ERROR)
            return redirect(changelist_url)
        try:
            with transaction.atomic():  # a filter the database refuses leaves any outer transaction usable
                changelist: ChangeList = self.get_changelist_instance(request)
                batch = dead_letters.requeue_batch_freeze(
                    dead_letters=changelist.get_queryset(request), description=f"matching {filters}", by=request.user
                )
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return redirect(filtered_url)
        except Exception as error:
            if not (isinstance(error, IncorrectLookupParameters) or is_bad_filter_error(error)):
                raise
            # Not the list of every field Django adds to an unknown one: the filter's name is enough.
            reason = first_line(error).partition(" Choices are:")[0]
            self.message_user(
                request, f"Nothing was frozen: these filters cannot be applied ({filters}): {reason}", messages.ERROR
            )
            return redirect(changelist_url)
        return redirect("admin:notifications_deadletter_batch", batch.pk)

    def batch_view(self, request, batch_id):
        if not self.may_requeue_in_bulk(request):
            raise PermissionDenied(needs(REQUEUE_IN_BULK_PERMISSIONS))
        batch = get_object_or_404(RequeueBatch, pk=batch_id)
        if request.method == "POST":
            try:
                if "cancel" in request.POST:
                    dead_letters.requeue_batch_cancel(batch_id=batch.pk, by=request.user)
                    self.message_user(request, "Cancelled: nothing was requeued.", messages.SUCCESS)
                    return redirect("admin:notifications_deadletter_changelist")
                to_requeue = dead_letters.requeue_batch_still_dead(batch) - dead_letters.requeue_batch_suppressed(batch)
                dead_letters.requeue_batch_confirm(batch_id=batch.pk, by=request.user)
                self.message_user(
                    request,
                    f"Requeueing {to_requeue} of the {batch.size} dead letter(s) frozen, in the background; "
                    "the others are left alone.",
                    messages.SUCCESS,
                )
            except ApplicationError as error:
                self.message_user(request, error.message, messages.ERROR)
            return redirect("admin:notifications_deadletter_batch", batch.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": "Requeue dead letters",
            "batch": batch,
            "sample": DeadLetter.objects.filter(pk__in=batch.dead_letter_ids[:20]).select_related("notification"),
            **self._still_to_requeue(batch),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/notifications/deadletter/batch.html", context)

    @staticmethod
    def _still_to_requeue(batch: RequeueBatch) -> dict[str, int]:
        """For a batch awaiting confirmation: how many of its dead letters are still dead, how
        many of those go to a suppressed recipient, and so how many a requeue would send."""
        if batch.status != RequeueBatch.Status.AWAITING_CONFIRMATION:
            return {}
        still_dead, suppressed = (
            dead_letters.requeue_batch_still_dead(batch),
            dead_letters.requeue_batch_suppressed(batch),
        )
        return {
            "still_dead": still_dead,
            "gone_since": batch.size - still_dead,
            "suppressed": suppressed,
            "to_requeue": still_dead - suppressed,
        }


class SuppressionForm(forms.ModelForm):
    class Meta:
        model = Suppression
        fields = ["channel", "recipient", "reason"]
        help_texts = {"reason": "Why nothing more is sent to it, e.g. the customer asked us to stop."}

    def clean(self):
        cleaned = super().clean()
        channel, recipient = cleaned.get("channel"), cleaned.get("recipient")
        if channel and recipient:
            try:
                # As it is stored, so that the unique check below compares like with like.
                cleaned["recipient"] = services.suppression_key(services.valid_recipient(channel, recipient))
            except ApplicationError as error:
                self.add_error("recipient", error.message)
        return cleaned


@admin.register(Suppression)
class SuppressionAdmin(LinksOnlyWhereAllowed, RefusedActionsNamed, SelectedRowsGoneNamed, admin.ModelAdmin):
    """Recipients nothing more is sent to: added by a provider's refusal or by an operator,
    lifted by deleting them (or by requeueing the dead letter that added them)."""

    list_display = ["id", "channel", "masked_recipient", "error_code", "short_reason", "created_by", "created_at"]
    list_filter = ["channel", "error_code", "created_at"]
    search_fields = ["recipient"]
    search_help_text = "Recipient: a phone with its country code, written any way, or an exact email address."
    list_select_related = ["created_by"]
    show_full_result_count = False
    form = SuppressionForm
    readonly_fields = ["error_code", "notification_link", "created_by", "created_at"]
    links = {"notification_link": ("notifications.notification", "notification_text")}

    def get_fields(self, request, obj=None):
        fields = (
            ["channel", "recipient", "reason"]
            if obj is None
            else ["channel", "recipient", "reason", *self.readonly_fields]
        )
        return self.links_the_operator_may_open(request, fields)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.get_fields(request, obj)

    @admin.display(description="notification")
    def notification_link(self, suppression):
        if not suppression.notification_id:
            return "-"
        url = reverse("admin:notifications_notification_change", args=[suppression.notification_id])
        return format_html('<a href="{}">{}</a>', url, suppression.notification)

    @admin.display(description="notification")
    def notification_text(self, suppression):
        return str(suppression.notification) if suppression.notification_id else "-"

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()  # exact, on the unique index; a phone as written anywhere is normalised
        if not term:
            return queryset, False
        return queryset.filter(recipient__in={services.suppression_key(form) for form in recipient_forms(term)}), False

    def has_change_permission(self, request, obj=None):
        return False  # a suppression is added or lifted, not edited

    @admin.display(description="recipient", ordering="recipient")
    def masked_recipient(self, suppression):
        return mask_recipient(suppression.recipient)

    @admin.display(description="reason")
    def short_reason(self, suppression):
        return Truncator(mask_text(suppression.reason)).chars(80)

    def save_model(self, request, obj, form, change):
        try:
            saved = services.suppression_add(
                channel=obj.channel, recipient=obj.recipient, reason=obj.reason, by=request.user
            )
        except Conflict:  # another operator added it since this form was checked: it is there
            saved = Suppression.objects.get(channel=obj.channel, recipient=obj.recipient)
        obj.pk, obj.created_by, obj.created_at = saved.pk, saved.created_by, saved.created_at

    def delete_model(self, request, obj):
        self._lift(request, [obj])

    def delete_queryset(self, request, queryset):
        self._lift(request, list(queryset))

    def _lift(self, request, suppressions):
        still_cancelled = services.cancelled_for(suppressions)
        services.suppressions_remove(suppressions=suppressions, by=request.user)
        if still_cancelled:
            self.message_user(
                request,
                f"Notification(s) {ids_listed(still_cancelled)} were cancelled while suppressed and stay "
                "cancelled: lifting sends nothing by itself. Send again the ones that should still go "
                "(Notifications, “Send selected notifications again”).",
                messages.WARNING,
            )


@admin.register(RequeueBatch)
class RequeueBatchAdmin(PipelineRowAdmin):
    list_display = [
        "id",
        "description",
        "size",
        "status",
        "requeued",
        "skipped",
        "created_by",
        "created_at",
        "confirmed_by",
        "cancelled_by",
        "finished_at",
    ]
    list_filter = ["status", "created_at"]
    list_select_related = ["created_by", "confirmed_by", "cancelled_by"]
    fields = [
        "description",
        "status",
        "requeued",
        "skipped",
        "created_by",
        "created_at",
        "confirmed_by",
        "confirmed_at",
        "cancelled_by",
        "progress_at",
        "finished_at",
    ]
    readonly_fields = fields

    @admin.display(description="status", ordering="status")
    def status_with_link(self, batch):
        """An awaiting batch links to the page that confirms or cancels it."""
        if batch.status != RequeueBatch.Status.AWAITING_CONFIRMATION:
            return batch.get_status_display()
        url = reverse("admin:notifications_deadletter_batch", args=[batch.pk])
        return format_html('{} (<a href="{}">confirm or cancel</a>)', batch.get_status_display(), url)

    def get_list_display(self, request):
        return self._status_linked_for(request, super().get_list_display(request))

    def get_fields(self, request, obj=None):
        return self._status_linked_for(request, super().get_fields(request, obj))

    @staticmethod
    def _status_linked_for(request, names) -> list[str]:
        """Those who may requeue dead letters get the link; others could not open its page."""
        if not request.user.has_perm("notifications.requeue_deadletter"):
            return list(names)
        return ["status_with_link" if name == "status" else name for name in names]
