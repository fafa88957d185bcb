"""Amounts with their currency: in texts, the admin and the API."""

from decimal import Decimal

import pytest

from orderflow.configuration import ConfigurationError, check_currency
from orders import services
from orders.models import Order
from orders.money import format_money, format_money_code
from tests.factories import order_line, place_order
from tests.processes import run_deployed

ORDERS = "/api/orders/"


@pytest.mark.parametrize(
    ("amount", "currency", "shown", "as_code"),
    [
        ("1481400.00", "GBP", "£1,481,400.00", "1,481,400.00 GBP"),
        ("9.00", "EUR", "€9.00", "9.00 EUR"),
        ("1200.00", "JPY", "¥1,200", "1,200 JPY"),
        ("9.50", "CHF", "CHF 9.50", "9.50 CHF"),  # a symbol of letters is kept off the digits
        ("9.50", "INR", "₹9.50", "9.50 INR"),
        ("1481400.00", "", "1481400.00", "1481400.00"),  # none configured: the bare amount, as before
    ],
)
def test_amounts_read_as_an_english_speaking_customer_expects(amount, currency, shown, as_code):
    assert format_money(Decimal(amount), currency) == shown
    assert format_money_code(Decimal(amount), currency) == as_code
    assert as_code.isascii()


def test_the_currency_variable_takes_a_code_in_any_case_or_nothing():
    assert check_currency("ORDERS_CURRENCY", " gbp ") == "GBP"
    assert check_currency("ORDERS_CURRENCY", "") == ""
    # Not a code; "no currency"; a withdrawn one (the Deutsche Mark); a metal; a fund.
    for bad in ["EURO", "€", "XXX", "DEM", "XAU", "USN", "12"]:
        with pytest.raises(
            ConfigurationError, match=r"^ORDERS_CURRENCY: .* is not the ISO 4217 code of a currency in use"
        ):
            check_currency("ORDERS_CURRENCY", bad)
    # Three decimals (Kuwaiti dinar): an order's amounts keep two, so its prices could not be written.
    with pytest.raises(ConfigurationError, match=r"^ORDERS_CURRENCY: KWD amounts have 3 decimals; orders keep 2"):
        check_currency("ORDERS_CURRENCY", "KWD")


def test_a_bad_currency_stops_startup_in_one_line():
    result = run_deployed("manage.py", "check", ORDERS_CURRENCY="euro")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "orderflow: configuration error: ORDERS_CURRENCY: 'EURO' is not the ISO 4217 code of a currency in use, "
        "e.g. EUR, GBP or USD; leave it empty for none"
    ]


# --- orders -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_order_keeps_the_currency_it_was_placed_in(shop, settings, api):
    settings.ORDERS_CURRENCY = "GBP"
    order = place_order(owner=shop)
    settings.ORDERS_CURRENCY = "EUR"
    assert Order.objects.get(pk=order.pk).currency == "GBP"
    assert api.get(f"{ORDERS}{order.pk}/").json()["currency"] == "GBP"
    assert place_order(owner=shop).currency == "EUR"


@pytest.mark.django_db
def test_the_api_takes_a_currency_of_its_own_in_any_case(api, settings):
    settings.ORDERS_CURRENCY = "GBP"
    response = api.post(ORDERS, {**order_body(), "currency": "jpy", "items": [item(unit_price="1200")]}, format="json")
    assert response.status_code == 201, response.content
    assert (response.json()["currency"], response.json()["total"]) == ("JPY", "2400.00")
    response = api.post(ORDERS, order_body(), format="json")
    assert response.json()["currency"] == "GBP"


@pytest.mark.django_db
def test_an_unknown_currency_is_a_400_naming_the_field(api):
    response = api.post(ORDERS, {**order_body(), "currency": "EUX"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "currency": ["'EUX' is not the ISO 4217 code of a currency in use, e.g. EUR, GBP or USD."]
    }
    for bad in ["EURO", "DEM", "KWD", "", "x" * 21]:
        response = api.post(ORDERS, {**order_body(), "currency": bad}, format="json")
        assert response.status_code == 400, bad
        assert list(response.json()["errors"]) == ["currency"], bad
    assert Order.objects.count() == 0


@pytest.mark.django_db
def test_a_price_with_more_decimals_than_its_currency_has_is_refused(api, settings):
    """¥4.50 does not exist: stored, it would show as ¥5 in every text."""
    settings.ORDERS_CURRENCY = "JPY"
    response = api.post(
        ORDERS, order_body(items=[item(unit_price="1200"), item(sku="B-2", unit_price="4.50")]), format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "items[1].unit_price": ["JPY prices have no decimals: item 2 (B-2) costs 4.50."]
    }
    assert Order.objects.count() == 0


@pytest.mark.django_db
def test_the_currency_named_in_a_request_is_part_of_its_idempotency(shop):
    line = [order_line()]
    values = {"owner": shop, "customer_name": "Ada", "customer_email": "a@example.com", "items": line}
    first = services.order_create(**values, idempotency_key="k", currency="GBP")
    assert services.order_create(**values, idempotency_key="k", currency="gbp").order == first.order
    with pytest.raises(services.IdempotencyKeyReused):
        services.order_create(**values, idempotency_key="k", currency="EUR")


@pytest.mark.django_db
def test_the_admin_shows_totals_with_their_currency(client, operator, shop, settings):
    settings.ORDERS_CURRENCY = "GBP"
    order = place_order(owner=shop, items=[order_line(quantity=1200, unit_price=Decimal("1234.50"))])
    assert "£1,481,400.00" in client.get("/admin/orders/order/").content.decode()
    detail = client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert detail.count("£1,481,400.00") == 2  # the order's total and its one line's
    assert "£1,234.50" in detail  # the line's unit price


def test_an_order_of_many_lines_shows_them_in_its_currency_without_a_query_each(
    client, operator, shop, settings, django_assert_max_num_queries
):
    settings.ORDERS_CURRENCY = "EUR"
    lines = [order_line(sku=f"SKU-{number}", quantity=1, unit_price=Decimal("2.50")) for number in range(40)]
    order = place_order(owner=shop, items=lines)
    with django_assert_max_num_queries(15):
        page = client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert page.count("€2.50") == 80  # each line's price and line total


def order_body(**overrides):
    body = {
        "customer_name": "Ada Lovelace",
        "customer_email": "ada@example.com",
        "customer_phone": "+1 415-555-2671",
        "items": [item()],
    }
    return {**body, **overrides}


def item(**overrides):
    return {"sku": "TEA-1", "name": "Green tea", "quantity": 2, "unit_price": "4.50", **overrides}
