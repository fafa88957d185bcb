"""Publishing: several messages in one batch, on each broker, and what a failed batch leaves."""

import contextlib
import time

import pytest
from django.conf import settings
from kombu.exceptions import BatchPublishError
from redis.connection import AbstractConnection

from notifications import broker, selectors
from orderflow.celery import app
from tests.notifications.conftest import BROKERS, point_app_at, purge
from tests.notifications.servers import RedisServer

SMS_TASK = "notifications.tasks.send_sms_notification"
EMAIL_TASK = "notifications.tasks.send_email_notification"


@pytest.fixture
def pointed_at():
    """Point the app at a broker for one test; afterwards back at the suite's."""
    used = []

    def point(url: str) -> str:
        used.append(url)
        purge(url)
        point_app_at(url)
        return url

    yield point
    point_app_at(settings.CELERY_BROKER_URL)
    for url in used:
        with contextlib.suppress(*broker.BROKER_ERRORS):
            purge(url)


def messages(count: int) -> list[broker.Message]:
    return [broker.Message(SMS_TASK if number % 2 == 0 else EMAIL_TASK, [number]) for number in range(count)]


def waiting(url: str, queue: str) -> list[int]:
    """The notification ids of the messages waiting in `queue`, oldest first."""
    ids = []
    with (
        app.connection_for_read(url) as connection,
        connection.SimpleQueue(queue) as simple,
        contextlib.suppress(simple.Empty),
    ):
        while True:
            message = simple.get(timeout=1)
            ids.append(message.payload[0][0])  # Celery's protocol 2: (args, kwargs, embed)
            message.ack()
    return ids


@pytest.mark.parametrize("name", BROKERS)
def test_every_message_of_a_batch_reaches_its_queue_once_and_in_order(pointed_at, name):
    url = pointed_at(BROKERS[name])
    task_ids = broker.publish_many(messages(5))
    assert len(set(task_ids)) == 5
    assert waiting(url, "sms") == [0, 2, 4]
    assert waiting(url, "email") == [1, 3]


def test_a_batch_goes_to_redis_in_one_write(pointed_at, monkeypatch):
    url = pointed_at(BROKERS["redis"])
    broker.publish_many(messages(2))  # connects and declares the queues: not part of a batch's cost
    writes = []
    send = AbstractConnection.send_packed_command

    def counted(connection, command, *args, **kwargs):
        writes.append(command)
        return send(connection, command, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    broker.publish_many(messages(10))
    assert len(writes) == 1
    monkeypatch.undo()
    assert len(waiting(url, "sms")) == 6 and len(waiting(url, "email")) == 6


def test_a_batch_that_failed_on_its_way_is_sent_once_more(monkeypatch, caplog):
    calls = []

    def fails_once(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise BatchPublishError("Redis publish batch failed; delivery is uncertain") from ConnectionError("reset")
        return [f"id-{number}" for number in range(len(batch))]

    monkeypatch.setattr(broker, "_publish_batch", fails_once)
    assert broker.publish_many(messages(2)) == ["id-0", "id-1"]
    assert len(calls) == 2 and calls[1] == calls[0]
    assert "trying once more: reset" in caplog.text


def test_a_broker_that_went_away_is_reported_within_seconds_and_used_again_when_back(pointed_at):
    server = RedisServer().start()
    try:
        url = pointed_at(server.url())
        broker.publish_many(messages(2))  # the pooled connection now exists
        server.stop()
        started = time.monotonic()
        with pytest.raises(broker.BrokerUnavailable, match="Connection"):
            broker.publish_many(messages(2))
        assert time.monotonic() - started < 2  # "within a second or two": not kombu's 2 s pauses
        server.start()  # the same port, empty
        broker.publish_many(messages(3))
        assert waiting(url, "sms") == [0, 2]
        assert waiting(url, "email") == [1]
    finally:
        server.stop()


def test_reads_of_a_broker_that_went_away_after_it_was_used_answer_as_for_one_that_is_down(pointed_at):
    """The dashboard asks the workers and the queues on a pooled connection; one the broker
    dropped raised redis-py's own ConnectionError, and the page answered 500."""
    server = RedisServer().start()
    try:
        pointed_at(server.url())
        assert selectors.workers_seen(timeout=0.2) == []  # the pooled connections now exist
        assert broker.queue_depth("sms") == 0
        server.stop()
        assert selectors.workers_seen(timeout=0.2) == []
        with pytest.raises(broker.BrokerUnavailable):
            broker.queue_depth("sms")
    finally:
        server.stop()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "amqp://guest:guest@127.0.0.1:1//"])  # nothing listens
def test_a_broker_that_refuses_connections_is_reported_within_a_second_or_two(url):
    point_app_at(url)
    try:
        started = time.monotonic()
        with pytest.raises(broker.BrokerUnavailable, match="Connection refused"):
            broker.publish_many(messages(1))
        assert time.monotonic() - started < 2
    finally:
        point_app_at(settings.CELERY_BROKER_URL)
