"""django-celery-beat's database scheduler, stopping beat with one line when the database
cannot be reached at start: the scheduler reads its schedules first thing, and Celery would
log the driver's traceback, then print it again one fragment a line (1,700 lines)."""

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django_celery_beat.schedulers import DatabaseScheduler as BaseDatabaseScheduler

from orderflow.checks import unreachable


class DatabaseScheduler(BaseDatabaseScheduler):
    def __init__(self, *args, **kwargs):
        try:
            connections[DEFAULT_DB_ALIAS].ensure_connection()
        except DatabaseError as error:
            raise SystemExit(f"celery beat: {unreachable(DEFAULT_DB_ALIAS, error)}") from None
        super().__init__(*args, **kwargs)
