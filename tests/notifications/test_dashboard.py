import re

import pytest
from django.contrib.auth.models import Permission

from notifications import services
from notifications.models import Notification
from tests.factories import UserFactory, place_order
from tests.notifications.conftest import send_into_dead_letter

pytestmark = pytest.mark.django_db

URL = "/admin/dashboard/"


def operator(username="ops"):
    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="notifications", codename="view_notification")
    )
    return user


def test_dashboard_shows_queues_workers_dead_letters_and_the_last_day(client, shop, published, scripted):
    user = operator()
    user.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(user)
    order = place_order(owner=shop)
    send_into_dead_letter(order)
    email = Notification.objects.get(order=order, channel="email")
    Notification.objects.filter(pk=email.pk).update(status="queued")
    services.notification_send(notification_id=email.pk)

    response = client.get(URL)
    page = response.content.decode()
    assert response.status_code == 200
    for queue in ("sms", "email", "notifications", "default"):
        assert f"<td>{queue}</td>" in page
    assert "No worker answered." in page  # none runs in this test
    assert re.search(r'status__exact=dead">1</a>', page)
    assert "sms: 0 sent, 1 failed attempt</h3>" in page
    assert "email: 1 sent, 0 failed attempts</h3>" in page
    assert page.count('aria-label="sms sends per hour"') == page.count('aria-label="email sends per hour"') == 1


def test_dashboard_needs_no_internet(client):
    client.force_login(operator())
    page = client.get(URL).content.decode()
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_dashboard_is_for_staff_only(client, shop):
    assert client.get(URL).status_code == 302  # to the admin login
    client.force_login(shop)
    assert client.get(URL).status_code == 302


def test_dashboard_is_for_staff_who_may_view_notifications(client):
    client.force_login(UserFactory(username="clerk", is_staff=True))
    assert client.get(URL).status_code == 403
    assert URL not in client.get("/admin/").content.decode()
    client.force_login(operator())
    assert client.get(URL).status_code == 200
    assert URL in client.get("/admin/").content.decode()


def test_the_admin_index_links_to_the_dashboard(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    assert URL in client.get("/admin/").content.decode()


def test_the_dead_letter_count_links_to_them_only_for_those_who_may_open_them(client):
    dead_letters = "/admin/notifications/deadletter/?status__exact=dead"
    client.force_login(operator())
    assert dead_letters not in client.get(URL).content.decode()
    reader = operator("reader")
    reader.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(reader)
    assert dead_letters in client.get(URL).content.decode()
    assert client.get(dead_letters).status_code == 200
