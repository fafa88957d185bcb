import logging
import socket

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection

from tests.notifications.conftest import point_app_at


def test_healthz_answers_while_the_process_runs(client):
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.django_db
def test_readyz_is_ready_when_every_part_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "down": [],
        "checks": {"database": "ok", "broker": "ok", "redis": "ok"},
    }


@pytest.mark.django_db
def test_readyz_names_redis_when_it_is_down(client, settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.METRICS_TOKEN = "monitoring"
    body = client.get("/readyz").json()
    assert body["down"] == ["redis"]
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"] == "down"  # where it is and why: not for anyone who can reach the probe
    assert "readyz: redis down: ConnectionError" in caplog.text and "127.0.0.1:1" in caplog.text

    detailed = client.get("/readyz", HTTP_AUTHORIZATION="Bearer monitoring").json()
    assert detailed["checks"]["redis"].startswith("down: ConnectionError")


@pytest.mark.django_db
def test_readyz_names_the_broker_when_it_is_down(client, settings):
    point_app_at("redis://127.0.0.1:1/0")
    try:
        response = client.get("/readyz")
    finally:
        point_app_at(settings.CELERY_BROKER_URL)
    assert response.status_code == 503
    assert response.json()["down"] == ["broker"]


@pytest.mark.django_db(transaction=True)
def test_readyz_names_the_database_when_it_is_down(client):
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("Django keeps an in-memory SQLite database open through close(): it cannot be taken away")
    connection.close()
    saved = dict(connection.settings_dict)
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent/dir/db.sqlite3"
    else:
        connection.settings_dict["PORT"] = "1"
    try:
        response = client.get("/readyz")
    finally:
        connection.close()
        connection.settings_dict.update(saved)
    assert response.status_code == 503
    assert response.json()["down"] == ["database"]


@pytest.mark.parametrize("url", ["/healthz", "/readyz"])
def test_a_post_is_a_json_405_naming_get(client, url):
    client.handler.enforce_csrf_checks = True
    response = client.post(url)
    assert (response.status_code, response["Allow"]) == (405, "GET, HEAD")
    assert "use GET or HEAD" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/orders/"),
        ("post", "/api/orders/"),
        ("post", "/api/orders/1/transition/"),
        ("get", "/admin/orders/order/"),
        ("get", "/metrics"),
    ],
)
def test_the_database_away_is_a_503_to_try_again_not_a_500(api, client, method, path, caplog):
    """A restart or fail-over of PostgreSQL: clients are told to come back, and the log says why."""
    client.force_login(get_user_model().objects.create_user("operator", is_staff=True, is_superuser=True))

    def unreachable(execute, sql, params, many, context):
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    caller = api if path.startswith("/api/") else client
    with connection.execute_wrapper(unreachable):
        response = getattr(caller, method)(path, {}, format="json") if caller is api else getattr(caller, method)(path)
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert "database unavailable for" in caplog.text
    if path.startswith("/admin/"):  # a page for the operator's browser
        assert response["Content-Type"].startswith("text/html")
        assert "cannot reach its database just now" in response.content.decode()
        assert "Idempotency-Key" not in response.content.decode()
        return
    assert response.json()["code"] == "unavailable"
    assert "cannot reach its database" in response.json()["detail"]
    # The hint on retrying safely is for those who place orders, not those who read them.
    assert ("Idempotency-Key" in response.json()["detail"]) == ((method, path) == ("post", "/api/orders/"))


@pytest.mark.parametrize("url", ["/healthz/", "/readyz/", "/metrics/"])
def test_probes_answer_with_a_trailing_slash_too(client, url, settings, db):
    settings.METRICS_TOKEN = "scraper-token"
    response = client.get(url, HTTP_AUTHORIZATION="Bearer scraper-token")
    assert response.status_code == 200  # as without the slash, not a 404 nor a redirect
    without = client.get(url.rstrip("/"), HTTP_AUTHORIZATION="Bearer scraper-token")
    assert (response.status_code, response["Content-Type"]) == (without.status_code, without["Content-Type"])


@pytest.fixture
def silent_database(transactional_db):
    """The database's host takes the connection and never answers (a firewall, a hung server),
    with the shortest connect timeout psycopg keeps (2 s). Yields the port."""
    if connection.vendor != "postgresql":
        pytest.skip("a connect timeout: SQLite opens a file")
    saved = {**connection.settings_dict, "OPTIONS": dict(connection.settings_dict["OPTIONS"])}
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(port))
        connection.settings_dict["OPTIONS"]["connect_timeout"] = 2
        try:
            yield port
        finally:
            connection.close()
            connection.settings_dict.update(saved)


def test_a_silent_database_is_named_by_where_it_is(client, api, silent_database, caplog, settings):
    """The driver says only "connection timeout expired", where a refused connection names the
    host and port: readiness and the API's log say where the connection went."""
    where = f"connection timeout expired connecting to 127.0.0.1:{silent_database}"
    settings.METRICS_TOKEN = "monitoring"
    response = client.get("/readyz", HTTP_AUTHORIZATION="Bearer monitoring")
    assert (response.status_code, response.json()["checks"]["database"]) == (503, f"down: OperationalError: {where}")
    with caplog.at_level(logging.ERROR, logger="orderflow.middleware"):
        assert api.get("/api/orders/").status_code == 503
    assert f"database unavailable for GET /api/orders/: {where}" in caplog.text


# A Kubernetes probe to the pod's IP, Prometheus scraping the compose service by its name.
@pytest.mark.parametrize("host", ["10.1.2.3:8000", "web:8000"])
@pytest.mark.parametrize("url", ["/healthz", "/readyz/", "/metrics"])
def test_probes_answer_whatever_host_they_are_sent_to(client, url, host, settings, caplog, db):
    settings.ALLOWED_HOSTS = ["orders.example.com"]
    settings.METRICS_TOKEN = "scraper-token"
    response = client.get(url, HTTP_HOST=host, HTTP_AUTHORIZATION="Bearer scraper-token")
    assert response.status_code == 200
    assert not [record for record in caplog.records if record.name.startswith("django.security")]


def test_the_site_still_refuses_a_host_it_is_not_served_under(client, settings):
    settings.ALLOWED_HOSTS = ["orders.example.com"]
    assert client.get("/admin/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400
    assert client.get("/api/orders/", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_metrics_from_a_host_not_allowed_take_the_token_not_a_login(client, settings, db):
    settings.ALLOWED_HOSTS = ["orders.example.com"]
    settings.METRICS_TOKEN = "scraper-token"
    client.force_login(get_user_model().objects.create_user("ops", is_staff=True))
    assert client.get("/metrics", HTTP_HOST="orders.example.com").status_code == 200
    assert client.get("/metrics", HTTP_HOST="10.1.2.3:8000").status_code == 403
