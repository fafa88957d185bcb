"""Admin pieces every app's console shares."""

from django.contrib import admin, messages

# Reasons shown one message each; the rest are counted, so a bulk action over thousands of
# rows leaves a page the operator can read.
REASONS_SHOWN = 10


class ReadOnlyInline(admin.TabularInline):
    """History shown under a row (items, status changes, attempts): read, never edited here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def report_outcome(modeladmin, request, *, done: str, reasons: list[str], left: str = "left alone") -> None:
    """Tell the operator what a bulk action did and why the rows it did not change were left."""
    if done:
        modeladmin.message_user(request, done, messages.SUCCESS)
    for reason in reasons[:REASONS_SHOWN]:
        modeladmin.message_user(request, reason, messages.WARNING)
    if len(reasons) > REASONS_SHOWN:
        modeladmin.message_user(request, f"… and {len(reasons) - REASONS_SHOWN} more {left}.", messages.WARNING)
