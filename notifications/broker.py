"""Publishing to the broker, and reading how many messages wait in a queue.

Publishing must never hold a request hostage: with the broker down a publish gives up
within about two seconds and the caller leaves the row for the sweep.
"""

import logging

from kombu.exceptions import OperationalError

from orderflow.celery import app

logger = logging.getLogger(__name__)

# A publish tries once more after a short pause, then gives up (the sweep publishes later).
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.2}
BROKER_ERRORS = (OperationalError, ConnectionError, OSError)


class BrokerUnavailable(Exception):
    pass


def producer():
    """One producer for several publishes in a row, instead of one from the pool each time."""
    return app.producer_or_acquire()


def publish(task_name: str, *, args: list, kwargs: dict | None = None, queue: str | None = None, producer=None) -> str:
    """Send one task message; raise BrokerUnavailable if the broker cannot take it."""
    try:
        result = app.send_task(
            task_name,
            args=args,
            kwargs=kwargs,
            queue=queue,
            producer=producer,
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )
    except BROKER_ERRORS as error:
        raise BrokerUnavailable(f"{error.__class__.__name__}: {error}") from error
    return result.id


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
