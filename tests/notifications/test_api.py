import pytest
from django.utils import timezone

from notifications import services
from orders import services as order_services
from orders.models import ChangeSource
from tests.factories import place_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def order(shop, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        return place_order(owner=shop)


def test_consumer_reads_its_orders_notifications(api, order):
    response = api.get(f"/api/orders/{order.pk}/notifications/")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(row["channel"], row["event"], row["status"], row["attempts"]) for row in rows] == [
        ("sms", "placed", "queued", 0),
        ("email", "placed", "queued", 0),
    ]
    assert rows[0]["recipient"] == order.customer_phone


def test_a_notification_waiting_for_an_earlier_one_says_so(api, shop, order, scripted):
    order_services.order_transition(order_id=order.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    confirmation = order.notifications.get(channel="sms", event="confirmed")
    assert services.notification_send(notification_id=confirmation.pk).outcome == "waiting"
    order.notifications.filter(channel="email", event="placed").update(status="pending", stale_after=timezone.now())

    rows = api.get(f"/api/orders/{order.pk}/notifications/").json()["results"]
    assert [(row["channel"], row["event"], row["status"], row["waits_in_order"]) for row in rows] == [
        ("sms", "placed", "queued", False),
        ("email", "placed", "pending", False),  # the broker did not take it
        ("sms", "confirmed", "pending", True),
        ("email", "confirmed", "queued", False),
    ]


def test_another_consumers_order_is_404(other_api, order):
    response = other_api.get(f"/api/orders/{order.pk}/notifications/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_staff_read_any_orders_notifications(staff_api, order):
    assert staff_api.get(f"/api/orders/{order.pk}/notifications/").json()["count"] == 2


def test_the_trailing_slash_may_be_left_out(api, order):
    response = api.get(f"/api/orders/{order.pk}/notifications")
    assert response.status_code == 200
    assert response.json()["count"] == 2


def test_notifications_need_a_token(anonymous_api, order):
    assert anonymous_api.get(f"/api/orders/{order.pk}/notifications/").status_code == 401


def test_notifications_are_in_the_schema(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert "/api/orders/{order_id}/notifications/" in schema["paths"]
    parameters = schema["paths"]["/api/orders/{order_id}/notifications/"]["get"]["parameters"]
    assert {"name": "order_id", "in": "path", "required": True, "schema": {"type": "integer"}} in parameters


def test_a_page_number_in_other_digits_is_a_clear_400(api, shop):
    order = place_order(owner=shop)
    response = api.get(f"/api/orders/{order.pk}/notifications/", {"page": "\u00b9"})
    assert response.status_code == 400
    assert "page must be a whole number from 1" in response.json()["detail"]


def test_the_shop_is_not_shown_who_stopped_a_notification_nor_why(api, staff_api, shop, staff, order, scripted):
    """An operator's name, their reason for a suppression and the admin's permission names are
    for staff; the shop learns that the notification was stopped and who can undo it."""
    sms, email = order.notifications.order_by("id")
    services.suppression_add(channel="sms", recipient=order.customer_phone, reason="angry call, ticket 4411", by=staff)
    assert services.notification_send(notification_id=sms.pk).outcome == "skipped"
    services.notification_cancel(notification_id=email.pk, by=staff)

    shown = api.get(f"/api/orders/{order.pk}/notifications/").json()["results"]
    assert [(row["status"], row["last_error_code"]) for row in shown] == [
        ("cancelled", "suppressed"),
        ("cancelled", "cancelled"),
    ]
    assert shown[0]["last_error_message"].startswith("not sent: this recipient is suppressed on this channel")
    assert shown[1]["last_error_message"] == "not sent: cancelled by an operator"
    for row in shown:
        assert "ticket 4411" not in row["last_error_message"]
        assert staff.username not in row["last_error_message"]
        assert "permission" not in row["last_error_message"]

    for_staff = staff_api.get(f"/api/orders/{order.pk}/notifications/").json()["results"]
    assert "ticket 4411" in for_staff[0]["last_error_message"]
    assert staff.username in for_staff[1]["last_error_message"]
