"""Hostile strings in names and items: refused when they cannot be meant, otherwise shown
as text everywhere (SMS, email, admin), never as markup."""

import pytest
from rest_framework.exceptions import AuthenticationFailed

from notifications.models import Notification
from orderflow.authentication import TokenAuthentication
from orderflow.sessions import SessionStore
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

HOSTILE = [
    "<script>alert('x')</script>",
    "Robert'); DROP TABLE orders_order;--",
    '<img src=x onerror=alert(1)> & "quotes"',
    "🍵 Ünïcødé 山田 🚀",
    "{{ settings.SECRET_KEY }} {% debug %}",
]


def order_body(name: str, item_name: str) -> dict:
    return {
        "customer_name": name,
        "customer_email": "ada@example.com",
        "customer_phone": "+14155550123",
        "items": [{"sku": "SKU-1", "name": item_name, "quantity": 1, "unit_price": "1.00"}],
    }


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_stored_as_is_and_rendered_as_text(api, client, text, published, settings):
    response = api.post("/api/orders/", order_body(text, text), format="json")
    assert response.status_code == 201
    assert response.json()["customer_name"] == text

    sms = Notification.objects.get(channel="sms")
    email = Notification.objects.get(channel="email")
    assert "&lt;" not in sms.body and "&amp;" not in sms.body  # plain text, not escaped
    assert text[:20] in sms.body or text[:21] in sms.body
    assert text in email.body
    assert settings.SECRET_KEY not in sms.body + email.body + email.html_body  # text is not a template
    if "<" in text:
        assert text not in email.html_body  # escaped in HTML
        assert "&lt;" in email.html_body

    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    order_id = response.json()["id"]
    for url in (
        "/admin/orders/order/",
        f"/admin/orders/order/{order_id}/change/",
        "/admin/notifications/notification/",
    ):
        page = client.get(url).content.decode()
        assert "<script>alert" not in page and "<img src=x" not in page


@pytest.mark.parametrize(
    "text",
    [
        "Ada\nLovelace",
        "tab\there",
        "esc\x1b[31m",
        "bell\x07",
        "next\x85line",  # C1 controls
        "csi\x9b31m",
        "Ada \u202eecalevoL",  # a right-to-left override: shows as "Ada Lovelace"
        "isolate \u2067x\u2069",
        "Ada\u2028Lovelace",  # a line separator
    ],
)
def test_control_characters_are_refused(api, text):
    for body in (order_body(text, "Tea"), order_body("Ada", text)):
        response = api.post("/api/orders/", body, format="json")
        assert response.status_code == 400
        assert "control characters" in response.json()["detail"]


def test_a_very_long_name_is_refused_with_its_limit(api):
    response = api.post("/api/orders/", order_body("x" * 5000, "Tea"), format="json")
    assert response.status_code == 400
    assert "no more than 200 characters" in response.json()["detail"]


def test_an_emoji_name_keeps_the_sms_short(api, published):
    api.post("/api/orders/", order_body("🍵" * 100, "Tea"), format="json")
    assert len(Notification.objects.get(channel="sms").body) <= 100


# A cookie's quoted \000 is read as a NUL, which PostgreSQL refuses in a query.
BROKEN_SESSION_COOKIE = 'sessionid="abcdefghijk\\000lmn"'


def test_a_session_key_django_cannot_have_is_no_session():
    assert SessionStore("abcdefghijk\x00lmn").session_key is None
    assert SessionStore("abcdefghijk-lmn").session_key is None
    assert SessionStore("abcdefghijklmn0123").session_key == "abcdefghijklmn0123"


def test_a_token_key_drf_cannot_have_is_refused_before_any_query(django_assert_num_queries):
    with django_assert_num_queries(0), pytest.raises(AuthenticationFailed, match="Invalid token"):
        TokenAuthentication().authenticate_credentials("ab\x00cd")


def test_a_session_cookie_holding_a_nul_is_no_session_not_an_error(client, anonymous_api):
    assert client.get("/admin/", HTTP_COOKIE=BROKEN_SESSION_COOKIE).status_code == 302  # to the login page
    assert client.get("/metrics", HTTP_COOKIE=BROKEN_SESSION_COOKIE).status_code == 403
    response = anonymous_api.get("/api/orders/", HTTP_COOKIE=BROKEN_SESSION_COOKIE)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_a_token_holding_a_nul_is_an_invalid_token(anonymous_api):
    response = anonymous_api.get("/api/orders/", HTTP_AUTHORIZATION="Token abc\x00def")
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."


def test_a_name_with_a_joiner_between_visible_characters_is_kept(api, published):
    name = "Ada \U0001f469\u200d\U0001f4bb Lovelace"  # the woman technologist emoji is joined with U+200D
    response = api.post("/api/orders/", order_body(name, "Tea"), format="json")
    assert response.status_code == 201
    assert response.json()["customer_name"] == name
