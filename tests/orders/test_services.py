from decimal import Decimal
from itertools import product

import pytest

from orderflow.errors import ApplicationError, NotFound
from orders import services
from orders.models import ALLOWED_TRANSITIONS, ChangeSource, Order, OrderStatus, OrderStatusChange
from orders.signals import order_placed, order_status_changed
from tests.factories import order_line, place_order

pytestmark = pytest.mark.django_db

EVERY_PAIR = list(product(OrderStatus.values, OrderStatus.values))
ALLOWED_PAIRS = [(old, new) for old, new in EVERY_PAIR if new in ALLOWED_TRANSITIONS[old]]
REFUSED_PAIRS = [(old, new) for old, new in EVERY_PAIR if new not in ALLOWED_TRANSITIONS[old]]

# The shortest path from pending to each status, so a test can put an order in any status.
PATH_TO = {
    OrderStatus.PENDING: [],
    OrderStatus.CONFIRMED: [OrderStatus.CONFIRMED],
    OrderStatus.PROCESSING: [OrderStatus.CONFIRMED, OrderStatus.PROCESSING],
    OrderStatus.SHIPPED: [OrderStatus.CONFIRMED, OrderStatus.PROCESSING, OrderStatus.SHIPPED],
    OrderStatus.DELIVERED: [OrderStatus.CONFIRMED, OrderStatus.PROCESSING, OrderStatus.SHIPPED, OrderStatus.DELIVERED],
    OrderStatus.CANCELLED: [OrderStatus.CANCELLED],
}


def order_in(status, owner):
    order = place_order(owner=owner)
    for step in PATH_TO[status]:
        services.order_transition(order_id=order.pk, to_status=step, by=owner, source=ChangeSource.SYSTEM)
    order.refresh_from_db()
    assert order.status == status
    return order


def test_workflow_table_matches_the_documented_workflow():
    assert set(ALLOWED_PAIRS) == {
        ("pending", "confirmed"),
        ("confirmed", "processing"),
        ("processing", "shipped"),
        ("shipped", "delivered"),
        ("pending", "cancelled"),
        ("confirmed", "cancelled"),
        ("processing", "cancelled"),
    }


def test_create_computes_total_on_server_with_decimals(shop):
    order = place_order(
        owner=shop,
        items=[
            order_line(quantity=3, unit_price=Decimal("0.10")),
            order_line(sku="MUG", name="Mug", quantity=1, unit_price=Decimal("12.99")),
        ],
    )
    assert order.total == Decimal("13.29")
    assert order.items.count() == 2


def test_create_stores_phone_in_e164(shop):
    order = place_order(owner=shop, customer_phone="+1 (415) 555-2671")
    assert order.customer_phone == "+14155552671"


def test_create_records_creation_in_history(shop):
    order = place_order(owner=shop)
    change = order.status_changes.get()
    assert (change.from_status, change.to_status, change.changed_by, change.source) == ("", "pending", shop, "api")


def test_create_sends_order_placed_with_items_saved(shop):
    seen = []

    def receiver(sender, order, **kwargs):
        seen.append((order.pk, order.items.count()))

    order_placed.connect(receiver, dispatch_uid="test-placed")
    try:
        order = place_order(owner=shop)
    finally:
        order_placed.disconnect(dispatch_uid="test-placed")
    assert seen == [(order.pk, 1)]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"customer_phone": "not a phone"}, "customer_phone"),
        ({"customer_phone": "+1 555"}, "customer_phone"),
        ({"customer_email": "", "customer_phone": ""}, "non_field_errors"),
        ({"customer_name": "   "}, "customer_name"),
        ({"items": []}, "items"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(shop, overrides, field):
    values = {
        "customer_name": "Ada",
        "customer_email": "ada@example.com",
        "customer_phone": "",
        "items": [order_line()],
    }
    values.update(overrides)
    with pytest.raises(ApplicationError) as refused:
        services.order_create(owner=shop, **values)
    assert field in refused.value.fields
    assert Order.objects.count() == 0


def test_a_failing_receiver_rolls_back_the_order(shop):
    def broken(**kwargs):
        raise RuntimeError("receiver failed")

    order_placed.connect(broken, dispatch_uid="test-broken")
    try:
        with pytest.raises(RuntimeError):
            place_order(owner=shop)
    finally:
        order_placed.disconnect(dispatch_uid="test-broken")
    assert Order.objects.count() == 0
    assert OrderStatusChange.objects.count() == 0


@pytest.mark.parametrize(("old", "new"), ALLOWED_PAIRS)
def test_allowed_transition_moves_records_and_signals(shop, staff, old, new):
    order = order_in(old, shop)
    seen = []

    def receiver(sender, order, old_status, new_status, change, **kwargs):
        seen.append((old_status, new_status, change.source))

    order_status_changed.connect(receiver, dispatch_uid="test-changed")
    try:
        services.order_transition(order_id=order.pk, to_status=new, by=staff, source=ChangeSource.ADMIN)
    finally:
        order_status_changed.disconnect(dispatch_uid="test-changed")

    order.refresh_from_db()
    assert order.status == new
    last = order.status_changes.last()
    assert (last.from_status, last.to_status, last.changed_by, last.source) == (old, new, staff, "admin")
    assert seen == [(old, new, "admin")]


@pytest.mark.parametrize(("old", "new"), REFUSED_PAIRS)
def test_refused_transition_changes_nothing_and_names_allowed_states(shop, old, new):
    order = order_in(old, shop)
    history_before = order.status_changes.count()
    with pytest.raises(services.TransitionNotAllowed) as refused:
        services.order_transition(order_id=order.pk, to_status=new, by=shop, source=ChangeSource.API)
    assert refused.value.status_code == 409
    assert refused.value.extra == {"current_status": old, "allowed": list(ALLOWED_TRANSITIONS[old])}
    order.refresh_from_db()
    assert order.status == old
    assert order.status_changes.count() == history_before


def test_transition_to_unknown_status_is_refused(shop):
    order = place_order(owner=shop)
    with pytest.raises(ApplicationError, match="'lost' is not an order status"):
        services.order_transition(order_id=order.pk, to_status="lost", by=shop, source=ChangeSource.API)


def test_transition_of_missing_order_is_not_found(shop):
    with pytest.raises(NotFound):
        services.order_transition(order_id=987654, to_status="confirmed", by=shop, source=ChangeSource.API)


def test_same_idempotency_key_returns_first_order(shop):
    first = services.order_create(
        owner=shop, customer_name="Ada", customer_email="ada@example.com", items=[order_line()], idempotency_key="k1"
    )
    again = services.order_create(
        owner=shop, customer_name="Ada", customer_email="ada@example.com", items=[order_line()], idempotency_key="k1"
    )
    assert (first.created, again.created) == (True, False)
    assert again.order.pk == first.order.pk
    assert Order.objects.count() == 1


def test_idempotency_key_is_per_owner(shop, other_shop):
    line = [order_line()]
    first = services.order_create(
        owner=shop, customer_name="Ada", customer_email="a@example.com", items=line, idempotency_key="k"
    )
    other = services.order_create(
        owner=other_shop, customer_name="Ada", customer_email="a@example.com", items=line, idempotency_key="k"
    )
    assert other.created
    assert other.order.pk != first.order.pk


def test_idempotency_key_reused_with_other_body_is_refused(shop):
    services.order_create(
        owner=shop, customer_name="Ada", customer_email="a@example.com", items=[order_line()], idempotency_key="k"
    )
    with pytest.raises(services.IdempotencyKeyReused):
        services.order_create(
            owner=shop,
            customer_name="Ada",
            customer_email="a@example.com",
            items=[order_line(quantity=5)],
            idempotency_key="k",
        )
    assert Order.objects.count() == 1
