"""{{ order.total|money:order.currency }} and, for SMS, {{ order.total|money_code:order.currency }}."""

from django import template

from orders.money import format_money, format_money_code

register = template.Library()


@register.filter
def money(amount, currency: str) -> str:
    return format_money(amount, currency)


@register.filter
def money_code(amount, currency: str) -> str:
    return format_money_code(amount, currency)
