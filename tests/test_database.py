import psycopg
import pytest
from django.db import IntegrityError, NotSupportedError, connection
from django.test.utils import CaptureQueriesContext

from notifications.models import Notification
from orderflow.database import prepared_cursor
from tests.factories import place_order

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's"),
]


def prepare_threshold() -> int:
    """How often a statement runs on this connection before psycopg prepares it (settings)."""
    connection.ensure_connection()
    return connection.connection.prepare_threshold


PROBE_SQL = "SELECT count(*) FROM notifications_notification WHERE channel = %(channel)s"


def prepared_statements_like(text: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", [f"%{text}%"])
        return [row[0] for row in cursor.fetchall()]


def test_a_statement_is_prepared_once_it_repeats_and_answers_the_same(shop):
    place_order(owner=shop)
    answers = []
    for _ in range(prepare_threshold() + 2):
        with prepared_cursor() as cursor:
            cursor.execute(PROBE_SQL, {"channel": "sms"})
            answers.append(cursor.fetchone()[0])
    assert answers == [1] * len(answers)
    assert prepared_statements_like("FROM notifications_notification WHERE channel = $1")


def test_the_orm_cursor_prepares_nothing(shop):
    for _ in range(prepare_threshold() + 2):
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


@pytest.mark.django_db(transaction=True)  # the table changes on a connection of its own, as in a deploy
def test_a_statement_whose_table_another_process_altered_fails_once_then_works():
    params = connection.get_connection_params()
    login = {key: params[key] for key in ("dbname", "user", "host", "port", "password") if key in params}
    with psycopg.connect(**login, autocommit=True) as other:
        other.execute("CREATE TABLE probe_altered (id integer PRIMARY KEY)")
        try:
            other.execute("INSERT INTO probe_altered VALUES (1)")

            def select_all():
                with prepared_cursor() as cursor:
                    cursor.execute("SELECT * FROM probe_altered WHERE id = %(id)s", {"id": 1})
                    return cursor.fetchone()

            for _ in range(prepare_threshold() + 2):
                assert select_all() == (1,)
            other.execute("ALTER TABLE probe_altered ADD COLUMN added integer")
            with pytest.raises(NotSupportedError):
                select_all()
            assert select_all() == (1, None)
        finally:
            connection.close()  # the table can only go once nothing holds a plan of it
            other.execute("DROP TABLE probe_altered")
