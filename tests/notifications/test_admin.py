import pytest
from django.utils import timezone

from notifications import services
from notifications.backends.email import EmailBackend
from notifications.errors import PermanentDeliveryError
from notifications.models import DeadLetter, Notification, NotificationAttempt
from orders import services as order_services
from orders.models import ChangeSource
from tests.factories import place_order
from tests.notifications.conftest import send_into_dead_letter

pytestmark = pytest.mark.django_db


@pytest.fixture
def orders(shop, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        return [place_order(owner=shop) for _ in range(10)]


def test_notification_list_filters_and_searches_without_n_plus_one(
    client, operator, orders, django_assert_max_num_queries
):
    with django_assert_max_num_queries(10):
        response = client.get("/admin/notifications/notification/", {"channel__exact": "sms"})
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 10
    found = client.get("/admin/notifications/notification/", {"q": orders[0].customer_phone})
    assert found.status_code == 200


@pytest.mark.parametrize("written", ["{}", "#{}", " # {} "])
def test_notifications_are_found_by_their_order_number_as_the_list_shows_it(client, operator, orders, written):
    wanted = orders[3]
    found = client.get("/admin/notifications/notification/", {"q": written.format(wanted.pk)}).context["cl"]
    # A notification whose own id is that number is found too.
    assert all(wanted.pk in (row.order_id, row.pk) for row in found.result_list)
    assert len([row for row in found.result_list if row.order_id == wanted.pk]) == 2  # its SMS and email


@pytest.mark.parametrize(
    ("stored", "written"),
    [
        ("<a1b2c3@orderflow.example>", "<a1b2c3@orderflow.example>"),
        ("<a1b2c3@orderflow.example>", "a1b2c3@orderflow.example"),
        ("SM0123456789abcdef0123456789abcdef", "SM0123456789abcdef0123456789abcdef"),
    ],
)
def test_notifications_are_found_by_the_provider_id_as_a_mail_log_quotes_it(client, operator, orders, stored, written):
    Notification.objects.filter(pk=orders[2].notifications.first().pk).update(provider_message_id=stored)
    found = client.get("/admin/notifications/notification/", {"q": written}).context["cl"].result_list
    assert [row.provider_message_id for row in found] == [stored]


@pytest.mark.parametrize(
    "written", ["+14155550100", "+1 (415) 555-0100", "+1 415 555 0100 ", "0014155550100", "001 415 555 0100"]
)
def test_notifications_and_dead_letters_are_found_by_a_phone_written_any_way(
    client, operator, shop, published, scripted, written
):
    wanted = place_order(owner=shop, customer_phone="+1 415 555 0100", customer_email="")
    place_order(owner=shop, customer_phone="+1 415 555 0101", customer_email="")
    letter = send_into_dead_letter(wanted)
    found = client.get("/admin/notifications/notification/", {"q": written}).context["cl"].result_list
    assert [row.order_id for row in found] == [wanted.pk]
    found = client.get("/admin/notifications/deadletter/", {"q": written}).context["cl"].result_list
    assert list(found) == [letter]


@pytest.mark.parametrize(
    ("stored", "written"),
    [
        ("Ada.Lovelace@Example.com", "Ada.Lovelace@Example.com"),
        ("Ada.Lovelace@Example.com", "ada.lovelace@example.com"),
        ("Ada.Lovelace@Example.com", " ADA.LOVELACE@EXAMPLE.COM"),
        # Beyond ASCII the database and Python fold case differently: the database folds both.
        ("Ada@Bücher.de", "Ada@Bücher.de"),
        ("Ada@Bücher.de", "ada@bücher.de"),
    ],
)
def test_notifications_and_dead_letters_are_found_by_an_email_address_in_any_case(
    client, operator, shop, published, monkeypatch, stored, written
):
    wanted = place_order(owner=shop, customer_phone="", customer_email=stored)
    place_order(owner=shop, customer_phone="", customer_email="ada.lovelace@example.org")

    def refused(self, **message):
        raise PermanentDeliveryError("550 5.1.1 mailbox unavailable", code="smtp-550")

    monkeypatch.setattr(EmailBackend, "send", refused)
    email = Notification.objects.get(order=wanted)
    assert services.notification_send(notification_id=email.pk).outcome == "dead"

    found = client.get("/admin/notifications/notification/", {"q": written}).context["cl"].result_list
    assert [row.pk for row in found] == [email.pk]
    found = client.get("/admin/notifications/deadletter/", {"q": written}).context["cl"].result_list
    assert [letter.notification_id for letter in found] == [email.pk]


def test_a_notification_waiting_for_an_earlier_one_says_so_unlike_one_left_unpublished(
    client, operator, shop, published, scripted, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        order = place_order(owner=shop, customer_email="")
        order_services.order_transition(order_id=order.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    first, confirmation = (Notification.objects.get(order=order, event=event) for event in ("placed", "confirmed"))
    assert services.notification_send(notification_id=confirmation.pk).outcome == "waiting"
    Notification.objects.filter(pk=first.pk).update(status="pending", stale_after=timezone.now())  # broker away

    said = "pending: waits for an earlier notification of its order"
    listed = client.get("/admin/notifications/notification/", {"status__exact": "pending"}).content.decode()
    assert listed.count(said) == 1
    assert said in client.get(f"/admin/notifications/notification/{confirmation.pk}/change/").content.decode()
    assert said not in client.get(f"/admin/notifications/notification/{first.pk}/change/").content.decode()


def test_notification_detail_shows_its_attempts(client, operator, orders):
    notification = Notification.objects.first()
    NotificationAttempt.objects.create(
        notification=notification,
        number=1,
        outcome="transient",
        error_code="http-503",
        error_message="Twilio HTTP 503: busy",
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    page = client.get(f"/admin/notifications/notification/{notification.pk}/change/").content.decode()
    assert "Twilio HTTP 503: busy" in page
    assert "We have received your order" in page


def test_dead_letters_are_listed(client, operator, orders, django_assert_max_num_queries):
    now = timezone.now()
    for notification in Notification.objects.filter(channel="sms"):
        DeadLetter.objects.create(
            notification=notification,
            task_name="notifications.tasks.send_sms_notification",
            args=[notification.pk],
            queue="sms",
            exception_type="twilio.base.exceptions.TwilioRestException",
            error_code="twilio-21211",
            message="Twilio 21211: invalid number",
            attempts=1,
            first_failed_at=now,
            last_failed_at=now,
        )
    with django_assert_max_num_queries(10):
        response = client.get("/admin/notifications/deadletter/", {"status__exact": "dead"})
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 10
    assert client.get("/admin/notifications/deadletter/", {"q": "invalid"}).status_code == 200


@pytest.mark.parametrize("term", ["\u00b2", "\u2460", "\u0661", "9" * 4301, "9" * 19])
def test_a_search_for_digits_int_cannot_read_lists_nothing_instead_of_failing(client, operator, orders, term):
    for url in ("/admin/notifications/notification/", "/admin/notifications/deadletter/"):
        response = client.get(url, {"q": term})
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == 0
