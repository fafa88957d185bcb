"""django-celery-beat's database scheduler, stopping beat with one line naming DATABASE_URL
when the database cannot be reached at start (orderflow/connectivity.py), or saying to run
migrate when it holds no schedules' tables yet: the scheduler reads its schedules first thing,
and either failure otherwise came out as a traceback split over a thousand log lines. A broker
it cannot reach is said at start too, in one line, and beat runs on: it sends each due task
once the broker answers."""

import logging

from django.db import DEFAULT_DB_ALIAS, connections
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler as BaseDatabaseScheduler

from orderflow.connectivity import broker_unreachable, database_unreachable

logger = logging.getLogger(__name__)


class DatabaseScheduler(BaseDatabaseScheduler):
    def __init__(self, *args, **kwargs):
        problem = database_unreachable(DEFAULT_DB_ALIAS)
        if problem:
            raise SystemExit(f"celery beat: {problem}")
        if PeriodicTask._meta.db_table not in connections[DEFAULT_DB_ALIAS].introspection.table_names():
            raise SystemExit(
                "celery beat: DATABASE_URL: the database has no schedules yet; run `python manage.py migrate` first"
            )
        super().__init__(*args, **kwargs)
        if kwargs.get("lazy"):
            return  # the instance beat makes only to describe itself at start; the running one follows
        problem = broker_unreachable(self.app.conf.broker_url)
        if problem:
            logger.error("celery beat: %s; due tasks are sent once it answers", problem)
