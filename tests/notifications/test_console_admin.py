"""The dead-letter console as real logged-in users, with and without each permission."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.utils import timezone

from notifications import dead_letters, services
from notifications.models import DeadLetter, Notification, RequeueBatch, Suppression
from notifications.tasks import requeue_dead_letter_batch
from orders import services as order_services
from orders.models import ChangeSource, Order
from tests.factories import UserFactory, place_order
from tests.notifications.conftest import send_into_dead_letter

pytestmark = pytest.mark.django_db

LIST = "/admin/notifications/deadletter/"


def operator_with(client, *codenames, username="operator"):
    """A staff user with these permissions (of notifications, or as "app.codename") logged in."""
    user = UserFactory(username=username, is_staff=True)
    for name in codenames:
        app_label, _, codename = name.rpartition(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label or "notifications", codename=codename)
        )
    client.force_login(user)
    return user


def messages_of(response):
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def letters(shop, published, scripted, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        orders = [place_order(owner=shop, customer_email="", customer_phone=f"+1202555{n:04d}") for n in range(5)]
    return [send_into_dead_letter(order) for order in orders]


def test_list_shows_masked_recipients_and_reasons_without_n_plus_one(client, letters, django_assert_max_num_queries):
    operator_with(client, "view_deadletter")
    with django_assert_max_num_queries(12):
        response = client.get(LIST)
    page = response.content.decode()
    assert response.status_code == 200
    assert "+12***00" in page and "+12025550000" not in page
    assert "twilio-21211" in page
    assert "Twilio 21211: invalid number" in page


def test_pages_listing_many_letters_mask_a_recipient_the_provider_quoted(client, letters, shop):
    operator_with(client, "view_deadletter", "requeue_deadletter")
    quoted = "The 'To' number +12025550000 is not valid; ops@shop.example was told"
    DeadLetter.objects.filter(pk__in=[letter.pk for letter in letters]).update(message=quoted)
    batch = RequeueBatch.objects.create(dead_letter_ids=[letters[0].pk], description="one", created_by=shop)
    for url in (LIST, f"{LIST}by-cause/", f"{LIST}requeue-batch/{batch.pk}/"):
        page = client.get(url).content.decode()
        assert "+12***00 is not valid; o***@shop.example" in page, url
        assert "+12025550000" not in page and "ops@" not in page, url
    # One letter's own page shows the message whole: the operator opened it to read it.
    assert (
        "+12025550000 is not valid; ops@shop.example" in client.get(f"{LIST}{letters[0].pk}/change/").content.decode()
    )


@pytest.mark.parametrize(
    "query",
    [
        {"queue__exact": "sms"},
        {"task_name__exact": "notifications.tasks.send_sms_notification"},
        {"exception_type__exact": "notifications.errors.PermanentDeliveryError"},
        {"status__exact": "dead"},
        {"last_failed_at__gte": "2000-01-01T00:00:00+00:00"},
    ],
)
def test_each_filter_finds_the_rows(client, letters, query):
    operator_with(client, "view_deadletter")
    response = client.get(LIST, query)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 5


@pytest.mark.parametrize("term", ["order", "#order", "+12025550003", "invalid number"])
def test_search_by_order_recipient_and_error_text(client, letters, term):
    operator_with(client, "view_deadletter")
    target = letters[3]
    query = term.replace("order", str(target.notification.order_id)) if term.endswith("order") else term
    found = client.get(LIST, {"q": query}).context["cl"].result_list
    assert target in found
    if term.endswith("order"):
        query = query.removeprefix("#")
        # The order's id may also be part of another row's error message (its phone number), which matches too.
        assert all(row == target or query in row.message for row in found)
    elif term != "invalid number":
        assert list(found) == [target]


def test_a_recipient_corrected_since_is_found_by_the_number_refused(client, letters, shop):
    """The refusal quotes the old number; the notification now holds the corrected one."""
    operator_with(client, "view_deadletter", "view_notification", "resend_notification")
    letter = letters[0]
    services.notification_correct_recipient(
        notification_id=letter.notification_id, recipient="+12025550172", reason="customer called", by=shop
    )
    for term in ("+12025550000", "+1 (202) 555-0000"):
        assert list(client.get(LIST, {"q": term}).context["cl"].result_list) == [letter]
        notifications = client.get("/admin/notifications/notification/", {"q": term}).context["cl"].result_list
        assert [row.pk for row in notifications] == [letter.notification_id]
    assert list(client.get(LIST, {"q": "+12025550172"}).context["cl"].result_list) == [letter]


def test_detail_page_is_readable(client, letters):
    operator = operator_with(client, "view_deadletter", "view_notification")
    operator.user_permissions.add(Permission.objects.get(codename="view_order"))
    letter = letters[0]
    page = client.get(f"{LIST}{letter.pk}/change/").content.decode()
    assert f"[\n  {letter.notification_id}\n]" in page  # pretty-printed args
    assert "PermanentDeliveryError" in page  # the traceback
    assert "<td>permanent</td>" in page  # the attempt history
    assert f"/admin/orders/order/{letter.notification.order_id}/change/" in page
    assert f"/admin/notifications/notification/{letter.notification_id}/change/" in page


def test_links_to_pages_the_operator_may_not_open_are_shown_as_plain_text(client, letters):
    letter = letters[0]
    notification_page = f"/admin/notifications/notification/{letter.notification_id}/change/"
    order_page = f"/admin/orders/order/{letter.notification.order_id}/change/"
    operator_with(client, "view_deadletter")
    for page in (client.get(f"{LIST}{letter.pk}/change/"), client.get(LIST)):
        shown = page.content.decode()
        assert page.status_code == 200
        assert notification_page not in shown and order_page not in shown
        assert f"#{letter.notification.order_id}" in shown
    assert f"{letter.notification} (dead)" in client.get(f"{LIST}{letter.pk}/change/").content.decode()
    operator_with(client, "view_deadletter", "view_notification", username="reader")
    shown = client.get(f"{LIST}{letter.pk}/change/").content.decode()
    assert notification_page in shown and order_page not in shown
    assert client.get(notification_page).status_code == 200


def test_the_notification_page_offers_correct_it_to_those_who_may_resend_while_it_can_be_corrected(
    client, letters, shop, published
):
    dead = letters[0].notification
    link = f"/admin/notifications/notification/{dead.pk}/correct-recipient/"
    operator_with(client, "view_notification")
    page = client.get(f"/admin/notifications/notification/{dead.pk}/change/").content.decode()
    assert dead.recipient in page and link not in page
    operator_with(client, "view_notification", "resend_notification", username="resender")
    page = client.get(f"/admin/notifications/notification/{dead.pk}/change/").content.decode()
    assert f'{dead.recipient} (<a href="{link}">correct it</a>)' in page
    assert client.get(link).status_code == 200
    sent = Notification.objects.get(order=place_order(owner=shop, customer_email=""))
    Notification.objects.filter(pk=sent.pk).update(status="sent")
    page = client.get(f"/admin/notifications/notification/{sent.pk}/change/").content.decode()
    assert sent.recipient in page and "correct it" not in page


def test_an_action_the_operator_may_not_use_is_refused_by_name(client, letters, published):
    """A page loaded before a permission was taken away, or a forged post."""
    selected = [letter.pk for letter in letters]
    operator_with(client, "view_deadletter", "requeue_deadletter")
    response = client.post(LIST, {"action": "discard_selected", "_selected_action": selected}, follow=True)
    assert messages_of(response) == [
        "You may not use “Discard selected dead letters”: that needs a permission you do not have. Nothing was changed."
    ]
    operator_with(client, "view_deadletter", username="reader")  # no action at all left to this one
    response = client.post(LIST, {"action": "requeue_selected", "_selected_action": selected}, follow=True)
    assert messages_of(response) == [
        "You may not use “Requeue selected dead letters”: that needs a permission you do not have. Nothing was changed."
    ]
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"dead"}
    assert published == []


def test_the_correct_it_link_is_offered_only_to_those_who_may_use_it(client, letters):
    letter = letters[0]
    operator_with(client, "view_deadletter", "requeue_deadletter")
    page = client.get(f"{LIST}{letter.pk}/change/").content.decode()
    assert letter.notification.recipient in page and "correct it" not in page
    operator_with(client, "view_deadletter", "resend_notification", username="resender")
    assert "correct it" in client.get(f"{LIST}{letter.pk}/change/").content.decode()


def test_staff_without_permissions_see_no_actions_and_a_forged_post_changes_nothing(client, letters, published):
    operator_with(client, "view_deadletter")
    page = client.get(LIST).content.decode()
    assert "requeue_selected" not in page and "discard_selected" not in page
    assert "Requeue all matching" not in page
    for action in ("requeue_selected", "discard_selected"):
        client.post(LIST, {"action": action, "_selected_action": [letter.pk for letter in letters]})
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"dead"}
    assert published == []
    assert client.get(f"{LIST}requeue-matching/").status_code == 403
    assert client.post(f"{LIST}requeue-matching/").status_code == 403
    assert not RequeueBatch.objects.exists()


def test_requeue_permission_allows_requeue_but_not_discard(
    client,
    letters,
    published,
    django_capture_on_commit_callbacks,
):
    user = operator_with(client, "view_deadletter", "requeue_deadletter")
    page = client.get(LIST).content.decode()
    assert "requeue_selected" in page and "discard_selected" not in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(LIST, {"action": "requeue_selected", "_selected_action": [letters[0].pk]}, follow=True)
    assert "1 dead letter(s) requeued." in messages_of(response)
    letters[0].refresh_from_db()
    assert (letters[0].status, letters[0].resolved_by) == ("requeued", user)
    assert published == [("notifications.tasks.send_sms_notification", [letters[0].notification_id], "sms")]

    again = client.post(LIST, {"action": "requeue_selected", "_selected_action": [letters[0].pk]}, follow=True)
    assert f"{letters[0].pk}: already requeued" in messages_of(again)
    assert len(published) == 1

    client.post(LIST, {"action": "discard_selected", "_selected_action": [letters[1].pk]})
    assert DeadLetter.objects.get(pk=letters[1].pk).status == "dead"


def test_the_requeue_permission_alone_shows_no_dead_letter_through_a_batch(client, letters, shop):
    operator_with(client, "requeue_deadletter")
    assert client.get(LIST).status_code == 403
    assert client.post(f"{LIST}requeue-matching/?status__exact=dead").status_code == 403
    assert not RequeueBatch.objects.exists()
    batch = RequeueBatch.objects.create(
        dead_letter_ids=[letter.pk for letter in letters], description="by another", created_by=shop
    )
    assert client.get(f"{LIST}requeue-batch/{batch.pk}/").status_code == 403


@pytest.mark.parametrize(
    ("url", "permission"),
    [
        (
            "/admin/notifications/notification/{notification}/correct-recipient/",
            "“Can resend or correct notifications”",
        ),
        (f"{LIST}requeue-batch/{{batch}}/", "“Can view dead letter” and “Can requeue dead letters”"),
        (f"{LIST}by-cause/", "“Can view dead letter”"),
        ("/admin/dashboard/", "“Can view notification”"),
    ],
)
def test_a_page_staff_may_not_open_names_the_permission_it_needs(client, letters, shop, url, permission):
    """A link passed on by a colleague: a page that says what to ask for, not a bare 403."""
    operator_with(client, "orders.view_order")
    batch = RequeueBatch.objects.create(dead_letter_ids=[letters[0].pk], description="one", created_by=shop)
    response = client.get(url.format(notification=letters[0].notification_id, batch=batch.pk))
    assert response.status_code == 403
    assert f"This page needs the permission {permission}" in response.content.decode()


def test_discard_permission_discards(client, letters):
    user = operator_with(client, "view_deadletter", "discard_deadletter")
    response = client.post(LIST, {"action": "discard_selected", "_selected_action": [letters[0].pk]}, follow=True)
    assert "1 dead letter(s) discarded." in messages_of(response)
    letters[0].refresh_from_db()
    assert (letters[0].status, letters[0].resolved_by) == ("discarded", user)


def test_requeue_all_matching_freezes_the_set_then_hands_it_to_a_task(
    client,
    letters,
    published,
    scripted,
    shop,
    django_capture_on_commit_callbacks,
):
    operator_with(client, "view_deadletter", "requeue_deadletter")
    page = client.get(LIST, {"queue__exact": "sms", "status__exact": "dead"}).content.decode()
    assert f'<form method="post" action="{LIST}requeue-matching/?queue__exact=sms&amp;status__exact=dead">' in page
    response = client.post(f"{LIST}requeue-matching/?queue__exact=sms&status__exact=dead")
    batch = RequeueBatch.objects.get()
    assert response.url == f"{LIST}requeue-batch/{batch.pk}/"
    assert sorted(batch.dead_letter_ids) == sorted(letter.pk for letter in letters)
    assert batch.description == "matching queue__exact=sms, status__exact=dead"

    with django_capture_on_commit_callbacks(execute=False):
        late = send_into_dead_letter(place_order(owner=shop, customer_email=""))  # dies after the page was shown
    page = client.get(response.url).content.decode()
    assert "Requeue 5 dead letters" in page
    assert "These <strong>5</strong> dead letters (" in page and ") were frozen at" in page

    client.post(response.url)
    assert published[-1] == ("notifications.tasks.requeue_dead_letter_batch", [batch.pk], None)
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_dead_letter_batch(batch.pk) == {"requeued": 5, "skipped": 0}
    assert DeadLetter.objects.get(pk=late.pk).status == "dead"
    assert "Requeued 5, left alone 0" in client.get(response.url).content.decode()


def test_a_cancelled_batch_requeues_nothing_and_cannot_be_confirmed_later(client, letters, published, shop):
    user = operator_with(client, "view_deadletter", "requeue_deadletter")
    response = client.post(f"{LIST}requeue-matching/?status__exact=dead")
    batch_url = response.url
    assert 'name="cancel"' in client.get(batch_url).content.decode()

    cancelled = client.post(batch_url, {"cancel": "Cancel"}, follow=True)
    assert "Cancelled: nothing was requeued." in messages_of(cancelled)
    batch = RequeueBatch.objects.get()
    assert (batch.status, batch.cancelled_by, batch.confirmed_by) == ("cancelled", user, None)
    page = client.get(batch_url).content.decode()
    assert "<strong>cancelled</strong>" in page and "Nothing was requeued." in page
    assert 'value="Requeue' not in page and 'name="cancel"' not in page

    # The page kept open in another tab, confirmed after the cancel.
    confirmed = client.post(batch_url, follow=True)
    assert "This requeue was cancelled, so nothing was requeued; freeze the dead letters again." in messages_of(
        confirmed
    )
    assert RequeueBatch.objects.get().status == "cancelled"
    assert not any(task == "notifications.tasks.requeue_dead_letter_batch" for task, _, _ in published)
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"dead"}
    again = client.post(batch_url, {"cancel": "Cancel"}, follow=True)
    assert "This requeue was already cancelled." in messages_of(again)
    running = RequeueBatch.objects.create(dead_letter_ids=[letters[0].pk], created_by=shop, status="running")
    late = client.post(f"{LIST}requeue-batch/{running.pk}/", {"cancel": "Cancel"}, follow=True)
    assert "This requeue was already confirmed (Running); it can no longer be cancelled." in messages_of(late)
    assert RequeueBatch.objects.get(pk=running.pk).status == "running"


def test_a_batch_says_how_many_it_leaves_alone_for_a_suppressed_recipient(client, letters, shop):
    operator_with(client, "view_deadletter", "requeue_deadletter")
    Suppression.objects.create(channel="sms", recipient="+12025550003", reason="said STOP", error_code="twilio-21610")
    batch_url = client.post(f"{LIST}requeue-matching/?status__exact=dead").url
    page = " ".join(client.get(batch_url).content.decode().split())
    assert "1 of them goes to a suppressed recipient" in page
    assert "will be left alone: a requeue never lifts a suppression" in page
    assert 'value="Requeue 4 dead letters"' in page  # of the 5 frozen


def test_a_batch_counts_what_it_will_requeue_not_what_was_frozen(client, letters, shop):
    """Frozen, then some requeued and one discarded before the batch was confirmed."""
    operator_with(client, "view_deadletter", "requeue_deadletter")
    batch_url = client.post(f"{LIST}requeue-matching/?status__exact=dead").url
    dead_letters.dead_letters_discard(ids=[letters[0].pk], by=shop)
    dead_letters.dead_letters_requeue(ids=[letters[1].pk, letters[2].pk], by=shop)
    page = " ".join(client.get(batch_url).content.decode().split())
    assert "2 of them are still dead; the other 3 were requeued or discarded since they were frozen" in page
    assert 'value="Requeue 2 dead letters"' in page
    said = messages_of(client.post(batch_url, {}))
    assert said == ["Requeueing 2 of the 5 dead letter(s) frozen, in the background; the others are left alone."]


def test_a_batch_of_one_reads_in_the_singular(client, letters, shop):
    operator_with(client, "view_deadletter", "requeue_deadletter")
    batch = RequeueBatch.objects.create(dead_letter_ids=[letters[0].pk], description="one", created_by=shop)
    page = client.get(f"{LIST}requeue-batch/{batch.pk}/").content.decode()
    assert "This <strong>1</strong> dead letter (one) was frozen at" in page
    assert 'value="Requeue 1 dead letter"' in page


def test_failures_are_grouped_by_cause(client, letters):
    operator_with(client, "view_deadletter", "requeue_deadletter")
    page = client.get(f"{LIST}by-cause/").content.decode()
    assert "<strong>5</strong>" in page
    assert "twilio-21211" in page
    assert f"fingerprint={letters[0].fingerprint}" in page
    requeue_group = f"{LIST}requeue-matching/?status__exact=dead&amp;fingerprint={letters[0].fingerprint}"
    assert f'<form method="post" action="{requeue_group}"' in page
    assert 'name="csrfmiddlewaretoken"' in page
    filtered = client.get(LIST, {"fingerprint": letters[0].fingerprint, "status__exact": "dead"})
    assert len(filtered.context["cl"].result_list) == 5


def test_fix_then_retry_from_the_admin(client, letters, published, django_capture_on_commit_callbacks):
    operator_with(client, "view_notification", "resend_notification", "requeue_deadletter")
    letter = letters[0]
    url = f"/admin/notifications/notification/{letter.notification_id}/correct-recipient/"
    bad = client.post(url, {"recipient": "not a phone", "reason": "typo", "requeue": "on"})
    assert bad.status_code == 200
    assert "not a valid phone number" in bad.content.decode()
    assert Notification.objects.get(pk=letter.notification_id).recipient == "+12025550000"

    with django_capture_on_commit_callbacks(execute=True):
        good = client.post(url, {"recipient": "+1 202 555 0199", "reason": "customer called", "requeue": "on"})
    assert good.status_code == 302
    assert messages_of(good) == ["Recipient corrected; queued to send again."]
    same = client.post(url, {"recipient": "+1 (202) 555-0199", "reason": "typo", "requeue": "on"})
    assert "+12025550199 is already its recipient; to send to it again, resend the notification instead." in (
        same.content.decode()
    )
    notification = Notification.objects.get(pk=letter.notification_id)
    assert (notification.recipient, notification.status) == ("+12025550199", "queued")
    assert notification.corrections.get().old_recipient == "+12025550000"
    assert DeadLetter.objects.get(pk=letter.pk).status == "requeued"


def test_a_correction_to_a_suppressed_recipient_says_it_was_not_sent_and_why(client, letters, shop):
    operator_with(client, "view_notification", "resend_notification", "requeue_deadletter")
    Suppression.objects.create(channel="sms", recipient="+12025550199", reason="asked us to stop", created_by=shop)
    url = f"/admin/notifications/notification/{letters[0].notification_id}/correct-recipient/"
    said = messages_of(client.post(url, {"recipient": "+12025550199", "reason": "customer called", "requeue": "on"}))
    assert len(said) == 2 and said[1] == "Recipient corrected; not sent again."
    assert said[0].startswith("its recipient is suppressed: an operator suppressed this recipient on ")
    assert DeadLetter.objects.get(pk=letters[0].pk).status == "dead"


def test_two_operators_correcting_at_once_are_not_both_told_theirs_was_used(client, letters):
    operator_with(client, "view_notification", "resend_notification")
    url = f"/admin/notifications/notification/{letters[0].notification_id}/correct-recipient/"
    form_page = client.get(url).content.decode()
    assert 'name="seen_recipient" value="+12025550000"' in form_page
    first = client.post(
        url, {"recipient": "+12025550172", "reason": "customer called", "seen_recipient": "+12025550000"}
    )
    assert first.status_code == 302
    # The second operator's form was opened before the first correction.
    second = client.post(url, {"recipient": "+12025550173", "reason": "email said", "seen_recipient": "+12025550000"})
    assert second.url == url
    assert any("was changed by someone else" in message for message in messages_of(second))
    notification = Notification.objects.get(pk=letters[0].notification_id)
    assert notification.recipient == "+12025550172"
    assert notification.corrections.count() == 1


def test_the_correct_it_page_of_a_sent_notification_says_why_instead_of_offering_a_form(client, letters):
    """A link bookmarked, or the page of a notification resent and sent since."""
    operator_with(client, "view_notification", "resend_notification")
    notification = Notification.objects.get(pk=letters[0].notification_id)
    Notification.objects.filter(pk=notification.pk).update(status="sent", sent_at=timezone.now())
    response = client.get(f"/admin/notifications/notification/{notification.pk}/correct-recipient/")
    assert response.url == f"/admin/notifications/notification/{notification.pk}/change/"
    assert messages_of(response) == [f"Notification {notification.pk} is sent; its recipient can no longer be changed."]


def test_an_action_on_rows_gone_meanwhile_says_which_were_left_out(
    client, shop, published, django_capture_on_commit_callbacks
):
    operator_with(client, "view_notification", "cancel_notification")
    with django_capture_on_commit_callbacks(execute=False):
        order = place_order(owner=shop, customer_email="")
    sms = Notification.objects.get(order=order)
    response = client.post(
        "/admin/notifications/notification/",
        {"action": "cancel_selected", "_selected_action": [sms.pk, 99999999]},
        follow=True,
    )
    said = messages_of(response)
    assert "1 notification(s) cancelled." in said
    assert any("1 selected row(s) are no longer in this list" in message and "99999999" in message for message in said)


@pytest.mark.django_db(transaction=True)  # as a request runs: the publish follows the resend's commit
def test_a_resend_with_the_broker_away_says_the_sweep_will_send_it(client, letters, monkeypatch):
    operator_with(client, "view_notification", "resend_notification", "requeue_deadletter")

    def away(messages):
        raise services.broker.BrokerUnavailable("connection refused")

    monkeypatch.setattr(services.broker, "publish_many", away)
    notification_id = letters[0].notification_id
    response = client.post(
        "/admin/notifications/notification/",
        {"action": "resend_selected", "_selected_action": [notification_id]},
        follow=True,
    )
    said = messages_of(response)
    assert not any("queued to send again" in message for message in said)
    assert any("could not be handed to the broker now; the sweep sends them" in message for message in said)
    assert Notification.objects.get(pk=notification_id).status == "pending"


@pytest.mark.django_db(transaction=True)  # as a request runs: the publish follows each chunk's commit
def test_a_requeue_with_the_broker_away_says_the_sweep_will_send_it(client, letters, monkeypatch):
    operator_with(client, "view_deadletter", "requeue_deadletter")

    def away(messages):
        raise services.broker.BrokerUnavailable("connection refused")

    monkeypatch.setattr(services.broker, "publish_many", away)
    response = client.post(
        LIST, {"action": "requeue_selected", "_selected_action": [letters[0].pk, letters[1].pk]}, follow=True
    )
    said = messages_of(response)
    assert not any("requeued." in message for message in said), said
    assert "2 requeued dead letter(s) could not be handed to the broker now; the sweep sends them once it is back." in (
        said
    )
    assert set(
        Notification.objects.filter(pk__in=[letters[0].notification_id, letters[1].notification_id]).values_list(
            "status", flat=True
        )
    ) == {"pending"}


@pytest.mark.django_db(transaction=True)
def test_a_resend_a_worker_took_at_once_to_wait_for_an_earlier_one_is_not_reported_unpublished(
    client, shop, scripted, monkeypatch
):
    """A worker can take the message before the console looks: the notification is pending again,
    waiting for its order's first SMS, which retries. It was handed to the broker all the same."""
    operator_with(client, "view_notification", "resend_notification", "requeue_deadletter")
    order = place_order(owner=shop, customer_email="")
    order_services.order_transition(order_id=order.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    first, confirmation = (Notification.objects.get(order=order, event=event) for event in ("placed", "confirmed"))
    Notification.objects.filter(pk=first.pk).update(
        status="failed", next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    Notification.objects.filter(pk=confirmation.pk).update(status="cancelled")

    def a_worker_at_once(messages):
        for message in messages:
            services.notification_send(notification_id=message.args[0])
        return [f"task-{number}" for number, _ in enumerate(messages)]

    monkeypatch.setattr(services.broker, "publish_many", a_worker_at_once)
    response = client.post(
        "/admin/notifications/notification/",
        {"action": "resend_selected", "_selected_action": [confirmation.pk]},
        follow=True,
    )
    said = messages_of(response)
    assert "1 notification(s) queued to send again." in said
    assert not any("could not be handed to the broker" in message for message in said)
    confirmation.refresh_from_db()
    assert (confirmation.status, confirmation.stale_after) == ("pending", None)


def test_sending_a_dead_notification_again_needs_the_dead_letter_permission_too(client, letters, published):
    """Resending requeues the notification's dead letter, which the console guards with requeue_deadletter."""
    operator_with(client, "view_notification", "resend_notification")
    letter = letters[0]
    response = client.post(
        "/admin/notifications/notification/",
        {"action": "resend_selected", "_selected_action": [letter.notification_id]},
        follow=True,
    )
    assert any("needs the permission notifications.requeue_deadletter" in message for message in messages_of(response))
    letter.refresh_from_db()
    assert (letter.status, letter.notification.status) == ("dead", "dead")

    url = f"/admin/notifications/notification/{letter.notification_id}/correct-recipient/"
    requeue = client.get(url).context["form"]["requeue"]
    assert (requeue.value(), requeue.field.disabled) == (False, True)  # not offered ticked, then not done
    assert "needs the permission notifications.requeue_deadletter" in requeue.help_text
    seen = letter.notification.recipient
    response = client.post(
        url, {"recipient": "+12025550199", "seen_recipient": seen, "reason": "typo", "requeue": "on"}, follow=True
    )
    assert messages_of(response) == ["Recipient corrected; not sent again."]
    letter.refresh_from_db()
    assert (letter.status, letter.notification.status, letter.notification.recipient) == (
        "dead",
        "dead",
        "+12025550199",
    )


def test_a_correction_for_the_order_says_what_it_changed_and_what_stays_unsent(client, shop, published, scripted):
    operator_with(client, "view_notification", "resend_notification", "orders.change_order")
    order = place_order(owner=shop, customer_email="")
    placed = send_into_dead_letter(order).notification
    for status in ("confirmed", "processing"):
        order_services.order_transition(order_id=order.pk, to_status=status, by=shop, source=ChangeSource.API)
    confirmed, processing = (
        Notification.objects.get(order=order, event=event) for event in ("confirmed", "processing")
    )
    services.notification_cancel(notification_id=processing.pk, by=None)

    url = f"/admin/notifications/notification/{placed.pk}/correct-recipient/"
    form = {"recipient": "+1 202 555 0147", "reason": "customer called", "for_the_order": "on"}
    said = messages_of(client.post(url, form, follow=True))
    assert said == [
        f"Recipient corrected, with the order's phone and the order's notifications {confirmed.pk}, {processing.pk}; "
        "not sent again.",
        f"Sent to the new recipient only once resent: notification {processing.pk} (cancelled).",
    ]
    assert set(Notification.objects.filter(order=order).values_list("recipient", flat=True)) == {"+12025550147"}

    # Without the order, only the notification is corrected, and that is all that is said.
    said = messages_of(client.post(url, {**form, "recipient": "+1 202 555 0148", "for_the_order": ""}, follow=True))
    assert said == ["Recipient corrected; not sent again."]


def test_a_correction_for_the_order_after_one_of_the_notification_alone_corrects_the_order(
    client, shop, published, scripted
):
    """First corrected alone (by someone who may not change orders), then with the order: the
    order still holds the number the notification was corrected from, and is corrected."""
    operator_with(client, "view_notification", "resend_notification", "orders.change_order")
    order = place_order(owner=shop, customer_email="")
    placed = send_into_dead_letter(order).notification
    url = f"/admin/notifications/notification/{placed.pk}/correct-recipient/"
    client.post(url, {"recipient": "+1 202 555 0147", "reason": "first try", "for_the_order": ""}, follow=True)
    said = messages_of(client.post(url, {"recipient": "+1 202 555 0148", "reason": "right one", "for_the_order": "on"}))
    assert said == ["Recipient corrected, with the order's phone; not sent again."]
    order.refresh_from_db()
    assert order.customer_phone == "+12025550148"


def test_the_order_contact_set_otherwise_since_is_left_and_said_so(client, shop, published, scripted):
    operator_with(client, "view_notification", "resend_notification", "orders.change_order")
    order = place_order(owner=shop, customer_email="")
    placed = send_into_dead_letter(order).notification
    Order.objects.filter(pk=order.pk).update(customer_phone="+12025550190")  # changed on purpose elsewhere
    url = f"/admin/notifications/notification/{placed.pk}/correct-recipient/"
    said = messages_of(client.post(url, {"recipient": "+1 202 555 0148", "reason": "called", "for_the_order": "on"}))
    assert said == [
        "Recipient corrected; not sent again.",
        "The order's phone was left as it is (+12***90): it is not one this notification went to, so someone "
        "changed it since. Its next updates go there; correct the order if that is wrong.",
    ]
    order.refresh_from_db()
    assert order.customer_phone == "+12025550190"


def test_the_order_contact_is_corrected_only_by_those_who_may_change_orders(client, letters):
    operator_with(client, "view_notification", "resend_notification")
    notification = letters[0].notification
    url = f"/admin/notifications/notification/{notification.pk}/correct-recipient/"
    offered = client.get(url).context["form"]["for_the_order"]
    assert (offered.value(), offered.field.disabled) == (False, True)
    assert "Can change order" in offered.help_text

    form = {"recipient": "+1 202 555 0147", "reason": "customer called", "for_the_order": "on"}  # forged
    assert messages_of(client.post(url, form, follow=True)) == ["Recipient corrected; not sent again."]
    notification.refresh_from_db()
    assert notification.recipient == "+12025550147"
    assert notification.order.customer_phone != "+12025550147"


def test_correcting_needs_the_permission(client, letters):
    operator_with(client, "view_notification")
    url = f"/admin/notifications/notification/{letters[0].notification_id}/correct-recipient/"
    assert client.get(url).status_code == 403


def test_notification_actions_resend_and_cancel(client, shop, published, django_capture_on_commit_callbacks):
    user = operator_with(client, "view_notification", "resend_notification", "cancel_notification")
    with django_capture_on_commit_callbacks(execute=False):
        order = place_order(owner=shop, customer_email="")
    sms = Notification.objects.get(order=order)
    response = client.post(
        "/admin/notifications/notification/", {"action": "cancel_selected", "_selected_action": [sms.pk]}, follow=True
    )
    assert "1 notification(s) cancelled." in messages_of(response)
    response = client.post(
        "/admin/notifications/notification/", {"action": "resend_selected", "_selected_action": [sms.pk]}, follow=True
    )
    assert "1 notification(s) queued to send again." in messages_of(response)
    refused = client.post(
        "/admin/notifications/notification/", {"action": "resend_selected", "_selected_action": [sms.pk]}, follow=True
    )
    assert any("already on its way" in message for message in messages_of(refused))
    history = LogEntry.objects.filter(object_id=str(sms.pk), content_type__model="notification").order_by("pk")
    assert [(entry.user, entry.change_message) for entry in history] == [(user, "Cancelled"), (user, "Resent")]
    assert "Cancelled" in client.get(f"/admin/notifications/notification/{sms.pk}/history/").content.decode()


def test_a_notification_sent_since_the_list_was_loaded_is_not_resent_without_saying_when(client, letters):
    """Two operators resend the same dead notification: the second is shown that it went."""
    operator_with(client, "view_notification", "resend_notification", "requeue_deadletter")
    notification = Notification.objects.get(pk=letters[0].notification_id)
    sent_at = timezone.now()
    # The first operator's resend, sent by a worker since.
    Notification.objects.filter(pk=notification.pk).update(status="sent", sent_at=sent_at, provider_message_id="SM1")
    resend = {"action": "resend_selected", "_selected_action": [notification.pk]}
    asked = client.post("/admin/notifications/notification/", resend)
    page = asked.content.decode()
    assert asked.status_code == 200
    assert "it was sent at" in page and "SM1" in page
    assert f'name="sent_at_seen" value="{sent_at.isoformat()}"' in page
    assert Notification.objects.get(pk=notification.pk).status == "sent"

    # Confirmed on that page, but sent once more meanwhile: refused, not sent a third time.
    Notification.objects.filter(pk=notification.pk).update(sent_at=sent_at + timedelta(seconds=5))
    refused = client.post("/admin/notifications/notification/", {**resend, "sent_at_seen": sent_at.isoformat()})
    assert any("since you looked at it; not sent again" in message for message in messages_of(refused))
    assert Notification.objects.get(pk=notification.pk).status == "sent"

    confirmed = client.post(
        "/admin/notifications/notification/",
        {**resend, "sent_at_seen": (sent_at + timedelta(seconds=5)).isoformat()},
    )
    assert "1 notification(s) queued to send again." in messages_of(confirmed)
    assert Notification.objects.get(pk=notification.pk).status == "pending"


def test_a_resend_of_one_seen_unsent_is_refused_once_a_worker_sent_it(shop, staff, published):
    order = place_order(owner=shop, customer_email="")
    sms = Notification.objects.get(order=order)
    Notification.objects.filter(pk=sms.pk).update(status="failed")
    Notification.objects.filter(pk=sms.pk).update(status="sent", sent_at=timezone.now())  # the retry went
    with pytest.raises(services.Conflict, match="since you looked at it"):
        services.notification_resend(notification_id=sms.pk, by=staff, sent_at_seen=None)


def test_a_notification_whose_dead_letter_was_discarded_says_so_and_a_resend_warns(client, letters, shop):
    operator_with(client, "view_notification", "resend_notification", "requeue_deadletter")
    discarded, other = letters[0], letters[1]
    dead_letters.dead_letters_discard(ids=[discarded.pk], by=shop)
    page = client.get("/admin/notifications/notification/").content.decode()
    assert page.count("dead: its dead letter was discarded (dealt with, not to be sent)") == 1
    one = client.get(f"/admin/notifications/notification/{discarded.notification_id}/change/").content.decode()
    assert "dead: its dead letter was discarded" in one
    said = messages_of(
        client.post(
            "/admin/notifications/notification/",
            {"action": "resend_selected", "_selected_action": [discarded.notification_id, other.notification_id]},
        )
    )
    assert "2 notification(s) queued to send again." in said
    assert (
        f"The dead letter of notification(s) {discarded.notification_id} had been discarded (dealt with, not to be "
        "sent); they are sent again all the same." in said
    )


def test_cancelling_a_dead_notification_says_what_to_do_instead(client, letters):
    operator_with(client, "view_notification", "cancel_notification")
    dead = letters[0].notification_id
    response = client.post(
        "/admin/notifications/notification/", {"action": "cancel_selected", "_selected_action": [dead]}, follow=True
    )
    assert messages_of(response) == [
        f"Notification {dead} is dead; only one still to be sent (pending, queued or failed) can be cancelled; "
        "a dead one stays as it is, or discard its dead letter."
    ]


def test_notification_actions_need_their_permissions(client, shop, published):
    operator_with(client, "view_notification")
    order = place_order(owner=shop, customer_email="")
    page = client.get("/admin/notifications/notification/").content.decode()
    assert "resend_selected" not in page and "cancel_selected" not in page
    client.post("/admin/notifications/notification/", {"action": "cancel_selected", "_selected_action": [order.pk]})
    assert Notification.objects.get(order=order).status != "cancelled"


def test_task_results_and_schedules_are_in_the_admin(client):
    UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(UserFactory(username="root"))
    assert client.get("/admin/django_celery_results/taskresult/").status_code == 200
    page = client.get("/admin/django_celery_beat/periodictask/").content.decode()
    assert "retry-failed-notifications" in page and "cleanup-old-notifications" in page


def test_opening_the_requeue_matching_address_freezes_nothing(client, letters):
    operator_with(client, "view_deadletter", "requeue_deadletter")
    response = client.get(f"{LIST}requeue-matching/", {"queue__exact": "sms"})
    assert response.url == f"{LIST}?queue__exact=sms"
    assert not RequeueBatch.objects.exists()


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("q=%00", "the search is not usable"),  # the list would drop the search and match everything
        # PostgreSQL refuses a NUL in text; SQLite takes it, and it matches nothing.
        ("status__exact=%00", "these filters cannot be applied" if connection.vendor == "postgresql" else "nothing to"),
        ("message__regex=(", "these filters cannot be applied"),
        ("last_failed_at__year=99999999999999", "these filters cannot be applied"),
        ("last_failed_at__year=10000", "these filters cannot be applied"),
        ("last_failed_at__gte=x", "these filters cannot be applied"),
        ("queue__exact=nowhere", "nothing to requeue"),
        ("bogus=1", "these filters cannot be applied"),
    ],
)
def test_requeue_matching_freezes_nothing_for_filters_it_cannot_apply(client, letters, query, says):
    operator_with(client, "view_deadletter", "requeue_deadletter")
    response = client.post(f"{LIST}requeue-matching/?{query}")
    assert response.status_code == 302
    assert not RequeueBatch.objects.exists()
    assert any(says in message for message in messages_of(response)), messages_of(response)
    assert not any("['" in message for message in messages_of(response))  # words, not a Python list
    assert not any("Choices are" in message for message in messages_of(response))  # nor every field there is


def test_a_batch_describes_a_search_as_it_was_typed_with_a_phone_masked(client, letters):
    operator_with(client, "view_deadletter", "requeue_deadletter")
    client.post(f"{LIST}requeue-matching/?q=%2B12025550003&queue__exact=sms&o=-3&p=2")
    batch = RequeueBatch.objects.get()
    assert batch.description == "matching q=+12***03, queue__exact=sms"  # the order and page choose no rows
    assert batch.size == 1


def test_an_awaiting_batch_links_to_where_it_is_confirmed_or_cancelled(client, letters):
    operator_with(client, "view_deadletter", "requeue_deadletter", "view_requeuebatch")
    client.post(f"{LIST}requeue-matching/?queue__exact=sms")
    batch = RequeueBatch.objects.get()
    confirm = f'href="{LIST}requeue-batch/{batch.pk}/"'
    assert confirm in client.get("/admin/notifications/requeuebatch/").content.decode()
    assert confirm in client.get(f"/admin/notifications/requeuebatch/{batch.pk}/change/").content.decode()
    dead_letters.requeue_batch_cancel(batch_id=batch.pk, by=None)
    assert confirm not in client.get("/admin/notifications/requeuebatch/").content.decode()


def test_a_list_that_dropped_its_filters_says_so_and_requeues_nothing_from_them(client, letters):
    """Django sends a list it cannot filter to ?e=1 with every row: "all matching" was all."""
    operator_with(client, "view_deadletter", "requeue_deadletter")
    listed = client.get(LIST, {"last_failed_at__gte": "garbage"}, follow=True)
    assert listed.redirect_chain[-1][0].endswith("?e=1")
    assert "could not apply the filters it was given" in " ".join(messages_of(listed))
    response = client.post(f"{LIST}requeue-matching/?e=1", follow=True)
    assert not RequeueBatch.objects.exists()
    assert any(message.startswith("Nothing was frozen: the list could not apply") for message in messages_of(response))


def test_an_action_posted_by_staff_who_may_not_see_the_list_is_forbidden(client, letters):
    operator_with(client, "view_notification")
    response = client.post(LIST, {"action": "discard_selected", "_selected_action": [letters[0].pk]})
    assert response.status_code == 403
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"dead"}


@pytest.mark.parametrize("action", ["resend_selected", "cancel_selected"])
def test_an_action_on_more_notifications_than_a_request_can_take_changes_none(client, letters, monkeypatch, action):
    monkeypatch.setattr("orderflow.admin.ROW_BY_ROW_ACTION_LIMIT", 2)
    operator_with(client, "view_notification", "resend_notification", "cancel_notification", "requeue_deadletter")
    selected = [letter.notification_id for letter in letters[:3]]
    before = list(Notification.objects.filter(pk__in=selected).order_by("pk").values_list("status", flat=True))
    response = client.post("/admin/notifications/notification/", {"action": action, "_selected_action": selected})
    said = messages_of(response)
    assert said == [
        "3 notifications are selected; this action takes at most 2 at a time. "
        "Nothing was changed: narrow the list with its filters, or select fewer."
    ]
    assert list(Notification.objects.filter(pk__in=selected).order_by("pk").values_list("status", flat=True)) == before
