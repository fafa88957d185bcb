"""Every write to an order goes through here: creation and the status workflow."""

import hashlib
import json
from dataclasses import asdict, dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from orderflow.errors import ApplicationError, Conflict, NotFound
from orders.models import (
    ALLOWED_TRANSITIONS,
    ChangeSource,
    IdempotencyKey,
    Order,
    OrderItem,
    OrderStatus,
    OrderStatusChange,
)
from orders.money import currency_problem, minor_digits
from orders.phones import phone_to_e164
from orders.signals import order_placed, order_status_changed

# Order.total holds 12 digits, 2 of them decimals.
MAX_ORDER_TOTAL = Decimal("9999999999.99")


@dataclass(frozen=True)
class OrderLine:
    sku: str
    name: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class OrderCreateResult:
    order: Order
    created: bool  # False when an Idempotency-Key replayed an earlier create


class TransitionNotAllowed(Conflict):
    code = "transition_not_allowed"


class IdempotencyKeyReused(ApplicationError):
    status_code = 422
    code = "idempotency_key_reused"


class _KeyTaken(Exception):
    """Another request holds the same Idempotency-Key."""


def order_create(
    *,
    owner: AbstractBaseUser,
    customer_name: str,
    customer_email: str = "",
    customer_phone: str = "",
    items: list[OrderLine],
    source: str = ChangeSource.API,
    idempotency_key: str | None = None,
    currency: str | None = None,
) -> OrderCreateResult:
    """Create an order with its items, record its creation and send `order_placed`.

    `currency` (ISO 4217) defaults to ORDERS_CURRENCY. With an idempotency key, a repeat of the
    same request returns the first order.
    """
    customer_name = customer_name.strip()
    customer_email = customer_email.strip()
    customer_phone = phone_to_e164(customer_phone) if customer_phone.strip() else ""
    if not customer_name:
        raise ApplicationError("Give the customer's name.", fields={"customer_name": ["This field is required."]})
    if not (customer_email or customer_phone):
        message = "Give the customer's email or phone (or both) so they can be told about the order."
        raise ApplicationError(message, fields={"non_field_errors": [message]})
    if not items:
        message = "An order needs at least one item."
        raise ApplicationError(message, fields={"items": [message]})
    order_currency = _checked_currency(settings.ORDERS_CURRENCY if currency is None else currency, items)

    total = sum((line.unit_price * line.quantity for line in items), Decimal("0.00"))
    if total > MAX_ORDER_TOTAL:
        message = f"The order total {total} is over the largest this system takes ({MAX_ORDER_TOTAL})."
        raise ApplicationError(message, fields={"items": [message]})

    fingerprint = _fingerprint(customer_name, customer_email, customer_phone, items, currency)
    if idempotency_key:
        replay = _replay(owner=owner, key=idempotency_key, fingerprint=fingerprint)
        if replay:
            return replay

    try:
        with transaction.atomic():
            key_row = _take_key(owner=owner, key=idempotency_key, fingerprint=fingerprint)
            order = Order.objects.create(
                owner=owner,
                customer_name=customer_name,
                customer_email=customer_email,
                customer_phone=customer_phone,
                total=total,
                currency=order_currency,
            )
            order_items = OrderItem.objects.bulk_create(OrderItem(order=order, **asdict(line)) for line in items)
            OrderStatusChange.objects.create(
                order=order, from_status="", to_status=order.status, changed_by=owner, source=source
            )
            if key_row:
                key_row.order = order
                key_row.save(update_fields=["order"])
            order_placed.send(sender=Order, order=order, items=order_items)
    except _KeyTaken:
        # A concurrent request with the same key committed first: answer with its order.
        replay = _replay(owner=owner, key=idempotency_key, fingerprint=fingerprint)
        if replay:
            return replay
        raise Conflict("A request with this Idempotency-Key is still being processed; retry shortly.") from None
    return OrderCreateResult(order=order, created=True)


def order_transition(*, order_id: int, to_status: str, by: AbstractBaseUser | None, source: str) -> Order:
    """Move an order to `to_status` if the workflow allows it, record it and send `order_status_changed`."""
    if to_status not in OrderStatus.values:
        message = f"{to_status!r} is not an order status; use one of {', '.join(OrderStatus.values)}."
        raise ApplicationError(message, fields={"status": [message]})
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first()
        if order is None:
            raise NotFound(f"Order {order_id} does not exist.")
        allowed = ALLOWED_TRANSITIONS[order.status]
        if to_status not in allowed:
            options = ", ".join(allowed) if allowed else "none, it is final"
            raise TransitionNotAllowed(
                f"Order {order.pk} is {order.status} and cannot become {to_status}; allowed next: {options}.",
                current_status=order.status,
                allowed=list(allowed),
            )
        old_status = order.status
        order.status = to_status
        order.save(update_fields=["status", "updated_at"])
        change = OrderStatusChange.objects.create(
            order=order, from_status=old_status, to_status=to_status, changed_by=by, source=source
        )
        order_status_changed.send(sender=Order, order=order, old_status=old_status, new_status=to_status, change=change)
    return order


def _checked_currency(currency: str, items: list[OrderLine]) -> str:
    """The order's currency, upper case, if it is one; each price with no more decimals than it has."""
    currency = currency.strip().upper()
    if not currency:
        return ""
    if problem := currency_problem(currency):
        message = f"{problem}."
        raise ApplicationError(message, fields={"currency": [message]})
    digits = minor_digits(currency)
    for number, line in enumerate(items):
        if line.unit_price != round(line.unit_price, digits):
            decimals = f"{digits} decimal{'s' if digits != 1 else ''}" if digits else "no decimals"
            message = f"{currency} prices have {decimals}: item {number + 1} ({line.sku[:40]}) costs {line.unit_price}."
            raise ApplicationError(message, fields={f"items[{number}].unit_price": [message]})
    return currency


def _fingerprint(customer_name, customer_email, customer_phone, items: list[OrderLine], currency: str | None) -> str:
    payload = {
        "customer_name": customer_name,
        "customer_email": customer_email,
        "customer_phone": customer_phone,
        "items": [{**asdict(line), "unit_price": str(line.unit_price)} for line in items],
    }
    if currency is not None:  # named in the request; one that left it to ORDERS_CURRENCY hashes as before
        payload["currency"] = currency.strip().upper()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _replay(*, owner, key: str, fingerprint: str) -> OrderCreateResult | None:
    row = IdempotencyKey.objects.filter(owner=owner, key=key).select_related("order").first()
    if row is None or row.order is None:
        return None
    if row.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different order; use a new key for a new order."
        )
    return OrderCreateResult(order=row.order, created=False)


def _take_key(*, owner, key: str | None, fingerprint: str) -> IdempotencyKey | None:
    if not key:
        return None
    try:
        # Waits on the unique index while a concurrent request with the same key is open.
        with transaction.atomic():
            return IdempotencyKey.objects.create(owner=owner, key=key, request_fingerprint=fingerprint)
    except IntegrityError:
        raise _KeyTaken from None
