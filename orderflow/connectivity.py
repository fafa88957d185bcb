"""Whether the database can be reached, said in one line naming DATABASE_URL: `migrate` and
Celery beat start by connecting, and a driver's traceback (ninety lines; through beat's stderr
redirect, 1,700) hides which setting is wrong. The same for the broker, which beat otherwise
meets only when its first task is due."""

from celery import Celery
from django.db import DatabaseError, connections
from kombu.exceptions import OperationalError


def _shown(alias: str) -> str:
    """Where the connection goes, as a person would recognise it from DATABASE_URL, no password."""
    connection = connections[alias]
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    user = f"{config['USER']}@" if config.get("USER") else ""
    port = f":{config['PORT']}" if config.get("PORT") else ""
    return f"{connection.vendor}://{user}{config.get('HOST') or 'localhost'}{port}/{config['NAME']}"


def database_unreachable(alias: str) -> str | None:
    """None if the database `alias` answers; else one line saying where and why not."""
    try:
        connections[alias].ensure_connection()
    except DatabaseError as error:
        return f"DATABASE_URL: cannot connect to {_shown(alias)}: {' '.join(str(error).split())}"
    return None


def broker_unreachable(app: Celery) -> str | None:
    """None if `app`'s broker answers within a few seconds; else one line saying where (no
    password) and why not."""
    connection = app.connection_for_write()
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
    except (OperationalError, OSError) as error:
        reason = " ".join(str(error).split()).rstrip(".")
        return f"CELERY_BROKER_URL: cannot connect to {connection.as_uri()}: {reason}"
    finally:
        connection.release()
    return None
