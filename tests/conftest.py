import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory


@pytest.fixture
def shop(db):
    return UserFactory(username="shop")


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
