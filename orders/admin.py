import contextlib

from django.contrib import admin, messages
from django.db.models import Count
from django.shortcuts import redirect

from orderflow.admin import (
    LinksOnlyWhereAllowed,
    ReadOnlyInline,
    RefusedActionsNamed,
    SelectedRowsGoneNamed,
    number_searched,
    refused_as_too_many,
    report_outcome,
)
from orderflow.errors import ApplicationError
from orders import services
from orders.models import ChangeSource, Order, OrderItem, OrderStatus, OrderStatusChange
from orders.money import format_money
from orders.phones import phone_to_e164


class OrderItemInline(ReadOnlyInline):
    model = OrderItem
    fields = ["sku", "name", "quantity", "price", "line_total"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("order")  # each line shows the order's currency

    @admin.display(description="unit price")
    def price(self, item):
        return format_money(item.unit_price, item.order.currency)

    @admin.display(description="line total")
    def line_total(self, item):
        return format_money(item.line_total, item.order.currency)


class OrderStatusChangeInline(ReadOnlyInline):
    model = OrderStatusChange
    fields = ["created_at", "from_status", "to_status", "changed_by", "source"]
    readonly_fields = fields
    verbose_name_plural = "status history"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("changed_by")


def _transition_action(to_status: str):
    def move(modeladmin, request, queryset):
        if refused_as_too_many(modeladmin, request, queryset, what="orders"):
            return
        moved, refused = 0, []
        # One transaction per order, in id order, so concurrent bulk actions lock alike.
        for order_id in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                services.order_transition(
                    order_id=order_id, to_status=to_status, by=request.user, source=ChangeSource.ADMIN
                )
                moved += 1
            except ApplicationError as error:
                refused.append(error.message)
        if not moved and not refused:  # the rows left out are named (SelectedRowsGoneNamed)
            modeladmin.message_user(request, "Nothing was changed.", messages.WARNING)
            return
        done = f"{moved} order(s) marked {to_status}." if moved else ""
        report_outcome(modeladmin, request, done=done, reasons=refused, left="refused")

    move.__name__ = f"mark_{to_status}"
    return admin.action(description=f"Mark selected orders {to_status}", permissions=["change"])(move)


@admin.register(Order)
class OrderAdmin(LinksOnlyWhereAllowed, RefusedActionsNamed, SelectedRowsGoneNamed, admin.ModelAdmin):
    links = {"owner": ("auth.user", "owner_name")}
    list_display = ["id", "customer_name", "status", "amount", "item_count", "contact", "owner", "created_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["=id", "customer_name", "customer_email", "customer_phone"]
    search_help_text = "An order number (17 or #17), a name, an email address or a phone written any way."
    date_hierarchy = "created_at"
    list_select_related = ["owner"]
    list_per_page = 50
    readonly_fields = [
        "owner",
        "customer_name",
        "customer_email",
        "customer_phone",
        "status",
        "amount",
        "created_at",
        "updated_at",
    ]
    fields = readonly_fields
    inlines = [OrderItemInline, OrderStatusChangeInline]
    actions = [_transition_action(status) for status in OrderStatus.values if status != OrderStatus.PENDING]

    def get_search_results(self, request, queryset, search_term):
        # Besides the admin's own search: "#17" as the notification lists show an order, and a
        # phone as a person writes it ("0770 090 0123", "(020) 7946-0018"), stored in E.164.
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        number = number_searched(term)
        if number is not None:
            found |= queryset.filter(pk=number)
        with contextlib.suppress(ApplicationError):
            found |= queryset.filter(customer_phone=phone_to_e164(term))
        return found, may_have_duplicates

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(item_count=Count("items"))

    def get_fields(self, request, obj=None):
        return self.links_the_operator_may_open(request, super().get_fields(request, obj))

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)  # every field is read-only here

    @admin.display(description="owner", ordering="owner__username")
    def owner_name(self, order):
        return str(order.owner)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Every field is read-only (orders change through the workflow's actions): a Save button
        # would only report "changed successfully" for nothing, and so would a post made by hand.
        if request.method == "POST":
            self.message_user(
                request,
                "Nothing was saved: an order's fields are read-only here. "
                "Change its status with the actions of the order list.",
                messages.WARNING,
            )
            return redirect(request.path)
        hidden = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}
        return super().change_view(request, object_id, form_url, {**hidden, **(extra_context or {})})

    @admin.display(description="total", ordering="total")
    def amount(self, order):
        return format_money(order.total, order.currency)

    def has_add_permission(self, request):
        # Orders come in through the API, where the workflow service validates them.
        return False

    def has_delete_permission(self, request, obj=None):
        # An order's history and notifications are its record; orders are cancelled, not deleted.
        return False

    @admin.display(description="items", ordering="item_count")
    def item_count(self, order):
        return order.item_count

    @admin.display(description="contact")
    def contact(self, order):
        return " · ".join(part for part in (order.customer_email, order.customer_phone) if part)
