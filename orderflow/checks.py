"""A database that cannot be reached stops `migrate` (and `check --database default`) with one
message naming DATABASE_URL, instead of a driver traceback of ninety lines; Celery beat too
(orderflow/beat.py)."""

from django.core import checks
from django.db import DatabaseError, connections


def _shown(alias: str) -> str:
    """Where the connection goes, as a person would recognise it from DATABASE_URL, no password."""
    config = connections[alias].settings_dict
    if connections[alias].vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    user = f"{config['USER']}@" if config.get("USER") else ""
    port = f":{config['PORT']}" if config.get("PORT") else ""
    return f"{connections[alias].vendor}://{user}{config.get('HOST') or 'localhost'}{port}/{config['NAME']}"


def unreachable(alias: str, error: DatabaseError) -> str:
    return f"DATABASE_URL: cannot connect to {_shown(alias)}: {' '.join(str(error).split())}"


@checks.register(checks.Tags.database)
def database_reachable(app_configs, databases=None, **kwargs):
    errors = []
    for alias in databases or ():
        try:
            connections[alias].ensure_connection()
        except DatabaseError as error:
            errors.append(
                checks.Error(
                    unreachable(alias, error),
                    hint=(
                        "Is the database server running there, and does the database exist (createdb)? "
                        "Without DATABASE_URL, a local SQLite file is used."
                    ),
                    id="orderflow.E001",
                )
            )
    return errors
