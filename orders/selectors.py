"""Reads of orders, scoped to what the asking user may see."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from orders.models import Order


def order_list(*, user: AbstractBaseUser) -> QuerySet[Order]:
    """Staff see every order; an API consumer sees its own."""
    orders = Order.objects.prefetch_related("items")
    return orders if user.is_staff else orders.filter(owner=user)
