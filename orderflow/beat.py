"""django-celery-beat's database scheduler, stopping beat with one line naming DATABASE_URL
when the database cannot be reached at start (orderflow/connectivity.py), or saying to run
migrate when it holds no schedules' tables yet: the scheduler reads its schedules first thing,
and either failure otherwise came out as a traceback split over a thousand log lines. A broker
it cannot reach is said at start too, in one line, and beat runs on: it sends each due task
once the broker answers. A database that goes away later is one line a minute, not a traceback
at every tick."""

import logging
import time

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler as BaseDatabaseScheduler

from orderflow.connectivity import broker_unreachable, database_error_line, database_unreachable

logger = logging.getLogger(__name__)

# django-celery-beat's logger; it logs a whole traceback at each tick the database is away.
SCHEDULER_LOGGER = "django_celery_beat.schedulers"
# While the database stays away, one line this often, counting the failed reads in between.
OUTAGE_REPEAT_SECONDS = 60


class DatabaseOutageLines(logging.Filter):
    """The scheduler's errors for a database it cannot reach, as one line a minute instead of a
    traceback every few seconds; other errors pass as they are."""

    def __init__(self):
        super().__init__()
        self.failures = 0  # since the database last answered
        self.shown_at = None

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, OperationalError | InterfaceError):
            return True
        self.failures += 1
        now = time.monotonic()
        if self.shown_at is not None and now - self.shown_at < OUTAGE_REPEAT_SECONDS:
            return False
        self.shown_at = now
        record.msg = "database unavailable (%d failed call(s) to it so far, tried again every tick): %s"
        record.args = (self.failures, database_error_line(error))
        record.exc_info = record.exc_text = None
        return True

    def answered(self):
        """The scheduler read the database: an outage, if there was one, is over."""
        if self.failures:
            logger.warning("celery beat: the database answers again after %d failed call(s)", self.failures)
        self.failures, self.shown_at = 0, None


OUTAGE = DatabaseOutageLines()


class DatabaseScheduler(BaseDatabaseScheduler):
    def __init__(self, *args, **kwargs):
        problem = database_unreachable(DEFAULT_DB_ALIAS)
        if problem:
            raise SystemExit(f"celery beat: {problem}")
        if PeriodicTask._meta.db_table not in connections[DEFAULT_DB_ALIAS].introspection.table_names():
            raise SystemExit(
                "celery beat: DATABASE_URL: the database has no schedules yet; run `python manage.py migrate` first"
            )
        logging.getLogger(SCHEDULER_LOGGER).addFilter(OUTAGE)  # once, however many schedulers beat makes
        super().__init__(*args, **kwargs)
        if kwargs.get("lazy"):
            return  # the instance beat makes only to describe itself at start; the running one follows
        problem = broker_unreachable(self.app.conf.broker_url)
        if problem:
            logger.error("celery beat: %s; due tasks are sent once it answers", problem)

    def schedule_changed(self):
        failures = OUTAGE.failures
        changed = super().schedule_changed()
        if OUTAGE.failures == failures:  # this read went through
            OUTAGE.answered()
        return changed
