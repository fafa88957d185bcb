from django.contrib import admin

from notifications.models import DeadLetter, Notification, NotificationAttempt


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the pipeline: operators read them here and act through actions."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AttemptInline(admin.TabularInline):
    model = NotificationAttempt
    extra = 0
    can_delete = False
    fields = ["number", "outcome", "error_code", "error_message", "provider_message_id", "worker", "finished_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "order",
        "channel",
        "event",
        "recipient",
        "status",
        "attempts",
        "last_error_code",
        "created_at",
    ]
    list_filter = ["status", "channel", "event", "created_at"]
    search_fields = ["=id", "=order__id", "recipient", "provider_message_id"]
    date_hierarchy = "created_at"
    list_select_related = ["order"]
    show_full_result_count = False
    inlines = [AttemptInline]


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "task_name",
        "queue",
        "notification",
        "exception_type",
        "error_code",
        "attempts",
        "status",
        "last_failed_at",
    ]
    list_filter = ["status", "queue", "task_name", "last_failed_at"]
    search_fields = ["=notification__order__id", "notification__recipient", "message"]
    date_hierarchy = "last_failed_at"
    list_select_related = ["notification"]
    show_full_result_count = False
