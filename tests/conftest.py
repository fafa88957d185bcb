import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory


@pytest.fixture
def shop(db):
    return UserFactory(username="shop")


@pytest.fixture
def operator(client, db):
    """A superuser logged in to the admin through `client`."""
    user = UserFactory(username="operator", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


@pytest.fixture
def other_shop(db):
    return UserFactory(username="other-shop")


@pytest.fixture
def staff(db):
    return UserFactory(username="staff", is_staff=True)


def _token_client(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(shop):
    return _token_client(shop)


@pytest.fixture
def other_api(other_shop):
    return _token_client(other_shop)


@pytest.fixture
def staff_api(staff):
    return _token_client(staff)


@pytest.fixture
def anonymous_api():
    return APIClient()


@pytest.fixture
def published(monkeypatch):
    """Record publishes instead of sending them: for tests of one function, not of the pipeline."""
    from notifications import broker

    calls = []

    def record(messages):
        calls.extend((message.task_name, message.args, message.queue) for message in messages)
        return [f"recorded-{number}" for number in range(len(calls) - len(messages), len(calls))]

    monkeypatch.setattr(broker, "publish_many", record)
    return calls


@pytest.fixture
def prepare_threshold(db) -> int:
    """How often a statement runs on the test connection before psycopg prepares it (settings)."""
    from django.db import connection

    connection.ensure_connection()
    return connection.connection.prepare_threshold


@pytest.fixture
def other_connection(db):
    """A connection of its own to the test database, as another process (a deploy's migration) has."""
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    login = {key: params[key] for key in ("dbname", "user", "host", "port", "password") if key in params}
    with psycopg.connect(**login, autocommit=True) as other:
        yield other
