"""Django's migrate, stopping with one line naming DATABASE_URL when the database cannot be
reached (orderflow/connectivity.py), before any system check or migration touches it."""

from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as MigrateCommand

from orderflow.connectivity import database_unreachable


class Command(MigrateCommand):
    def execute(self, *args, **options):
        problem = database_unreachable(options["database"])
        if problem:
            raise CommandError(problem)
        return super().execute(*args, **options)
