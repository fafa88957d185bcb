"""django-celery-beat's database scheduler, stopping beat with one line naming DATABASE_URL
when the database cannot be reached at start (orderflow/connectivity.py): the scheduler reads
its schedules first thing."""

from django.db import DEFAULT_DB_ALIAS
from django_celery_beat.schedulers import DatabaseScheduler as BaseDatabaseScheduler

from orderflow.connectivity import database_unreachable


class DatabaseScheduler(BaseDatabaseScheduler):
    def __init__(self, *args, **kwargs):
        problem = database_unreachable(DEFAULT_DB_ALIAS)
        if problem:
            raise SystemExit(f"celery beat: {problem}")
        super().__init__(*args, **kwargs)
