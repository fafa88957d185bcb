import gzip
import io
import json
import re
import threading

import pytest
from django.contrib.auth.models import Permission
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpResponse
from rest_framework.authtoken.models import Token

from notifications.models import Notification
from orderflow.api import flat_errors
from orderflow.middleware import request_limits_middleware
from orders.models import Order
from tests.factories import place_order

pytestmark = pytest.mark.django_db

ORDERS = "/api/orders/"


def order_body(**overrides):
    body = {
        "customer_name": "Ada Lovelace",
        "customer_email": "ada@example.com",
        "customer_phone": "+1 415-555-2671",
        "items": [{"sku": "TEA-1", "name": "Green tea", "quantity": 2, "unit_price": "4.50"}],
    }
    body.update(overrides)
    return body


def item(**overrides):
    return {**order_body()["items"][0], **overrides}


# --- create ---------------------------------------------------------------------------------


def test_create_answers_201_with_server_total_and_e164_phone(api, shop):
    response = api.post(ORDERS, order_body(), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["total"] == "9.00"
    assert body["customer_phone"] == "+14155552671"
    assert body["status"] == "pending"
    assert body["allowed_next_statuses"] == ["confirmed", "cancelled"]
    assert body["status_history"][0] == {
        "from_status": "",
        "to_status": "pending",
        "changed_by": "shop",
        "source": "api",
        "created_at": body["status_history"][0]["created_at"],
    }
    assert response["Location"] == f"/api/orders/{body['id']}/"
    assert Order.objects.get().owner == shop


def test_client_cannot_set_total_or_status(api):
    """Refused by name: taken silently, a client would believe its total or status was used."""
    response = api.post(ORDERS, order_body(total="0.01", status="delivered"), format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"total", "status"}
    assert not Order.objects.exists()


def test_email_only_and_phone_only_orders_are_accepted(api):
    assert api.post(ORDERS, order_body(customer_phone=""), format="json").status_code == 201
    assert api.post(ORDERS, order_body(customer_email=""), format="json").status_code == 201
    no_phone_key = order_body()
    del no_phone_key["customer_phone"]
    assert api.post(ORDERS, no_phone_key, format="json").status_code == 201


def test_create_requires_token(anonymous_api):
    response = anonymous_api.post(ORDERS, order_body(), format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert "credentials were not provided" in response.json()["detail"]
    assert Order.objects.count() == 0


def test_wrong_token_is_refused(anonymous_api):
    anonymous_api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = anonymous_api.get(ORDERS)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}


def test_a_key_sent_as_a_bearer_token_is_refused_saying_how_to_send_it(anonymous_api, shop):
    key = Token.objects.get_or_create(user=shop)[0].key
    anonymous_api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = anonymous_api.get(ORDERS)
    assert response.status_code == 401
    assert response.json()["detail"] == "The API takes its key as Authorization: Token <key>, not Bearer <key>."


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (order_body(items=[]), "items", "may not be empty"),
        ({k: v for k, v in order_body().items() if k != "items"}, "items", "required"),
        (order_body(items=[item(quantity=0)]), "items[0].quantity", "greater than or equal to 1"),
        (order_body(items=[item(quantity=-3)]), "items[0].quantity", "greater than or equal to 1"),
        (order_body(items=[item(quantity="two")]), "items[0].quantity", "valid integer"),
        (order_body(items=[item(unit_price="-1.00")]), "items[0].unit_price", "greater than or equal to 0"),
        (order_body(items=[item(unit_price="1.005")]), "items[0].unit_price", "more than 2 decimal places; round"),
        (order_body(items=[item(unit_price=0.1 + 0.2)]), "items[0].unit_price", "more than 2 decimal places; round"),
        (order_body(items=[item(unit_price="123456789")]), "items[0].unit_price", "at most 8 digits before"),
        (order_body(items=[item(unit_price="123456789.00")]), "items[0].unit_price", "at most 8 digits before"),
        (order_body(items=[item(unit_price="abc")]), "items[0].unit_price", "Not a price: write it in plain digits"),
        (order_body(items=[item(unit_price="NaN")]), "items[0].unit_price", "Not a price"),
        (order_body(items=[item(unit_price="1e3")]), "items[0].unit_price", "Not a price"),
        (order_body(items=[item(sku="")]), "items[0].sku", "may not be blank"),
        (order_body(items="not a list"), "items", "Expected a list"),
        (order_body(customer_phone="call me maybe"), "customer_phone", "not a valid phone number"),
        (order_body(customer_phone="+1 555"), "customer_phone", "not a valid phone number"),
        (order_body(customer_phone="+1 415 555 2671 ext 1234"), "customer_phone", "has an extension"),
        (order_body(customer_name="\u200b"), "customer_name", "Must contain a visible character"),
        (order_body(customer_name="\u2060\u200b"), "customer_name", "Must contain a visible character"),
        (order_body(customer_name="\u3164\u2800"), "customer_name", "Must contain a visible character"),
        (order_body(customer_email="ada@"), "customer_email", "valid email"),
        (order_body(customer_email="", customer_phone=""), "non_field_errors", "email or phone"),
        (order_body(customer_name=""), "customer_name", "may not be blank"),
        (order_body(customer_name="x" * 201), "customer_name", "no more than 200"),
    ],
)
def test_bad_order_is_refused_with_a_message_and_nothing_saved(api, body, field, says):
    response = api.post(ORDERS, body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["code"] == "invalid"
    assert field in error["errors"]
    assert says in json.dumps(error["errors"][field])
    assert says in error["detail"]
    assert Order.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order_body(items=[]), "items"),
        (order_body(items=[item(quantity="many")]), "items[0].quantity"),
        (order_body(items=[item(quantity=1_000_000, unit_price="99999999.99")]), "items"),
        (order_body(customer_email="", customer_phone=""), "non_field_errors"),
        (order_body(customer_name=None, items=[item(sku="")]), "items[0].sku"),
    ],
)
def test_errors_are_one_list_of_messages_per_field_path(api, body, field):
    errors = api.post(ORDERS, body, format="json").json()["errors"]
    assert field in errors
    for path, messages in errors.items():
        assert isinstance(messages, list), path
        assert messages, path
        assert all(isinstance(message, str) for message in messages), path


def test_item_errors_given_as_a_list_keep_their_index():
    """DRF gives a list serializer's errors as a list where LIST_SERIALIZER_ERRORS_AS_DICT is off."""
    errors = {"items": [{}, {"quantity": ["Too few."]}, {"sku": ["Blank."]}], "non_field_errors": ["Whole."]}
    assert flat_errors(errors) == {
        "items[1].quantity": ["Too few."],
        "items[2].sku": ["Blank."],
        "non_field_errors": ["Whole."],
    }


def test_item_error_points_at_the_item(api):
    body = order_body(items=[item(), item(quantity=0)])
    error = api.post(ORDERS, body, format="json").json()
    assert error["errors"] == {"items[1].quantity": ["Ensure this value is greater than or equal to 1."]}
    assert error["detail"] == "Invalid input. items[1].quantity: Ensure this value is greater than or equal to 1."


def test_non_json_body_is_refused(api):
    response = api.post(ORDERS, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert "JSON parse error" in response.json()["detail"]


def test_json_that_is_not_an_object_is_refused(api):
    response = api.post(ORDERS, [1, 2], format="json")
    assert response.status_code == 400
    assert "Expected a dictionary" in response.json()["detail"]


def test_form_encoded_body_is_refused_as_unsupported(api):
    response = api.post(ORDERS, "customer_name=Ada", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json() == {
        "detail": 'Unsupported media type "application/x-www-form-urlencoded" in request. '
        "Send the body as application/json.",
        "code": "unsupported_media_type",
    }


def test_oversized_body_is_refused_with_413(api):
    body = order_body(customer_name="x" * 2_200_000)
    response = api.post(ORDERS, body, format="json")
    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is too large: at most 2097152 bytes.", "code": "too_large"}
    assert Order.objects.count() == 0


def test_the_largest_valid_order_fits_under_the_body_limit(api, settings):
    """500 items whose sku and name are as long as they may be, in characters that JSON writes
    as escapes of 12 bytes each (ensure_ascii, as many clients send): a 201, not a 413."""
    widest = "\U0001f600"  # outside the BMP: a surrogate pair, written \ud83d\ude00
    items = [item(sku=widest * 64, name=widest * 200) for _ in range(500)]
    body = json.dumps(order_body(customer_name=widest * 200, items=items), ensure_ascii=True)
    assert len(body) <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = api.post(ORDERS, body, content_type="application/json")
    assert response.status_code == 201, response.content[:300]


def test_a_chunked_body_without_a_length_is_411_not_read_as_empty(api):
    # The test client sends no Content-Length for an empty body, as a chunked request has none.
    response = api.generic("POST", ORDERS, "", content_type="application/json", HTTP_TRANSFER_ENCODING="chunked")
    assert response.status_code == 411
    assert "Content-Length" in response.json()["detail"]
    assert Order.objects.count() == 0


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("query", ["&".join(["a"] * 1_100), "&".join(["status=pending"] * 1_200)])
def test_too_many_query_parameters_are_a_400_saying_so(api, settings, debug, query):
    settings.DEBUG = debug  # the debug page read the parameters again: a bare 500
    response = api.get(f"{ORDERS}?{query}")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Too many parameters in the query string: at most 1000.",
        "code": "too_many_parameters",
    }


def test_a_chunked_header_on_a_get_is_no_reason_to_refuse_it(api):
    response = api.get(ORDERS, HTTP_TRANSFER_ENCODING="chunked")
    assert response.status_code == 200


def test_a_chunked_body_is_passed_on_under_asgi_which_reads_it():
    """Django's ASGI request reads the whole body, with no Content-Length: nothing to refuse there."""
    body = json.dumps(order_body()).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": ORDERS,
        "query_string": b"",
        "headers": [(b"transfer-encoding", b"chunked"), (b"content-type", b"application/json")],
    }
    request = ASGIRequest(scope, io.BytesIO(body))
    assert "CONTENT_LENGTH" not in request.META
    response = request_limits_middleware(lambda request: HttpResponse(request.body))(request)
    assert (response.status_code, response.content) == (200, body)


def test_too_many_items_are_refused(api):
    response = api.post(ORDERS, order_body(items=[item()] * 501), format="json")
    assert response.status_code == 400
    assert "no more than 500" in response.json()["detail"]


def test_unknown_url_under_api_answers_json_404(api):
    response = api.get("/api/nothing-here/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# --- idempotency ----------------------------------------------------------------------------


def test_retried_create_with_same_key_returns_first_order(api):
    first = api.post(ORDERS, order_body(), format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    again = api.post(ORDERS, order_body(), format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1


def test_same_key_with_different_body_is_refused_with_422(api):
    api.post(ORDERS, order_body(), format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    response = api.post(ORDERS, order_body(customer_name="Grace"), format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert "use a new key" in response.json()["detail"]
    assert Order.objects.count() == 1


def test_same_key_from_another_consumer_creates_its_own_order(api, other_api):
    first = api.post(ORDERS, order_body(), format="json", HTTP_IDEMPOTENCY_KEY="k")
    second = other_api.post(ORDERS, order_body(), format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("key", ["k" * 256, "\u043a\u043b\u044e\u0447", "caf\u00e9", "tab\there"])
def test_an_idempotency_key_beyond_printable_ascii_is_refused(api, key):
    response = api.post(ORDERS, order_body(), format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert "Idempotency-Key must be 1 to 255 printable ASCII characters" in response.json()["detail"]
    assert Order.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_with_same_key_make_one_order(shop):
    if connection.vendor != "postgresql":
        pytest.skip("needs concurrent transactions; SQLite serialises writers")
    from tests.conftest import _token_client

    results = []
    barrier = threading.Barrier(4)

    def create():
        try:
            barrier.wait()
            response = _token_client(shop).post(ORDERS, order_body(), format="json", HTTP_IDEMPOTENCY_KEY="race")
            results.append((response.status_code, response.json().get("id")))
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Order.objects.count() == 1
    assert {status for status, _ in results} == {201}
    assert len({order_id for _, order_id in results}) == 1


# --- list and retrieve ----------------------------------------------------------------------


def test_consumer_lists_only_its_own_orders(api, shop, other_shop):
    mine = place_order(owner=shop)
    place_order(owner=other_shop)
    body = api.get(ORDERS).json()
    assert body["count"] == 1
    assert [order["id"] for order in body["results"]] == [mine.pk]


def test_staff_list_every_order(staff_api, shop, other_shop):
    place_order(owner=shop)
    place_order(owner=other_shop)
    assert staff_api.get(ORDERS).json()["count"] == 2


def test_list_filters_by_status(api, shop):
    place_order(owner=shop)
    confirmed = place_order(owner=shop)
    api.post(f"{ORDERS}{confirmed.pk}/transition/", {"status": "confirmed"}, format="json")
    body = api.get(ORDERS, {"status": "confirmed"}).json()
    assert [order["id"] for order in body["results"]] == [confirmed.pk]


def test_list_filters_by_several_statuses_given_one_by_one(api, shop):
    placed = place_order(owner=shop)
    confirmed, cancelled = place_order(owner=shop), place_order(owner=shop)
    api.post(f"{ORDERS}{confirmed.pk}/transition/", {"status": "confirmed"}, format="json")
    api.post(f"{ORDERS}{cancelled.pk}/transition/", {"status": "cancelled"}, format="json")
    body = api.get(f"{ORDERS}?status=pending&status=confirmed").json()
    assert sorted(order["id"] for order in body["results"]) == [placed.pk, confirmed.pk]
    assert body["count"] == 2


def test_the_list_filter_is_no_filter_on_one_order(api, shop):
    """A ?status= left on the URL of one order: the order is still found, and moved on."""
    order = place_order(owner=shop)
    assert api.get(f"{ORDERS}{order.pk}/?status=confirmed").json()["id"] == order.pk
    response = api.post(f"{ORDERS}{order.pk}/transition/?status=shipped", {"status": "confirmed"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "confirmed"


def test_a_list_filter_naming_unknown_statuses_among_others_is_refused_naming_them_and_the_known(api):
    response = api.get(f"{ORDERS}?status=pending&status=lost&status=shiped")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "status": [
            '"lost", "shiped" are not statuses; use pending, confirmed, processing, shipped, delivered or cancelled.'
        ]
    }


def test_a_status_filter_flooded_with_junk_is_refused_without_echoing_it_at_length(api):
    junk = "&".join(f"status={index}{'x' * 200}" for index in range(50))
    response = api.get(f"{ORDERS}?{junk}")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "(and 45 more) are not statuses" in detail
    assert len(detail) < 500


def test_list_with_unknown_status_filter_is_refused(api):
    response = api.get(ORDERS, {"status": "lost"})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        'Invalid input. status: "lost" is not a status; '
        "use pending, confirmed, processing, shipped, delivered or cancelled."
    )


@pytest.mark.parametrize("status", ["100%", "%d", "a%sb", "%%", "%(x)s"])
def test_a_status_filter_holding_a_percent_sign_is_refused_quoting_it_as_sent(api, status):
    response = api.get(ORDERS, {"status": status})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        f"Invalid input. status: {json.dumps(status)} is not a status; "
        "use pending, confirmed, processing, shipped, delivered or cancelled."
    )


def test_list_is_paginated(api, shop):
    for _ in range(3):
        place_order(owner=shop)
    body = api.get(ORDERS, {"page_size": 2}).json()
    assert (body["count"], len(body["results"])) == (3, 2)
    assert body["next"].endswith("page=2&page_size=2")
    assert api.get(ORDERS, {"page": 99}).status_code == 404  # past the end


def test_list_queries_do_not_grow_with_orders(api, shop, django_assert_max_num_queries):
    for _ in range(10):
        place_order(owner=shop)
    with django_assert_max_num_queries(5):
        assert len(api.get(ORDERS).json()["results"]) == 10


def test_list_requires_token(anonymous_api):
    assert anonymous_api.get(ORDERS).status_code == 401


def test_retrieve_own_order(api, shop):
    order = place_order(owner=shop)
    body = api.get(f"{ORDERS}{order.pk}/").json()
    assert body["id"] == order.pk
    assert body["items"] == [{"sku": "TEA-1", "name": "Green tea", "quantity": 2, "unit_price": "4.50"}]


def test_retrieve_another_consumers_order_is_404(other_api, shop):
    order = place_order(owner=shop)
    response = other_api.get(f"{ORDERS}{order.pk}/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No Order matches the given query.", "code": "not_found"}


def test_staff_retrieve_any_order(staff_api, shop):
    order = place_order(owner=shop)
    assert staff_api.get(f"{ORDERS}{order.pk}/").status_code == 200


def test_retrieve_requires_token(anonymous_api, shop):
    order = place_order(owner=shop)
    assert anonymous_api.get(f"{ORDERS}{order.pk}/").status_code == 401


def test_retrieve_non_numeric_id_is_404(api):
    assert api.get(f"{ORDERS}abc/").status_code == 404


# --- transition -----------------------------------------------------------------------------


def test_transition_moves_order_and_records_who(api, shop):
    order = place_order(owner=shop)
    response = api.post(f"{ORDERS}{order.pk}/transition/", {"status": "confirmed"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "confirmed"
    assert body["allowed_next_statuses"] == ["processing", "cancelled"]
    assert body["status_history"][-1]["from_status"] == "pending"
    assert body["status_history"][-1]["changed_by"] == "shop"


def test_refused_transition_answers_409_with_allowed_states(api, shop):
    order = place_order(owner=shop)
    response = api.post(f"{ORDERS}{order.pk}/transition/", {"status": "shipped"}, format="json")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "transition_not_allowed"
    assert body["current_status"] == "pending"
    assert body["allowed"] == ["confirmed", "cancelled"]
    assert "cannot become shipped" in body["detail"]


def test_transition_to_unknown_status_is_400(api, shop):
    order = place_order(owner=shop)
    response = api.post(f"{ORDERS}{order.pk}/transition/", {"status": "teleported"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["status"] == [
        '"teleported" is not a status; use pending, confirmed, processing, shipped, delivered or cancelled.'
    ]


def test_transition_without_status_is_400(api, shop):
    order = place_order(owner=shop)
    response = api.post(f"{ORDERS}{order.pk}/transition/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"status": ["This field is required."]}


def test_transition_of_another_consumers_order_is_404(other_api, shop):
    order = place_order(owner=shop)
    response = other_api.post(f"{ORDERS}{order.pk}/transition/", {"status": "confirmed"}, format="json")
    assert response.status_code == 404
    order.refresh_from_db()
    assert order.status == "pending"


def test_staff_without_the_change_permission_cannot_move_another_shops_order(staff_api, shop):
    order = place_order(owner=shop)
    response = staff_api.post(f"{ORDERS}{order.pk}/transition/", {"status": "cancelled"}, format="json")
    assert response.status_code == 403
    assert "orders.change_order" in response.json()["detail"]
    order.refresh_from_db()
    assert order.status == "pending"
    assert not Notification.objects.filter(order=order, event="cancelled").exists()


def test_staff_with_the_change_permission_move_any_order(staff, staff_api, shop):
    staff.user_permissions.add(Permission.objects.get(codename="change_order", content_type__app_label="orders"))
    order = place_order(owner=shop)
    response = staff_api.post(f"{ORDERS}{order.pk}/transition/", {"status": "confirmed"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status_history"][-1]["changed_by"] == "staff"


def test_a_huge_unknown_status_is_not_echoed_back_at_length(api, shop):
    order = place_order(owner=shop)
    response = api.post(f"{ORDERS}{order.pk}/transition/", {"status": "y" * 200_000}, format="json")
    assert response.status_code == 400
    assert len(response.content) < 1_000
    assert response.json()["errors"]["status"][0].startswith(f'"{"y" * 39}… is not a status')


@pytest.mark.parametrize(
    ("status", "quoted"), [(5, "5"), (True, "true"), (["pending"], '["pending"]'), ({"a": 1}, '{"a": 1}')]
)
def test_a_status_of_another_type_is_quoted_as_sent(api, shop, status, quoted):
    order = place_order(owner=shop)
    response = api.post(f"{ORDERS}{order.pk}/transition/", {"status": status}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["status"][0].startswith(f"{quoted} is not a status")


def test_transition_requires_token(anonymous_api, shop):
    order = place_order(owner=shop)
    response = anonymous_api.post(f"{ORDERS}{order.pk}/transition/", {"status": "confirmed"}, format="json")
    assert response.status_code == 401


def test_orders_cannot_be_deleted_or_replaced(api, shop):
    order = place_order(owner=shop)
    assert api.delete(f"{ORDERS}{order.pk}/").status_code == 405
    assert api.put(f"{ORDERS}{order.pk}/", order_body(), format="json").status_code == 405


# --- schema ---------------------------------------------------------------------------------


def test_openapi_schema_describes_the_order_endpoints(anonymous_api, api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/orders/", "/api/orders/{id}/", "/api/orders/{id}/transition/"} <= set(schema["paths"])
    create = schema["paths"]["/api/orders/"]["post"]
    assert "Idempotency-Key" in [parameter["name"] for parameter in create["parameters"]]
    assert {"400", "401", "404", "406"} <= set(schema["paths"]["/api/orders/"]["get"]["responses"])
    # An order's id is the same integer in every path that takes one.
    ids = [
        parameter["schema"]
        for path in ("/api/orders/{id}/", "/api/orders/{id}/transition/", "/api/orders/{order_id}/notifications/")
        for operation in schema["paths"][path].values()
        for parameter in operation["parameters"]
        if parameter["in"] == "path"
    ]
    assert ids == [{"type": "integer"}] * 3
    # A price is never negative, as the API refuses one.
    price = schema["components"]["schemas"]["OrderItem"]["properties"]["unit_price"]
    accepted = [text for text in ("4.50", "4", ".5", "-4.50", "", "-") if re.fullmatch(price["pattern"], text)]
    assert accepted == ["4.50", "4", ".5"]
    # What the create refuses, the schema says: no items or too many, a blank text.
    create_body = schema["components"]["schemas"]["OrderCreate"]["properties"]
    assert (create_body["items"]["minItems"], create_body["items"]["maxItems"]) == (1, 500)
    assert create_body["currency"]["minLength"] == create_body["customer_name"]["minLength"] == 1
    # An order without an email answers "", which is not an email address.
    answered_email = schema["components"]["schemas"]["OrderDetail"]["properties"]["customer_email"]
    assert {"type": "string", "maxLength": 0} in answered_email["oneOf"]


def test_total_over_what_the_system_holds_is_refused(api):
    body = order_body(items=[item(quantity=1_000_000, unit_price="99999999.99")])
    response = api.post(ORDERS, body, format="json")
    assert response.status_code == 400
    assert "over the largest this system takes" in response.json()["detail"]
    assert Order.objects.count() == 0


def test_deeply_nested_json_is_refused(api):
    response = api.post(ORDERS, "[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_a_number_too_long_for_python_is_refused_in_words_a_client_can_act_on(api):
    body = json.dumps(order_body()).replace('"quantity": 2', '"quantity": ' + "9" * 5000)
    assert '"quantity": 999' in body
    response = api.post(ORDERS, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "JSON parse error - a number in the body has more than 4300 digits; no field takes one that long."
    )


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('"customer_name": "Ada", "items": [ITEM, ITEM], "items": [ITEM]', '"items"'),
        (
            '"customer_name": "Ada", "customer_phone": "+14155552671", "items": [ITEM], "customer_phone": ""',
            '"customer_phone"',
        ),
        (
            '"customer_name": "Ada", "items": [{"sku": "A", "sku": "B", "name": "n", "quantity": 1, "unit_price": 1}]',
            '"sku"',
        ),
    ],
)
def test_a_key_given_twice_is_refused_not_the_first_one_dropped(api, body, key):
    item_json = json.dumps(item())
    body = "{" + body.replace("ITEM", item_json) + ', "customer_email": "ada@example.com"}'
    response = api.post(ORDERS, body, content_type="application/json")
    assert response.status_code == 400
    assert (
        response.json()["detail"] == f"JSON parse error - the key {key} comes twice in one object; send each key once."
    )
    assert Order.objects.count() == 0


def test_a_compressed_body_is_refused_saying_so(api):
    body = gzip.compress(json.dumps(order_body()).encode())
    response = api.post(ORDERS, body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 415
    assert response.json()["detail"] == "Content-Encoding gzip is not taken; send the body uncompressed."
    assert Order.objects.count() == 0


def test_create_without_trailing_slash_works(api):
    response = api.post("/api/orders", order_body(), format="json")
    assert response.status_code == 201


def test_unknown_api_url_is_json_even_in_debug(api, settings):
    settings.DEBUG = True
    response = api.get("/api/nope/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"page": "0"}, "page must be a whole number from 1"),
        ({"page": "abc"}, "page must be a whole number from 1"),
        ({"page_size": "201"}, "page_size must be a whole number from 1 to 200"),
        ({"page_size": "-1"}, "page_size must be a whole number from 1 to 200"),
        # Digits str.isdigit() accepts but int() refuses, or reads as another number.
        ({"page": "\u00b2"}, "page must be a whole number from 1"),
        ({"page": "\u2460"}, "page must be a whole number from 1"),
        ({"page_size": "\u00b2"}, "page_size must be a whole number from 1 to 200"),
        ({"page_size": "\u0661"}, "page_size must be a whole number from 1 to 200"),
    ],
)
def test_bad_paging_is_a_clear_400(api, query, says):
    response = api.get(ORDERS, query)
    assert response.status_code == 400
    assert says in response.json()["detail"]


def test_an_order_url_takes_ascii_digits_only(api, shop):
    order = place_order(owner=shop)
    assert api.get(f"{ORDERS}{order.pk}/").status_code == 200
    for zero in (0x0660, 0xFF10, 0x1D7CE):  # the order's number in Arabic-Indic, fullwidth and bold digits
        number = "".join(chr(zero + int(digit)) for digit in str(order.pk))
        response = api.get(f"{ORDERS}{number}/")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_a_page_past_the_end_is_404_saying_so(api, shop):
    place_order(owner=shop)
    response = api.get(ORDERS, {"page": 9})
    assert response.status_code == 404
    assert response.json()["detail"].startswith("Page 9 does not exist")
    for digits in (40, 4301):  # whole numbers too, past any page there can be; 4301: more than int() reads
        response = api.get(ORDERS, {"page": "9" * digits})
        assert response.status_code == 404
        assert response.json()["detail"] == f"Page {'9' * 30}… does not exist."


def test_a_post_to_an_unknown_api_url_is_a_json_404_not_a_csrf_page(api):
    response = api.post("/api/orders/0.5/transition/", {"status": "confirmed"}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_an_empty_status_filter_is_a_400_not_a_silent_no_filter(api):
    response = api.get(ORDERS, {"status": ""})
    assert response.status_code == 400
    assert "Give a status to filter by" in response.json()["detail"]


def test_an_unknown_format_is_a_406_naming_the_formats_there_are(api):
    response = api.get(ORDERS, {"format": "bogus"})
    assert response.status_code == 406
    assert response.json() == {
        "detail": "There is no format 'bogus' here; use one of: json, api.",
        "code": "not_acceptable",
    }


def test_an_unknown_format_of_the_schema_is_a_406_in_json_too(api):
    """The schema's first format is YAML, which DRF would answer the error in."""
    response = api.get("/api/schema/", {"format": "bogus"})
    assert (response.status_code, response["Content-Type"]) == (406, "application/json")
    assert response.json() == {
        "detail": "There is no format 'bogus' here; use one of: yaml, json.",
        "code": "not_acceptable",
    }


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("post", "/api/schema/", None, 405),
        ("get", "/api/schema/", "not-a-token", 401),
        ("get", "/api/schema", "not-a-token", 401),
    ],
)
def test_errors_of_the_schema_are_json_not_yaml(anonymous_api, method, path, token, status):
    if token:
        anonymous_api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = getattr(anonymous_api, method)(path)
    assert (response.status_code, response["Content-Type"]) == (status, "application/json")
    assert response.json()["detail"]


def test_the_schema_without_its_trailing_slash(api):
    response = api.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_an_accept_header_nothing_matches_is_a_406_naming_the_media_types(api):
    response = api.get(ORDERS, HTTP_ACCEPT="application/xml")
    assert response.status_code == 406
    assert response.json() == {
        "detail": "Nothing here can be sent as Accept: 'application/xml' asks; "
        "accept one of: application/json, text/html.",
        "code": "not_acceptable",
    }


def test_a_known_format_still_chooses_the_rendering(api):
    response = api.get(ORDERS, {"format": "json"})
    assert (response.status_code, response["Content-Type"]) == (200, "application/json")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", "1_0"),
        ("quantity", "\u0661\u0662"),  # Arabic-Indic 12
        ("quantity", "\uff11\uff12"),  # full-width 12
        ("unit_price", "1_000"),
        ("unit_price", "\u0661\u0662"),
        ("unit_price", "\uff11\uff12.50"),
        ("unit_price", "1e3"),
    ],
)
def test_numbers_written_other_than_in_plain_digits_are_refused_not_read_as_others(api, field, value):
    response = api.post(ORDERS, order_body(items=[item(**{field: value})]), format="json")
    assert response.status_code == 400, response.content
    assert f"items[0].{field}" in response.json()["errors"]
    assert not Order.objects.exists()


@pytest.mark.parametrize(("quantity", "unit_price"), [("3", "4.5"), (" 3 ", ".50"), (3, 4.5), ("+3", "4.50")])
def test_numbers_as_text_or_json_numbers_still_read(api, quantity, unit_price):
    response = api.post(ORDERS, order_body(items=[item(quantity=quantity, unit_price=unit_price)]), format="json")
    assert response.status_code == 201, response.content


def test_options_describe_the_body_each_post_takes(api, shop):
    create = api.options(ORDERS).json()["actions"]["POST"]
    assert create["customer_name"]["read_only"] is False
    assert create["customer_name"]["required"] is True
    assert create["items"]["required"] is True
    assert "id" not in create
    order = place_order(owner=shop)
    transition = api.options(f"{ORDERS}{order.pk}/transition/").json()["actions"]["POST"]
    assert set(transition) == {"status"}
    assert transition["status"]["read_only"] is False


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("customer_name", order_body(customer_name=12)),
        ("customer_phone", order_body(customer_phone=447700900123)),  # its "+" is lost as a number
        ("currency", order_body(currency=978)),
        ("items[0].sku", order_body(items=[item(sku=1001)])),
        ("items[0].name", order_body(items=[item(name=3.5)])),
    ],
)
def test_text_sent_as_a_json_number_is_refused_not_taken_as_its_digits(api, where, body):
    response = api.post(ORDERS, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["errors"][where] == ["Not text: send it as a JSON string, in double quotes."]
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("body", "where", "said"),
    [
        (order_body(customer_mobile="+14155552671"), "customer_mobile", "Not a field of an order; it takes "),
        (order_body(Currency="JPY"), "Currency", "Not a field of an order; it takes "),
        (order_body(total="1.00"), "total", "Not a field of an order; it takes "),
        (order_body(items=[item(discount="50%")]), "items[0].discount", "Not a field of an item; it takes "),
    ],
)
def test_a_field_the_api_does_not_take_is_refused_by_name_not_dropped(api, body, where, said):
    response = api.post(ORDERS, body, format="json")
    assert response.status_code == 400, response.content
    [message] = response.json()["errors"][where]
    assert message.startswith(said)
    assert "customer_phone" in message or "unit_price" in message  # the fields it does take
    assert not Order.objects.exists()


def test_a_status_change_with_a_field_it_does_not_take_is_refused(api, shop):
    order = place_order(owner=shop)
    response = api.post(f"{ORDERS}{order.pk}/transition/", {"status": "confirmed", "note": "rush"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["note"] == ["Not a field of a status change; it takes status."]
    order.refresh_from_db()
    assert order.status == "pending"


def test_an_order_posted_over_http_is_refused_saying_to_use_https_not_redirected(api, settings):
    """Behind the TLS proxy with SECURE_SSL_REDIRECT, as production runs: a client following a
    301 would send its POST again as a GET, and its order would never be placed."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    response = api.post(ORDERS, order_body(), format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "https_required"
    assert "send it to https://" in response.json()["detail"]
    assert not Order.objects.exists()
    assert api.get(ORDERS).status_code == 301  # a read is repeated as it was
    assert api.post(ORDERS, order_body(), format="json", HTTP_X_FORWARDED_PROTO="https").status_code == 201


def test_the_schema_describes_an_address_beyond_ascii_as_the_api_takes_it(api):
    """ada@exämple.com is taken and shown back: `format: email` would make a client that
    validates answers against the schema refuse them."""
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["components"]["schemas"]
    described = [
        body["properties"]["customer_email"]
        for body in schema.values()
        if "customer_email" in body.get("properties", {})
    ]
    formats = set(re.findall(r'"format": "([^"]+)"', json.dumps(described)))  # also under oneOf
    assert described and formats == {"idn-email"}, described
    created = api.post(ORDERS, order_body(customer_email="ada@exämple.com"), format="json")
    assert created.status_code == 201 and created.json()["customer_email"] == "ada@exämple.com"
