"""Admin lists asked for with filter values the database cannot use, and hand-made action
requests, get a message on the page instead of a 500: for our lists and the installed apps'.

These run outside a test transaction, as requests do: the refused query must leave the
connection usable for the redirect's session and messages.
"""

import pytest
from django.contrib.messages import get_messages
from django.db import connection

from notifications.admin import NotificationAdmin
from notifications.models import Notification
from tests.factories import UserFactory, place_order

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


# A year outside 1 to 9999 fails in `datetime` (ValueError, or OverflowError past a C long),
# on every database; the date hierarchy of orders and batches also fails on 9999 itself.
OUT_OF_RANGE = [
    ("/admin/orders/order/", "created_at__year=99999999999999"),
    ("/admin/orders/order/", "created_at__year=9999"),
    ("/admin/notifications/requeuebatch/", "created_at__year=99999999999999"),
    ("/admin/notifications/deadletter/", "last_failed_at__year=99999999999999"),
    ("/admin/notifications/deadletter/", "last_failed_at__year=10000"),
    ("/admin/notifications/deadletter/", "last_failed_at__year=0"),
    ("/admin/django_celery_results/taskresult/", "date_done__year=99999999999999"),
]
# PostgreSQL refuses a NUL in text and an invalid regular expression; SQLite takes them, and
# the list shows what matches (here nothing).
REFUSED_BY_POSTGRESQL = [
    ("/admin/orders/order/", "status__exact=%00"),
    ("/admin/orders/order/", "customer_name__regex=("),
    ("/admin/notifications/notification/", "recipient=%00"),
    ("/admin/notifications/notification/", "channel__exact=%00"),
    ("/admin/notifications/deadletter/", "fingerprint=%00"),
    ("/admin/notifications/deadletter/", "message__regex=("),
    ("/admin/django_celery_beat/periodictask/", "task=%00"),
    ("/admin/django_celery_results/taskresult/", "status=%00"),
]


def assert_shown_without_the_filters(client, url, response):
    assert (response.status_code, response.url) == (302, url)
    assert any("cannot be shown with the filters" in message for message in messages_of(response))
    assert client.get(url).status_code == 200


@pytest.mark.parametrize(("url", "query"), OUT_OF_RANGE)
def test_a_year_out_of_range_shows_the_list_without_it(client, operator, url, query):
    assert_shown_without_the_filters(client, url, client.get(f"{url}?{query}"))


@pytest.mark.parametrize(("url", "query"), REFUSED_BY_POSTGRESQL)
def test_a_filter_value_the_database_refuses_shows_the_list_without_it(client, operator, url, query):
    response = client.get(f"{url}?{query}")
    if connection.vendor == "postgresql":
        assert_shown_without_the_filters(client, url, response)
    else:
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == 0


def test_an_invalid_regular_expression_over_rows_shows_the_list_without_it(client, operator, shop):
    place_order(owner=shop)  # SQLite runs REGEXP in Python, row by row: it fails only with rows to match
    url = "/admin/orders/order/"
    assert_shown_without_the_filters(client, url, client.get(url, {"customer_name__regex": "("}))


def test_a_popup_list_stays_a_popup_without_the_filters(client, operator):
    url = "/admin/notifications/deadletter/"
    response = client.get(url, {"_popup": "1", "_to_field": "id", "last_failed_at__year": "10000"})
    assert response.url == f"{url}?_popup=1&_to_field=id"


def test_an_action_on_rows_that_are_not_ids_says_so_and_changes_nothing(client, operator, shop):
    place_order(owner=shop)
    before = dict(Notification.objects.values_list("pk", "status"))
    assert before
    url = "/admin/notifications/notification/"
    response = client.post(url, {"action": "cancel_selected", "_selected_action": ["abc", *before]})
    assert (response.status_code, response.url) == (302, url)
    assert any("the rows sent are not ids of this list" in message for message in messages_of(response))
    assert dict(Notification.objects.values_list("pk", "status")) == before


def test_a_list_that_fails_without_filters_is_still_an_error(client, operator, monkeypatch):
    def broken(self, request):
        raise OverflowError("a defect of ours, not the request's")

    monkeypatch.setattr(NotificationAdmin, "get_queryset", broken)
    client.raise_request_exception = True
    with pytest.raises(OverflowError):
        client.get("/admin/notifications/notification/")
