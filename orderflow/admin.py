"""Admin pieces every app's console shares."""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import model_format_dict
from django.shortcuts import redirect

from orderflow.parsers import whole_number

# Reasons shown one message each; the rest are counted, so a bulk action over thousands of
# rows leaves a page the operator can read.
REASONS_SHOWN = 10


def number_searched(term: str) -> int | None:
    """A searched id or order number, also written "#16" as the lists show orders."""
    return whole_number(term.removeprefix("#").strip())


def needs(permissions: str) -> str:
    """Why a page of the console answers 403, shown on it (templates/403.html)."""
    return f"This page needs the permission {permissions}, which your account does not have; ask an administrator."


def ids_listed(ids: list[int]) -> str:
    """Ids for a message: the first REASONS_SHOWN, then an ellipsis for the rest."""
    return ", ".join(map(str, ids[:REASONS_SHOWN])) + (" …" if len(ids) > REASONS_SHOWN else "")


class ReadOnlyInline(admin.TabularInline):
    """History shown under a row (items, status changes, attempts): read, never edited here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def may_view(request, label: str) -> bool:
    """Whether the operator may open that model's admin pages: Django's view permission, or change."""
    app_label, model_name = label.split(".")
    return any(request.user.has_perm(f"{app_label}.{verb}_{model_name}") for verb in ("view", "change"))


class LinksOnlyWhereAllowed:
    """Fields and columns linking to another admin page are shown without the link to an
    operator who may not open that page (it would answer 403)."""

    links: dict[str, tuple[str, str]] = {}  # name: (app_label.model_name linked to, name shown instead)

    def get_list_display(self, request):
        return self.links_the_operator_may_open(request, super().get_list_display(request))

    def links_the_operator_may_open(self, request, names) -> list[str]:
        shown = []
        for name in names:
            linked, plain = self.links.get(name, ("", name))
            shown.append(name if not linked or may_view(request, linked) else plain)
        return shown


# Rows an action that changes them one by one takes at once: about 4 s of work, well inside a
# web server's request timeout (gunicorn's 30 s), which otherwise cut it off part done.
ROW_BY_ROW_ACTION_LIMIT = 500


def refused_as_too_many(modeladmin, request, queryset, *, what: str) -> bool:
    """Whether the selection is over ROW_BY_ROW_ACTION_LIMIT, and then say so; nothing is changed."""
    selected = queryset.count()
    if selected <= ROW_BY_ROW_ACTION_LIMIT:
        return False
    modeladmin.message_user(
        request,
        f"{selected} {what} are selected; this action takes at most {ROW_BY_ROW_ACTION_LIMIT} at a time. "
        "Nothing was changed: narrow the list with its filters, or select fewer.",
        messages.ERROR,
    )
    return True


def report_outcome(modeladmin, request, *, done: str, reasons: list[str], left: str = "left alone") -> None:
    """Tell the operator what a bulk action did and why the rows it did not change were left."""
    if done:
        modeladmin.message_user(request, done, messages.SUCCESS)
    for reason in reasons[:REASONS_SHOWN]:
        modeladmin.message_user(request, reason, messages.WARNING)
    if len(reasons) > REASONS_SHOWN:
        modeladmin.message_user(request, f"… and {len(reasons) - REASONS_SHOWN} more {left}.", messages.WARNING)


class RefusedActionsNamed:
    """A posted action the operator may not run, from a page loaded before a permission was
    taken away or from a forged form, is refused by its name. Django would answer "No action
    selected." or, with no action left to the operator, nothing at all."""

    def changelist_view(self, request, extra_context=None):
        name = request.POST.get("action", "") if request.method == "POST" else ""
        # Those who may not see the list get Django's 403 first.
        if name and self.has_view_or_change_permission(request) and name not in self.get_actions(request):
            description = self.all_action_descriptions().get(name)
            if description:
                self.message_user(
                    request,
                    f"You may not use “{description}”: that needs a permission you do not have. Nothing was changed.",
                    messages.ERROR,
                )
                return redirect(request.get_full_path())
        return super().changelist_view(request, extra_context)

    def all_action_descriptions(self) -> dict[str, str]:
        """Every action of this page by name, whoever asks: the site's and this admin's own."""
        candidates = [func for _, func in self.admin_site.actions] + list(self.actions or [])
        found = (self.get_action(candidate) for candidate in candidates)
        return {name: str(description) % model_format_dict(self.opts) for _, name, description in filter(None, found)}


class SelectedRowsGoneNamed:
    """Django runs an action on the selected rows still in the list and says nothing of the
    others: rows removed, or changed so that the list's filters no longer match them, since
    the page was loaded. They are named."""

    def response_action(self, request, queryset):
        values = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        selected = {number for number in map(whole_number, values) if number is not None}
        if selected and request.POST.get("select_across") != "1":
            found = set(queryset.filter(pk__in=selected).values_list("pk", flat=True))
            if gone := sorted(selected - found):
                self.message_user(
                    request,
                    f"{len(gone)} selected row(s) are no longer in this list (removed, or changed so that its "
                    f"filters no longer match) and were left out: {ids_listed(gone)}.",
                    messages.WARNING,
                )
        return super().response_action(request, queryset)
