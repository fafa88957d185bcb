"""A cursor for the few statements every order and every send runs: planned once per connection.

Django binds parameters on the client, so PostgreSQL parses and plans each of its statements
anew; for the claim, planning cost more than running it. This cursor binds on the server, so
psycopg prepares a statement once it has run `prepare_threshold` times on the connection
(settings: 5 unless DATABASE_URL says otherwise). It is otherwise Django's cursor (error
translation, execute wrappers). A rollback on the connection drops what was prepared.
https://www.psycopg.org/psycopg3/docs/advanced/prepare.html
"""

from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, NotSupportedError, connections
from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, ServerBindingCursor
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.errors import FeatureNotSupported
from psycopg.pq import Format


@contextmanager
def prepared_cursor(using: str = DEFAULT_DB_ALIAS):
    """Django's cursor on `using`, whose statements PostgreSQL prepares once they repeat; elsewhere
    (SQLite for quick local runs) Django's plain cursor."""
    connection = connections[using]
    # While queries are logged (DEBUG, CaptureQueriesContext) Django's own cursor: its log shows
    # each statement with its values, which a prepared statement's does not.
    if connection.vendor != "postgresql" or connection.queries_logged:
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        raw = ServerBindingCursor(connection.connection)
    # As Django's create_cursor: datetimes in the connection's time zone (it can change in tests).
    if connection.timezone != connection.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT).timezone:
        register_tzloader(connection.timezone, raw)
    with connection.make_cursor(raw) as cursor:
        try:
            yield cursor
        except NotSupportedError as error:
            # "cached plan must not change result type": another process's migration changed what
            # a prepared statement returns, and psycopg would fail it on this connection for good.
            # Outside a transaction a new connection plans afresh; inside one, its rollback
            # drops the plan.
            if isinstance(error.__cause__, FeatureNotSupported) and not connection.in_atomic_block:
                connection.close()
            raise
