"""`make run`'s web process, the development server, against PostgreSQL."""

import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.factories import place_order
from tests.fakes.smtp_server import free_port
from tests.notifications.conftest import ROOT, database_url
from tests.processes import stop_group
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="counts PostgreSQL's connections")


def runserver_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orderflow-runserver'")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_the_development_server_keeps_no_connection_after_its_requests(shop):
    """`make run`'s web process answers each request in a thread of its own: a connection kept
    for reuse outlived it, and a few parallel clients used up PostgreSQL's connections."""
    order = place_order(owner=shop)
    token, _ = Token.objects.get_or_create(user=shop)
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "orderflow.settings.local",
        "DATABASE_URL": f"{database_url()}?application_name=orderflow-runserver",
    }
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/orders/{order.pk}/", headers={"Authorization": f"Token {token.key}"}
    )

    def get(_):
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - http to loopback
                return answer.status
        except OSError:
            return None  # not listening yet

    try:
        wait_until(lambda: get(None) == 200, timeout=30, what="the development server")
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(get, range(40))) == {200}
        time.sleep(0.5)  # the last threads end
        assert runserver_connections() == 0
    finally:
        stop_group(server, timeout=10)
