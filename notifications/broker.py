"""Publishing to the broker, and reading how many messages wait in a queue.

Publishing must never hold a request hostage: with the broker down a publish gives up
within about two seconds and the caller leaves the row for the sweep.
"""

import logging
import time
from dataclasses import dataclass

from amqp.exceptions import ConnectionError as AMQPConnectionError
from kombu.exceptions import BatchPublishError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orderflow.celery import app

logger = logging.getLogger(__name__)

# A publish tries once more after a short pause, then gives up (the sweep publishes later).
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.2}
# The clients' own connection errors too: a pooled connection the broker dropped raises
# redis-py's (or py-amqp's), which kombu passes on unwrapped outside a publish.
BROKER_ERRORS = (
    OperationalError,
    ConnectionError,
    OSError,
    RedisConnectionError,
    RedisTimeoutError,
    AMQPConnectionError,
)


class BrokerUnavailable(Exception):
    pass


@dataclass(frozen=True)
class Message:
    task_name: str
    args: list
    kwargs: dict | None = None
    queue: str | None = None  # None: the task's route (CELERY_TASK_ROUTES)
    countdown: float | None = None  # seconds before a worker runs it


def publish(
    task_name: str, *, args: list, kwargs: dict | None = None, queue: str | None = None, countdown: float | None = None
) -> str:
    """Send one task message; raise BrokerUnavailable if the broker cannot take it."""
    return publish_many([Message(task_name, args, kwargs, queue, countdown)])[0]


def publish_many(messages: list[Message]) -> list[str]:
    """Send the messages and return their task ids; raise BrokerUnavailable if any may not have
    reached the broker, and then count none of them as sent.

    On Redis they go out together, in one round trip (kombu's publish batch); on RabbitMQ one by
    one. A batch that failed on its way may have partly arrived; it is sent once more after a
    short pause, and a message that arrives twice finds its notification already claimed.
    """
    try:
        return _publish_batch(messages)
    except BatchPublishError as error:  # the batch's one round trip failed; kombu does not retry it
        logger.warning("publishing %d message(s) failed, trying once more: %s", len(messages), error.__cause__)
    except BROKER_ERRORS as error:  # already tried again by kombu (PUBLISH_RETRY_POLICY)
        raise BrokerUnavailable(f"{error.__class__.__name__}: {error}") from error
    time.sleep(PUBLISH_RETRY_POLICY["interval_start"])
    try:
        return _publish_batch(messages)
    except (BatchPublishError, *BROKER_ERRORS) as error:
        cause = error.__cause__ or error
        raise BrokerUnavailable(f"{cause.__class__.__name__}: {cause}") from error


def _publish_batch(messages: list[Message]) -> list[str]:
    with app.producer_or_acquire() as producer:
        batching = producer.supports_batch_publish
        try:
            with producer.batch():
                return [
                    app.send_task(
                        message.task_name,
                        args=message.args,
                        kwargs=message.kwargs,
                        queue=message.queue,
                        countdown=message.countdown,
                        producer=producer,
                        # In a batch, kombu's reconnect-and-retry would swap the channel under
                        # it; the whole batch is tried again instead (publish_many).
                        retry=not batching,
                        retry_policy=PUBLISH_RETRY_POLICY,
                    ).id
                    for message in messages
                ]
        except BROKER_ERRORS as error:
            if batching:  # e.g. declaring a queue on a new connection
                raise BatchPublishError(f"{error.__class__.__name__}: {error}") from error
            raise


def queue_depth(queue: str) -> int:
    """Messages ready in `queue` (not counting those a worker has reserved)."""
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            channel = connection.default_channel
            try:
                return channel.queue_declare(queue=queue, passive=True).message_count
            except connection.channel_errors:
                return 0  # never declared: nothing was ever published to it
    except BROKER_ERRORS as error:
        raise BrokerUnavailable(f"{error.__class__.__name__}: {error}") from error
