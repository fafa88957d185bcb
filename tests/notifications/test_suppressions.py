"""A recipient its provider refused for good (unsubscribed, not a mobile, no such mailbox) is
suppressed: later notifications to it are cancelled unsent, not sent into the same refusal and
buried one dead letter per order event."""

import pytest
from django.contrib.admin.models import LogEntry

from notifications import dead_letters, services
from notifications.errors import PermanentDeliveryError
from notifications.models import DeadLetter, Notification, Suppression
from orders import services as order_services
from orders.models import ChangeSource
from tests.factories import UserFactory, place_order

pytestmark = pytest.mark.django_db

PHONE = "+442079460958"  # place_order's customer, in E.164
UNSUBSCRIBED = PermanentDeliveryError(
    "Twilio 21610: Attempt to send to unsubscribed recipient", code="twilio-21610", refuses_recipient=True
)


def sms_of(order, event="placed") -> Notification:
    return Notification.objects.get(order=order, channel="sms", event=event)


def send(notification: Notification) -> str:
    return services.notification_send(notification_id=notification.pk).outcome


@pytest.fixture
def suppressed(shop, published, scripted):
    """The customer's number, refused as unsubscribed by the first SMS sent to it."""
    scripted.script.append(UNSUBSCRIBED)
    first = sms_of(place_order(owner=shop))
    assert send(first) == "dead"
    return first


def test_a_refusal_of_the_recipient_suppresses_it_and_says_why(suppressed):
    suppression = Suppression.objects.get()
    assert (suppression.channel, suppression.recipient) == ("sms", PHONE)
    assert (suppression.error_code, suppression.notification_id) == ("twilio-21610", suppressed.pk)
    assert suppression.reason == "Twilio 21610: Attempt to send to unsubscribed recipient"
    assert DeadLetter.objects.get().notification_id == suppressed.pk  # the refused send itself is still buried


def test_later_notifications_to_it_are_cancelled_unsent_without_a_dead_letter(suppressed, shop, scripted):
    order = place_order(owner=shop)
    sms = sms_of(order)
    assert send(sms) == "skipped"
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.last_error_code) == ("cancelled", 0, "suppressed")
    assert "the provider refused this recipient on" in sms.last_error_message
    assert "twilio-21610" in sms.last_error_message and "lift its suppression" in sms.last_error_message
    assert scripted.sent == []  # nothing reached the provider
    assert DeadLetter.objects.count() == 1
    # The customer is still told by email, and of the next status too, on the channel that works.
    email = Notification.objects.get(order=order, channel="email")
    assert services.notification_send(notification_id=email.pk).outcome == "sent"
    order_services.order_transition(order_id=order.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    assert send(sms_of(order, "confirmed")) == "skipped"


def test_a_failure_that_is_not_about_the_recipient_suppresses_nothing(shop, published, scripted):
    scripted.script.append(PermanentDeliveryError("Twilio 21408: region not enabled", code="twilio-21408"))
    assert send(sms_of(place_order(owner=shop))) == "dead"
    assert not Suppression.objects.exists()
    assert send(sms_of(place_order(owner=shop))) == "sent"


def test_requeueing_its_dead_letter_lifts_the_suppression_and_sends(
    suppressed, staff, scripted, django_capture_on_commit_callbacks
):
    letter = DeadLetter.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        outcome = dead_letters.dead_letters_requeue(ids=[letter.pk], by=staff)
    assert outcome.requeued == 1
    assert not Suppression.objects.exists()
    assert send(suppressed) == "sent"
    assert scripted.sent == [(PHONE, suppressed.body)]


def test_resending_a_cancelled_notification_lifts_the_suppression(suppressed, shop, staff, scripted):
    later = sms_of(place_order(owner=shop))
    assert send(later) == "skipped"
    services.notification_resend(notification_id=later.pk, by=staff)
    assert not Suppression.objects.exists()
    assert send(later) == "sent"


def test_one_suppression_per_recipient_and_channel(suppressed):
    """A second refusal (a send claimed before the first came back) adds no second row."""
    services._suppress(suppressed, UNSUBSCRIBED)
    assert Suppression.objects.count() == 1


# --- the admin --------------------------------------------------------------------------------

SUPPRESSIONS = "/admin/notifications/suppression/"


@pytest.fixture
def operator(client):
    user = UserFactory(username="operator", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def test_an_operator_adds_one_for_a_customer_who_asked_and_the_phone_is_normalised(client, operator):
    response = client.post(
        f"{SUPPRESSIONS}add/", {"channel": "sms", "recipient": "+44 20 7946 0958", "reason": "asked by phone"}
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    suppression = Suppression.objects.get()
    assert (suppression.recipient, suppression.created_by, suppression.error_code) == (PHONE, operator, "")


def test_one_an_operator_added_says_so_on_the_notifications_it_stops(client, operator, shop, published, scripted):
    client.post(f"{SUPPRESSIONS}add/", {"channel": "sms", "recipient": PHONE, "reason": "asked us to stop"})
    sms = sms_of(place_order(owner=shop))
    assert send(sms) == "skipped"
    sms.refresh_from_db()
    assert sms.status == "cancelled"
    assert "an operator suppressed this recipient on" in sms.last_error_message
    assert "(asked us to stop)" in sms.last_error_message
    assert scripted.sent == []


@pytest.mark.parametrize(
    ("channel", "recipient", "said"),
    [
        ("sms", "12345", "is not a valid phone number"),
        ("email", "not-an-address", "is not a valid email address"),
    ],
)
def test_a_bad_recipient_is_a_form_error(client, operator, channel, recipient, said):
    response = client.post(f"{SUPPRESSIONS}add/", {"channel": channel, "recipient": recipient, "reason": "x"})
    assert response.status_code == 200
    assert said in response.content.decode()
    assert not Suppression.objects.exists()


def test_the_same_recipient_twice_is_a_form_error(client, operator):
    Suppression.objects.create(channel="sms", recipient=PHONE, reason="unsubscribed")
    response = client.post(f"{SUPPRESSIONS}add/", {"channel": "sms", "recipient": "+44 20 7946 0958", "reason": "x"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert Suppression.objects.count() == 1


def test_the_list_masks_recipients_finds_them_in_any_form_and_deleting_lifts(client, operator):
    suppression = Suppression.objects.create(channel="sms", recipient=PHONE, reason="unsubscribed")
    page = client.get(SUPPRESSIONS).content.decode()
    assert PHONE not in page and "unsubscribed" in page
    assert f"/{suppression.pk}/change/" in client.get(SUPPRESSIONS, {"q": "+44 20 7946 0958"}).content.decode()
    assert f"/{suppression.pk}/change/" not in client.get(SUPPRESSIONS, {"q": "+14155552671"}).content.decode()
    response = client.post(f"{SUPPRESSIONS}{suppression.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Suppression.objects.exists()
    assert LogEntry.objects.filter(object_id=str(suppression.pk)).exists()


def test_staff_without_the_delete_permission_cannot_lift_one(client):
    client.force_login(UserFactory(username="viewer", is_staff=True))
    suppression = Suppression.objects.create(channel="sms", recipient=PHONE, reason="unsubscribed")
    assert client.post(f"{SUPPRESSIONS}{suppression.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Suppression.objects.exists()
