"""Admin pieces every app's console shares."""

from django.contrib import admin


class ReadOnlyInline(admin.TabularInline):
    """History shown under a row (items, status changes, attempts): read, never edited here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False
