from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from orders import services
from orders.models import ChangeSource


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"shop{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("pw")


def order_line(**overrides) -> services.OrderLine:
    values = {"sku": "TEA-1", "name": "Green tea", "quantity": 2, "unit_price": Decimal("4.50")}
    return services.OrderLine(**{**values, **overrides})


def place_order(*, owner, items=None, **overrides):
    """Place an order through the workflow service, as the API does."""
    values = {
        "customer_name": "Ada Lovelace",
        "customer_email": "ada@example.com",
        "customer_phone": "+44 20 7946 0958",
        "source": ChangeSource.API,
    }
    values.update(overrides)
    return services.order_create(owner=owner, items=items or [order_line()], **values).order
