import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import IntegrityError, NotSupportedError, connection, transaction
from django.test.utils import CaptureQueriesContext

from notifications.models import Notification
from orderflow.database import prepared_cursor
from tests.factories import place_order

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's"),
]


PROBE_SQL = "SELECT count(*) FROM notifications_notification WHERE channel = %(channel)s"


def prepared_statements_like(text: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", [f"%{text}%"])
        return [row[0] for row in cursor.fetchall()]


def test_a_statement_is_prepared_once_it_repeats_and_answers_the_same(shop, prepare_threshold):
    place_order(owner=shop)
    answers = []
    for _ in range(prepare_threshold + 2):
        with prepared_cursor() as cursor:
            cursor.execute(PROBE_SQL, {"channel": "sms"})
            answers.append(cursor.fetchone()[0])
    assert answers == [1] * len(answers)
    assert prepared_statements_like("FROM notifications_notification WHERE channel = $1")


def test_the_orm_cursor_still_prepares_nothing(shop, prepare_threshold):
    """Only prepared_cursor's statements are prepared, as the settings promise."""
    for _ in range(prepare_threshold + 2):
        with connection.cursor() as cursor:
            cursor.execute(PROBE_SQL, {"channel": "email"})
    assert prepared_statements_like("WHERE channel = ") == []


def test_a_database_error_comes_up_as_django_s(shop):
    order = place_order(owner=shop)
    existing = Notification.objects.filter(order=order).first()
    with pytest.raises(IntegrityError), prepared_cursor() as cursor:
        cursor.execute(
            "UPDATE notifications_notification SET dedup_key = %(key)s WHERE id <> %(id)s",
            {"key": existing.dedup_key, "id": existing.pk},
        )


def test_logged_queries_show_their_values(shop):
    with CaptureQueriesContext(connection) as captured, prepared_cursor() as cursor:
        cursor.execute(PROBE_SQL, {"channel": "sms"})
    assert captured.captured_queries[-1]["sql"].endswith("WHERE channel = 'sms'")


@pytest.fixture
def altered_table(other_connection):
    """A table another process can alter; it goes at the end, with the test's connection."""
    other_connection.execute("CREATE TABLE probe_altered (id integer PRIMARY KEY)")
    other_connection.execute("INSERT INTO probe_altered VALUES (1)")
    try:
        yield other_connection
    finally:
        connection.close()  # a clean slate for the next test: no prepared plans of a dropped table
        other_connection.execute("DROP TABLE probe_altered")


def select_altered():
    with prepared_cursor() as cursor:
        cursor.execute("SELECT * FROM probe_altered WHERE id = %(id)s", {"id": 1})
        return cursor.fetchone()


@pytest.mark.django_db(transaction=True)  # the table changes on a connection of its own, as in a deploy
def test_a_statement_whose_table_another_process_altered_fails_once_then_works(altered_table, prepare_threshold):
    for _ in range(prepare_threshold + 2):
        assert select_altered() == (1,)
    altered_table.execute("ALTER TABLE probe_altered ADD COLUMN added integer")
    with pytest.raises(NotSupportedError):
        select_altered()
    assert select_altered() == (1, None)


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_stale_plan_goes_with_its_rollback(altered_table, prepare_threshold):
    for _ in range(prepare_threshold + 2):
        assert select_altered() == (1,)
    altered_table.execute("ALTER TABLE probe_altered ADD COLUMN added integer")
    with pytest.raises(NotSupportedError), transaction.atomic():
        select_altered()
    assert connection.connection is not None  # not closed under the transaction's feet
    assert select_altered() == (1, None)


SQLITE_WRITERS = """
import threading, time
import django
django.setup()
from django.db import connection, transaction

with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE counted (n integer)")
failures = []

def read_then_write():
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM counted")
                time.sleep(0.3)  # the other writer reads meanwhile
                cursor.execute("INSERT INTO counted VALUES (1)")
    except Exception as error:
        failures.append(repr(error))
    finally:
        connection.close()

writers = [threading.Thread(target=read_then_write) for _ in range(3)]
for writer in writers:
    writer.start()
for writer in writers:
    writer.join()
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM counted")
    print(cursor.fetchone()[0], failures)
"""


def test_on_sqlite_writers_that_read_first_wait_for_each_other_instead_of_failing(tmp_path):
    # make run's default database: web, three workers and beat write to one file. A transaction
    # that read, then wrote, while another did the same, failed at once with "database is locked".
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env["DJANGO_SETTINGS_MODULE"] = "orderflow.settings.local"
    result = subprocess.run(
        [sys.executable, "-c", SQLITE_WRITERS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "3 []"
