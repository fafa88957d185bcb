"""Two repairs to Celery's worker.

Its consumer (CELERY_WORKER_CONSUMER), kept running when a Redis broker goes
away while the worker holds messages it has not acknowledged: a task running, a retry's
countdown, a receipt to look at again later.

On losing the broker Celery (5.7) collects the connection, which on Redis closes its channel
and detaches its transport, then closes the connection once more. That second close tries to
give the held messages back through the detached transport and fails with an AttributeError
(no `hostname` on None), which Celery treats as unrecoverable: the worker exited and nothing
consumed its queues until someone started it again. Those messages cannot reach a broker
that is away anyway: Redis hands them out again after its visibility timeout, and the sweep
publishes again a notification whose message was lost with a broker restarted empty.

Its prefork pool (ReplaceRecycledProcessesPromptly) replaces a pool process that exits after
--max-tasks-per-child tasks when it sees the process gone. When the main process hands the
exiting process one more message just as it finishes its last task, it does not see that
at once, and the message waits for the pool's 5-second check to start a replacement
(https://github.com/celery/celery/issues/9588): an SMS held for up to 5 s every recycle,
with the other process doing all the work meanwhile.
"""

import logging
import warnings
from functools import partial

from celery import bootsteps
from celery.concurrency import prefork
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


# How often the main process looks for pool processes that exited, against Celery's 5 s. A look
# is a waitpid() per process: nothing beside a task's milliseconds.
POOL_CHECK_SECONDS = 0.1


class ReplaceRecycledProcessesPromptly(bootsteps.StartStopStep):
    """A worker step: the prefork pool's check for exited processes, run every POOL_CHECK_SECONDS."""

    requires = ("celery.worker.components:Pool",)

    def start(self, worker):
        # Only the prefork pool recycles processes; without an event loop (hub) Celery's own
        # supervisor thread does the check.
        if isinstance(worker.pool, prefork.TaskPool) and worker.hub is not None:
            worker.hub.call_repeatedly(POOL_CHECK_SECONDS, worker.pool.maintain_pool)
