import threading

import pytest

from notifications import services
from notifications.models import Notification
from notifications.publisher import BackgroundPublisher
from tests.factories import place_order


def test_jobs_are_published_in_order_off_the_callers_thread():
    seen = []
    publisher = BackgroundPublisher(lambda jobs: seen.append((jobs, threading.current_thread().name)))
    publisher.submit(["a"])
    publisher.submit(["b"])
    assert publisher.flush()
    assert seen == [(["a"], "notification-publisher"), (["b"], "notification-publisher")]


def test_a_failing_publish_does_not_stop_the_thread():
    seen = []

    def publish(jobs):
        if jobs == ["boom"]:
            raise RuntimeError("broker exploded")
        seen.append(jobs)

    publisher = BackgroundPublisher(publish)
    publisher.submit(["boom"])
    publisher.submit(["ok"])
    assert publisher.flush()
    assert seen == [["ok"]]


@pytest.mark.django_db(transaction=True)
def test_an_order_is_published_in_the_background_and_pending_if_the_broker_is_down(
    shop, settings, monkeypatch, published
):
    settings.NOTIFICATIONS_PUBLISH_IN_BACKGROUND = True
    order = place_order(owner=shop)
    assert services.background_publisher.flush()
    assert sorted(args for _, args, _ in published) == sorted([[row.pk] for row in order.notifications.all()])
    assert set(order.notifications.values_list("status", flat=True)) == {"queued"}

    def down(task, *, args, **options):
        raise services.broker.BrokerUnavailable("down")

    monkeypatch.setattr(services.broker, "publish", down)
    second = place_order(owner=shop)
    assert services.background_publisher.flush()
    assert set(Notification.objects.filter(order=second).values_list("status", flat=True)) == {"pending"}
