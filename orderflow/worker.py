"""Celery's worker consumer (CELERY_WORKER_CONSUMER), kept running when a Redis broker goes
away while the worker holds messages it has not acknowledged: a task running, a retry's
countdown, a receipt to look at again later.

On losing the broker Celery (5.7) collects the connection, which on Redis closes its channel
and detaches its transport, then closes the connection once more. That second close tries to
give the held messages back through the detached transport and fails with an AttributeError
(no `hostname` on None), which Celery treats as unrecoverable: the worker exited and nothing
consumed its queues until someone started it again. Those messages cannot reach a broker
that is away anyway: Redis hands them out again after its visibility timeout, and the sweep
publishes again a notification whose message was lost with a broker restarted empty.
"""

import logging
import warnings
from functools import partial

from celery.exceptions import CPendingDeprecationWarning
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import Connection

logger = logging.getLogger(__name__)

# Celery warns at every lost connection, in seven lines, that a later version will cancel running
# tasks then; CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS says what is wanted here.
warnings.filterwarnings("ignore", r"\s*In Celery 5\.1 we introduced", CPendingDeprecationWarning)


class Consumer(CeleryConsumer):
    def on_connection_error_after_connected(self, exc):
        if self.connection is not None:
            self.connection.close = partial(_close_after_collect, self.connection)
        super().on_connection_error_after_connected(exc)


def _close_after_collect(connection: Connection) -> None:
    try:
        Connection.close(connection)
    except AttributeError as error:  # the transport collect() detached: nothing left to close
        logger.debug("closing the lost broker connection: %r", error)
