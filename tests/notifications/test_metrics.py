import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from notifications import services
from notifications.models import Notification
from orders import services as order_services
from orders.models import ChangeSource
from tests.factories import UserFactory, place_order
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db


def sample(text: str, name: str) -> float:
    """The value of one sample line, e.g. `orderflow_notifications{channel="sms",status="queued"}`."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_metrics_are_not_public(client):
    response = client.get("/metrics")
    assert response.status_code == 403
    assert "METRICS_TOKEN" in response.json()["detail"]


def test_a_non_staff_user_is_refused(client, shop):
    client.force_login(shop)
    assert client.get("/metrics").status_code == 403


def test_a_scraper_with_the_token_reads_them(client, settings):
    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="bearer  scrape-secret").status_code == 200  # RFC 9110
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="scrape-secret").status_code == 403  # no scheme
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic scrape-secret").status_code == 403


def test_a_token_with_letters_beyond_ascii_is_refused_not_an_error(client, settings):
    settings.METRICS_TOKEN = "scrape-secret"
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer caf\u00e9")
    assert response.status_code == 403
    assert "METRICS_TOKEN" in response.json()["detail"]


def test_a_post_is_a_json_405_not_a_csrf_page(client):
    client.handler.enforce_csrf_checks = True
    response = client.post("/metrics")
    assert (response.status_code, response["Allow"]) == (405, "GET")
    assert response.json()["code"] == "method_not_allowed"


def test_metrics_show_notifications_dead_letters_and_queue_depths(client, shop, published):
    client.force_login(UserFactory(username="ops", is_staff=True))
    place_order(owner=shop)
    Notification.objects.filter(channel="email").update(status="sent")
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert sample(text, 'orderflow_notifications{channel="sms",status="queued"}') == 1
    assert sample(text, 'orderflow_notifications{channel="email",status="sent"}') == 1
    assert sample(text, 'orderflow_notifications_waiting_in_order{channel="sms"}') == 0
    assert sample(text, 'orderflow_queue_depth{queue="sms"}') >= 0
    assert sample(text, "orderflow_broker_up") == 1
    assert sample(text, "orderflow_database_up") == 1
    assert "orderflow_rate_limit_wait_seconds" in text


def test_a_scraper_still_reads_the_counters_and_queues_while_the_database_is_away(client, settings):
    """What an incident needs most: the failures counted and the backlog, not a 503."""
    settings.METRICS_TOKEN = "scrape-secret"

    def unreachable(execute, sql, params, many, context):
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    with connection.execute_wrapper(unreachable):
        response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")
    assert response.status_code == 200
    text = response.content.decode()
    assert sample(text, "orderflow_database_up") == 0
    assert sample(text, "orderflow_broker_up") == 1
    assert sample(text, 'orderflow_queue_depth{queue="sms"}') >= 0
    assert "# HELP orderflow_notification_failures_total" in text
    assert "orderflow_notifications{" not in text  # not read, rather than read as none


def test_metrics_tell_notifications_waiting_in_order_from_ones_the_broker_did_not_take(
    client, shop, published, scripted
):
    client.force_login(UserFactory(username="ops", is_staff=True))
    order = place_order(owner=shop)
    order_services.order_transition(order_id=order.pk, to_status="confirmed", by=shop, source=ChangeSource.API)
    confirmation = Notification.objects.get(order=order, channel="sms", event="confirmed")
    assert services.notification_send(notification_id=confirmation.pk).outcome == "waiting"
    unpublished = Notification.objects.filter(order=order, channel="email", event="placed")
    unpublished.update(status="pending", stale_after=timezone.now())  # as a publish the broker refused leaves it

    text = client.get("/metrics").content.decode()
    assert sample(text, 'orderflow_notifications{channel="sms",status="pending"}') == 1
    assert sample(text, 'orderflow_notifications_waiting_in_order{channel="sms"}') == 1
    assert sample(text, 'orderflow_notifications{channel="email",status="pending"}') == 1
    assert sample(text, 'orderflow_notifications_waiting_in_order{channel="email"}') == 0


COUNTING_ALONE = """
import django
django.setup()
from prometheus_client import REGISTRY
from notifications import metrics
metrics.SENDS.labels("sms").inc(3)
print(REGISTRY.get_sample_value("orderflow_notification_sends_total", {"channel": "sms"}))
"""


def test_a_blank_metrics_directory_is_unset_and_leaves_no_files_where_the_process_runs(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR= in a .env is unset, as the settings read it: the process counts
    on its own, and writes no metrics files into the directory it runs in."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": "", "DJANGO_SETTINGS_MODULE": "orderflow.settings.test"}
    env["PYTHONPATH"] = str(ROOT)
    counted = subprocess.run(
        [sys.executable, "-c", COUNTING_ALONE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.split() == ["3.0"]
    assert list(tmp_path.iterdir()) == []


# Counts made by one process that shares PROMETHEUS_MULTIPROC_DIR: its metrics made, it says it
# is ready, waits for the word, then counts 200 sends.
COUNTING = """
import os, pathlib, socket, sys, time
socket.sethostname(f"container-{sys.argv[2]}")  # a container's own, in its own UTS namespace
import django
django.setup()
from notifications import metrics
sends = metrics.SENDS.labels("sms")
rendezvous = pathlib.Path(sys.argv[1])
(rendezvous / f"ready-{sys.argv[2]}").touch()
while not (rendezvous / "go").exists():
    time.sleep(0.01)
for _ in range(200):
    sends.inc()
"""


def test_processes_of_two_containers_with_the_same_pid_keep_their_counts_apart(tmp_path):
    """Compose mounts one metrics volume into every container, and each numbers its processes
    from 1 (here, two PID and host-name namespaces): neither one's counts may overwrite the other's."""
    unshare = shutil.which("unshare")
    directory, rendezvous = tmp_path / "metrics", tmp_path / "rendezvous"
    directory.mkdir()
    rendezvous.mkdir()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DJANGO_SETTINGS_MODULE": "orderflow.settings.test",
    }
    counting = [
        subprocess.Popen(
            [unshare, "--pid", "--uts", "--fork", sys.executable, "-c", COUNTING, str(rendezvous), str(number)],
            cwd=ROOT,
            env=env,
        )
        for number in (1, 2)
    ]
    try:
        wait_until(lambda: len(list(rendezvous.glob("ready-*"))) == 2, timeout=60, what="both counting processes")
        (rendezvous / "go").touch()
        assert [process.wait(timeout=60) for process in counting] == [0, 0]
    finally:
        for process in counting:
            process.kill()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    assert registry.get_sample_value("orderflow_notification_sends_total", {"channel": "sms"}) == 400
