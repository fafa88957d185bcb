"""The sweep and the cleanup, against the test broker (Redis) so queue depths are real."""

import contextlib
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from notifications import broker, services, sweeps
from notifications.models import DeadLetter, Notification
from orderflow.celery import app
from tests.factories import place_order
from tests.notifications.conftest import BROKERS, ROOT, point_app_at
from tests.processes import free_port, stop_group
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(hours=1)


def purge_channel_queues():
    with app.connection_for_write() as connection:
        for queue in ("sms", "email"):
            with contextlib.suppress(*connection.channel_errors):
                connection.default_channel.queue_purge(queue)


@pytest.fixture(autouse=True)
def empty_queues():
    purge_channel_queues()
    yield
    purge_channel_queues()


def depths() -> dict:
    return {queue: broker.queue_depth(queue) for queue in ("sms", "email")}


def place_unpublished(owner, count, monkeypatch, capture):
    """Orders whose on-commit publish met a broker that was down."""
    with capture(execute=False):
        orders = [place_order(owner=owner) for _ in range(count)]

    def down(messages):
        raise broker.BrokerUnavailable("down")

    monkeypatch.setattr(services.broker, "publish_many", down)
    for order in orders:
        services.notifications_publish(notifications=[(row.pk, row.channel) for row in order.notifications.all()])
    monkeypatch.undo()
    return orders


def test_rows_the_broker_missed_at_commit_are_published_once(shop, monkeypatch, django_capture_on_commit_callbacks):
    place_unpublished(shop, 3, monkeypatch, django_capture_on_commit_callbacks)
    assert set(Notification.objects.values_list("status", flat=True)) == {"pending"}

    assert sweeps.notifications_sweep() == {
        "unpublished": 6,
        "abandoned": 0,
        "retry_lost": 0,
        "wait_over": 0,
        "message_lost": 0,
        "requeue_batches_resumed": 0,
    }
    assert depths() == {"sms": 3, "email": 3}
    assert set(Notification.objects.values_list("status", flat=True)) == {"queued"}

    assert sweeps.notifications_sweep() == {
        "unpublished": 0,
        "abandoned": 0,
        "retry_lost": 0,
        "wait_over": 0,
        "message_lost": 0,
        "requeue_batches_resumed": 0,
    }
    assert depths() == {"sms": 3, "email": 3}


def test_pending_rows_still_within_their_grace_are_left_alone(shop, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        place_order(owner=shop)  # committed, its on-commit publish not yet run
    assert sweeps.notifications_sweep()["unpublished"] == 0


def test_a_backlog_waiting_behind_the_rate_limit_is_not_published_again(shop, transactional_db):
    for _ in range(5):
        place_order(owner=shop)
    Notification.objects.update(queued_at=timezone.now() - LONG_AGO)  # waiting for an hour
    assert depths() == {"sms": 5, "email": 5}
    assert sweeps.notifications_sweep()["message_lost"] == 0
    assert depths() == {"sms": 5, "email": 5}


def test_queued_rows_whose_messages_were_lost_are_published_again(shop, transactional_db):
    lost = [place_order(owner=shop, customer_email="") for _ in range(4)]
    Notification.objects.update(queued_at=timezone.now() - LONG_AGO)
    purge_channel_queues()  # the broker restarted and lost its messages
    waiting = [place_order(owner=shop, customer_email="") for _ in range(2)]  # published after it came back
    assert depths()["sms"] == 2

    assert sweeps.notifications_sweep()["message_lost"] == 4
    assert depths()["sms"] == 6
    republished = Notification.objects.filter(queued_at__gt=timezone.now() - timedelta(minutes=1))
    assert {row.order_id for row in republished} == {order.pk for order in lost + waiting}

    assert sweeps.notifications_sweep()["message_lost"] == 0
    assert depths()["sms"] == 6


def test_abandoned_sends_are_taken_over_after_their_lease(shop, transactional_db):
    first, second = place_order(owner=shop, customer_email=""), place_order(owner=shop, customer_email="")
    purge_channel_queues()
    now = timezone.now()
    Notification.objects.filter(order=first).update(status="sending", stale_after=now - timedelta(seconds=1))
    Notification.objects.filter(order=second).update(status="sending", stale_after=now + timedelta(minutes=5))
    assert sweeps.notifications_sweep()["abandoned"] == 1
    assert depths()["sms"] == 1
    assert Notification.objects.get(order=second).status == "sending"


def test_only_retries_whose_message_is_overdue_are_published(shop, settings, transactional_db):
    overdue, due = place_order(owner=shop, customer_email=""), place_order(owner=shop, customer_email="")
    purge_channel_queues()
    now = timezone.now()
    stuck = timedelta(seconds=settings.NOTIFICATIONS_STUCK_AFTER)
    Notification.objects.filter(order=overdue).update(status="failed", next_attempt_at=now - stuck - timedelta(1))
    Notification.objects.filter(order=due).update(status="failed", next_attempt_at=now - timedelta(seconds=10))
    assert sweeps.notifications_sweep()["retry_lost"] == 1
    assert Notification.objects.get(order=due).status == "failed"


def test_sweep_with_the_broker_down_changes_nothing(shop, monkeypatch, settings, django_capture_on_commit_callbacks):
    place_unpublished(shop, 1, monkeypatch, django_capture_on_commit_callbacks)
    point_app_at("redis://127.0.0.1:1/0")
    try:
        assert sweeps.notifications_sweep() == {"skipped": "broker unavailable"}
    finally:
        point_app_at(settings.CELERY_BROKER_URL)
    assert set(Notification.objects.values_list("status", flat=True)) == {"pending"}


# --- cleanup --------------------------------------------------------------------------------


def age(queryset, *, days: int):
    queryset.update(updated_at=timezone.now() - timedelta(days=days))


def test_cleanup_removes_old_finished_rows_and_keeps_what_is_unresolved(shop, settings, transactional_db):
    settings.NOTIFICATIONS_RETENTION_DAYS = 7
    old_sent, recent_sent, old_dead, old_queued = (place_order(owner=shop, customer_email="") for _ in range(4))
    Notification.objects.filter(order=old_sent).update(status="sent")
    Notification.objects.filter(order=recent_sent).update(status="sent")
    dead = Notification.objects.get(order=old_dead)
    Notification.objects.filter(pk=dead.pk).update(status="dead")
    now = timezone.now()
    DeadLetter.objects.create(
        notification=dead,
        task_name=services.CHANNEL_TASKS["sms"],
        args=[dead.pk],
        queue="sms",
        exception_type="X",
        message="x",
        attempts=1,
        first_failed_at=now,
        last_failed_at=now,
    )
    age(Notification.objects.exclude(order=recent_sent), days=8)
    TaskResult.objects.create(task_id="old", status="SUCCESS")
    TaskResult.objects.create(task_id="new", status="SUCCESS")
    TaskResult.objects.filter(task_id="old").update(date_done=now - timedelta(days=8))

    assert sweeps.notifications_cleanup() == {"dead_letters": 0, "notifications": 1, "task_results": 1}
    remaining = set(Notification.objects.values_list("order_id", flat=True))
    assert remaining == {recent_sent.pk, old_dead.pk, old_queued.pk}
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["new"]


def test_cleanup_removes_resolved_dead_letters_past_their_age(shop, settings):
    settings.NOTIFICATIONS_DEAD_LETTER_RETENTION_DAYS = 30
    now = timezone.now()
    common = {"task_name": "t", "queue": "sms", "exception_type": "X", "message": "x", "attempts": 1}
    common.update(first_failed_at=now, last_failed_at=now)
    DeadLetter.objects.create(status="discarded", resolved_at=now - timedelta(days=31), **common)
    DeadLetter.objects.create(status="requeued", resolved_at=now - timedelta(days=31), **common)
    DeadLetter.objects.create(status="discarded", resolved_at=now - timedelta(days=2), **common)
    DeadLetter.objects.create(status="dead", **common)
    assert sweeps.notifications_cleanup()["dead_letters"] == 2
    assert sorted(DeadLetter.objects.values_list("status", flat=True)) == ["dead", "discarded"]


def start_beat(worker_env, tmp_path, broker_url: str) -> subprocess.Popen:
    """`celery -A orderflow beat` as deployed, on the database scheduler (orderflow/beat.py),
    logging to tmp_path / "beat.log"."""
    command = [sys.executable, "-m", "celery", "-A", "orderflow", "beat", "--loglevel", "debug"]
    with (tmp_path / "beat.log").open("w") as output:
        return subprocess.Popen(
            [*command, "--schedule", str(tmp_path / "schedule")],
            cwd=ROOT,
            env={**worker_env, "CELERY_BROKER_URL": broker_url},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.integration
def test_beat_reads_its_schedules_from_the_database_and_ticks(worker_env, tmp_path):
    log = tmp_path / "beat.log"
    beat = start_beat(worker_env, tmp_path, BROKERS["redis"])
    try:
        wait_until(lambda: "beat: Waking up in" in log.read_text(), timeout=30, what="beat's first tick")
        assert beat.poll() is None, log.read_text()
    finally:
        stop_group(beat, timeout=20)
    text = log.read_text()
    assert "DatabaseScheduler: initial read" in text
    assert "ERROR" not in text and "CRITICAL" not in text


@pytest.mark.integration
def test_beat_says_at_start_that_it_cannot_reach_the_broker_and_runs_on(worker_env, tmp_path):
    """A wrong CELERY_BROKER_URL shows at start, not when the first task is due (up to 5 minutes)."""
    log = tmp_path / "beat.log"
    beat = start_beat(worker_env, tmp_path, f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    try:
        said = wait_until(
            lambda: [line for line in log.read_text().splitlines() if "CELERY_BROKER_URL" in line],
            timeout=30,
            what="beat to say it cannot reach the broker",
        )
        assert beat.poll() is None, log.read_text()  # it waits for the broker, as workers do
    finally:
        stop_group(beat, timeout=20)
    [line] = said
    assert " ERROR orderflow.beat celery beat: CELERY_BROKER_URL: cannot connect to redis://:***@127.0.0.1:" in line
    assert "Connection refused; due tasks are sent once it answers" in line
    assert "hunter2" not in log.read_text()
