"""Whether the database can be reached, said in one line naming DATABASE_URL: `migrate` and
Celery beat start by connecting, and a driver's traceback (ninety lines; through beat's stderr
redirect, 1,700) hides which setting is wrong. The same for the broker, which beat otherwise
meets only when its first task is due."""

import os
import sys

from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, OperationalError, connections
from kombu import Connection
from psycopg.errors import ConnectionTimeout

from orderflow.configuration import without_password
from orderflow.errors import first_line


def _shown(alias: str) -> str:
    """Where the connection goes, as a person would recognise it from DATABASE_URL, no password."""
    connection = connections[alias]
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    user = f"{config['USER']}@" if config.get("USER") else ""
    port = f":{config['PORT']}" if config.get("PORT") else ""
    return f"{connection.vendor}://{user}{config.get('HOST') or 'localhost'}{port}/{config['NAME']}"


def database_error_line(error: BaseException, alias: str = DEFAULT_DB_ALIAS) -> str:
    """A database error's first line, as an operator reads it. A connection that timed out (a
    firewall, a hung server) also says where it went: the driver says only "connection timeout
    expired", where a refused one names the host and port."""
    line = first_line(error)
    config = connections[alias].settings_dict
    host = config.get("HOST") or ""
    # Not for several hosts, nor none (libpq's own default then: PGHOST, a Unix socket).
    if isinstance(error.__cause__, ConnectionTimeout) and host and "," not in host:
        line = f"{line} connecting to {host}:{config.get('PORT') or 5432}"
    return line


def database_unreachable(alias: str) -> str | None:
    """None if the database `alias` answers; else one line saying where and why not."""
    try:
        connections[alias].ensure_connection()
    except DatabaseError as error:
        return f"DATABASE_URL: cannot connect to {_shown(alias)}: {' '.join(str(error).split())}"
    return None


def exit_if_database_unreachable(error: BaseException) -> None:
    """For a command that met `error`: if the database cannot be reached at all, end the process
    with one line naming DATABASE_URL (status 1) instead of the driver's traceback. Any other
    database error (a missing table, a bad statement) returns, to be shown in full."""
    if not isinstance(error, OperationalError | InterfaceError):
        return
    problem = database_unreachable(DEFAULT_DB_ALIAS)
    if problem:
        print(f"CommandError: {problem}", file=sys.stderr, flush=True)
        os._exit(1)  # also from a command's thread (runserver's): the whole process stops


def broker_error(url: str) -> tuple[str, Exception | None]:
    """The broker at `url` as a person would recognise it (no password), and the error met
    connecting to it within a few seconds, None if it answered."""
    # kombu's as_uri() writes ":**@" into a Redis URL that has no password at all.
    shown = ";".join(without_password(part) for part in url.split(";"))
    connection = Connection(url, connect_timeout=3)
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
    except Exception as error:  # kombu raises the transport's own errors
        return shown, error
    finally:
        connection.release()
    return shown, None


def broker_unreachable(url: str) -> str | None:
    """None if the broker at `url` answers; else one line naming CELERY_BROKER_URL, where and why not."""
    shown, error = broker_error(url)
    if error is None:
        return None
    return f"CELERY_BROKER_URL: cannot connect to {shown}: {' '.join(str(error).split()).rstrip('.')}"
