"""A recipient its provider refused for good (unsubscribed, not a mobile, no such mailbox) is
suppressed: later notifications to it are cancelled unsent, not sent into the same refusal and
buried one dead letter per order event."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages

from notifications import dead_letters, services
from notifications.errors import PermanentDeliveryError
from notifications.models import DeadLetter, Notification, Suppression
from orderflow.errors import Conflict
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


@pytest.mark.parametrize("requeue", ["one", "all matching"])
def test_requeueing_its_dead_letter_keeps_the_suppression_and_says_why(
    suppressed, staff, scripted, requeue, django_capture_on_commit_callbacks
):
    """The customer said STOP: requeueing what an outage killed must not send to them again."""
    letter = DeadLetter.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        if requeue == "one":
            outcome = dead_letters.dead_letters_requeue(ids=[letter.pk], by=staff)
            assert (outcome.requeued, list(outcome.skipped)) == (0, [letter.pk])
            assert outcome.skipped[letter.pk].startswith(
                "its recipient is suppressed: the provider refused this recipient on "
            )
        else:
            batch = dead_letters.requeue_batch_freeze(
                dead_letters=DeadLetter.objects.all(), description="all", by=staff
            )
            dead_letters.requeue_batch_confirm(batch_id=batch.pk, by=staff)
            batch = dead_letters.requeue_batch_run(batch_id=batch.pk)
            assert (batch.requeued, batch.skipped) == (0, 1)
    assert Suppression.objects.get().error_code == "twilio-21610"
    assert (DeadLetter.objects.get().status, Notification.objects.get(pk=suppressed.pk).status) == ("dead", "dead")
    assert scripted.sent == []

    # Lifted on purpose (the customer texted START), the requeue sends it.
    services.suppressions_remove(suppressions=Suppression.objects.all(), by=staff)
    with django_capture_on_commit_callbacks(execute=True):
        assert dead_letters.dead_letters_requeue(ids=[letter.pk], by=staff).requeued == 1
    assert send(suppressed) == "sent"
    assert scripted.sent == [(PHONE, suppressed.body)]


def test_resending_one_it_stopped_says_to_lift_the_suppression_first(suppressed, shop, staff, scripted):
    later = sms_of(place_order(owner=shop))
    assert send(later) == "skipped"
    suppression = Suppression.objects.get()
    with pytest.raises(
        Conflict,
        match=rf"would not be sent: the provider refused .*; to send to it again, lift its suppression "
        rf"\(Suppressions, #{suppression.pk}; needs the permission “Can delete suppression”\)\.$",
    ):
        services.notification_resend(notification_id=later.pk, by=staff)
    assert Notification.objects.get(pk=later.pk).status == "cancelled"

    services.suppressions_remove(suppressions=[suppression], by=staff)
    services.notification_resend(notification_id=later.pk, by=staff)
    assert send(later) == "sent"
    assert scripted.sent == [(PHONE, later.body)]


def test_resending_the_refused_one_itself_is_refused_while_it_is_suppressed(suppressed, staff):
    with pytest.raises(Conflict, match="would not be sent: the provider refused this recipient"):
        services.notification_resend(notification_id=suppressed.pk, by=staff)
    assert Suppression.objects.exists()
    assert Notification.objects.get(pk=suppressed.pk).status == "dead"


@pytest.mark.parametrize("how", ["resend", "requeue"])
def test_sending_it_again_to_a_corrected_recipient_keeps_the_refused_one_suppressed(
    suppressed, shop, staff, scripted, how, django_capture_on_commit_callbacks
):
    """The refused number may still be the customer's on another order: it stays suppressed."""
    services.notification_correct_recipient(
        notification_id=suppressed.pk, recipient="+14155552671", reason="a typo in the number", by=staff
    )
    with django_capture_on_commit_callbacks(execute=True):
        if how == "resend":
            services.notification_resend(notification_id=suppressed.pk, by=staff)
        else:
            dead_letters.dead_letters_requeue(ids=[DeadLetter.objects.get().pk], by=staff)
    assert send(suppressed) == "sent"
    assert list(Suppression.objects.values_list("recipient", flat=True)) == [PHONE]
    later = sms_of(place_order(owner=shop))  # the same refused number
    assert send(later) == "skipped"
    later.refresh_from_db()
    assert (later.status, later.last_error_code) == ("cancelled", "suppressed")
    assert scripted.sent == [("+14155552671", suppressed.body)]


def test_one_the_customer_asked_for_survives_requeueing_an_unrelated_failure(
    shop, staff, published, scripted, django_capture_on_commit_callbacks
):
    """An operator's suppression (the customer asked us to stop) is lifted only in its own right."""
    scripted.script.append(PermanentDeliveryError("Twilio 21408: region not enabled", code="twilio-21408"))
    refused = sms_of(place_order(owner=shop))
    assert send(refused) == "dead"
    services.suppression_add(channel="sms", recipient=PHONE, reason="asked us to stop", by=staff)
    letter = DeadLetter.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        outcome = dead_letters.dead_letters_requeue(ids=[letter.pk], by=staff)
    assert outcome.requeued == 0
    assert "its recipient is suppressed: an operator suppressed this recipient" in outcome.skipped[letter.pk]
    assert "(asked us to stop)" in outcome.skipped[letter.pk]
    assert Suppression.objects.filter(recipient=PHONE).exists()
    assert DeadLetter.objects.get().status == "dead"
    assert Notification.objects.get(pk=refused.pk).status == "dead"
    assert scripted.sent == []


@pytest.mark.parametrize(
    ("suppressed_as", "ordered_as"), [("Ada@Example.COM", "ada@example.com"), ("ada@example.com", "ADA@example.com")]
)
def test_an_email_address_is_suppressed_whatever_its_case(shop, staff, published, suppressed_as, ordered_as):
    services.suppression_add(channel="email", recipient=suppressed_as, reason="no such mailbox", by=staff)
    order = place_order(owner=shop, customer_email=ordered_as, customer_phone="")
    email = Notification.objects.get(order=order, channel="email")
    assert send(email) == "skipped"
    email.refresh_from_db()
    assert (email.status, email.last_error_code) == ("cancelled", "suppressed")


def test_a_refusal_suppresses_an_address_in_lower_case(shop, published, scripted):
    scripted.script.append(UNSUBSCRIBED)
    send(sms_of(place_order(owner=shop)))
    assert Suppression.objects.get().recipient == PHONE
    assert services.suppression_key("Ada@Example.COM") == "ada@example.com"


# --- the admin --------------------------------------------------------------------------------

SUPPRESSIONS = "/admin/notifications/suppression/"


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
    response = client.post(f"{SUPPRESSIONS}add/", {"channel": "email", "recipient": "Ada@Example.com", "reason": "x"})
    assert response.status_code == 302
    response = client.post(f"{SUPPRESSIONS}add/", {"channel": "email", "recipient": "ADA@example.com", "reason": "x"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    response = client.post(f"{SUPPRESSIONS}add/", {"channel": "sms", "recipient": "+44 20 7946 0958", "reason": "x"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert Suppression.objects.count() == 2


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


@pytest.mark.parametrize("how", ["its page", "the list's action"])
def test_lifting_one_names_the_notifications_that_stay_cancelled(client, operator, suppressed, shop, how):
    """Lifting sends nothing by itself: the operator learns which ones to send again."""
    stopped = [sms_of(place_order(owner=shop)) for _ in range(2)]
    assert [send(notification) for notification in stopped] == ["skipped", "skipped"]
    suppression = Suppression.objects.get()
    if how == "its page":
        response = client.post(f"{SUPPRESSIONS}{suppression.pk}/delete/", {"post": "yes"}, follow=True)
    else:
        response = client.post(
            SUPPRESSIONS,
            {"action": "delete_selected", "_selected_action": [suppression.pk], "post": "yes"},
            follow=True,
        )
    said = [str(message) for message in get_messages(response.wsgi_request)]
    assert not Suppression.objects.exists()
    assert any(
        message.startswith(f"Notification(s) {stopped[0].pk}, {stopped[1].pk} were cancelled while suppressed")
        for message in said
    ), said
    assert [notification.status for notification in Notification.objects.filter(pk__in=[n.pk for n in stopped])] == [
        "cancelled",
        "cancelled",
    ]


def test_lifting_ones_already_lifted_from_a_stale_page_says_so(client, operator):
    gone = Suppression.objects.create(channel="sms", recipient=PHONE, reason="unsubscribed").pk
    Suppression.objects.filter(pk=gone).delete()  # by another operator, since this page was loaded
    response = client.post(
        SUPPRESSIONS, {"action": "delete_selected", "_selected_action": [gone], "post": "yes"}, follow=True
    )
    said = [str(message) for message in get_messages(response.wsgi_request)]
    assert said == [
        "1 selected row(s) are no longer in this list (removed, or changed so that its filters no longer match) "
        f"and were left out: {gone}."
    ]


def test_staff_without_the_delete_permission_cannot_lift_one(client):
    client.force_login(UserFactory(username="viewer", is_staff=True))
    suppression = Suppression.objects.create(channel="sms", recipient=PHONE, reason="unsubscribed")
    assert client.post(f"{SUPPRESSIONS}{suppression.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Suppression.objects.exists()


def test_its_notification_is_linked_only_for_those_who_may_open_it(client, suppressed):
    suppression = Suppression.objects.get()
    notification_page = f"/admin/notifications/notification/{suppressed.pk}/change/"
    clerk = UserFactory(username="clerk", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_suppression"))
    client.force_login(clerk)
    page = client.get(f"{SUPPRESSIONS}{suppression.pk}/change/").content.decode()
    assert str(suppressed) in page and notification_page not in page
    clerk.user_permissions.add(Permission.objects.get(codename="view_notification"))
    page = client.get(f"{SUPPRESSIONS}{suppression.pk}/change/").content.decode()
    assert notification_page in page
    assert client.get(notification_page).status_code == 200
