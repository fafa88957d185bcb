"""Faults with real processes and servers: a worker killed mid-batch; the rate limiter, the broker, the
SMS provider and the SMTP server down; PostgreSQL restarted under load."""

import bisect
import json
import signal
import subprocess
import sys
import time

import psycopg
import pytest
import redis
from django.conf import settings as django_settings

from notifications import dead_letters, services, sweeps
from notifications.broker import publish
from notifications.models import DeadLetter, Notification
from orders import services as order_services
from tests.factories import UserFactory, order_line
from tests.notifications.conftest import (
    BROKERS,
    MAX_RETRIES,
    ROOT,
    Worker,
    point_app_at,
    purge,
    wait_until,
)
from tests.notifications.servers import PostgresCluster, RedisServer

pytestmark = pytest.mark.integration

BATCH = 200


@pytest.fixture
def fault_env(worker_env, transactional_db, settings):
    settings.NOTIFICATIONS_STUCK_AFTER = 5  # the sweep runs here: treat 5 s old work as possibly lost
    broker_url = BROKERS["redis"]
    purge(broker_url)
    point_app_at(broker_url)
    redis.Redis.from_url(django_settings.REDIS_URL).flushdb()
    yield {
        **worker_env,
        "CELERY_BROKER_URL": broker_url,
        "NOTIFICATIONS_SMS_RATE_LIMIT": "40/s",
        "NOTIFICATIONS_STUCK_AFTER": "5",
    }
    purge(broker_url)
    point_app_at(django_settings.CELERY_BROKER_URL)


@pytest.fixture
def own_redis():
    """A redis-server of the test's own, to stop and start again."""
    server = RedisServer().start()
    yield server
    server.remove()


def most_in_any_second(times: list[float]) -> int:
    """The most of `times` (seconds) inside any window [t, t + 1)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, moment + 1.0) - index for index, moment in enumerate(times)), default=0)


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_at_most_what_was_in_flight(
    fault_env, fake_twilio, capsys
):
    owner = UserFactory(username="fault-shop")
    phones = [f"+1303555{n:04d}" for n in range(BATCH)]
    first = Worker(name="doomed", env=fault_env, queues="sms", concurrency=2).start()
    for phone in phones:
        order_services.order_create(owner=owner, customer_name="Batch", customer_phone=phone, items=[order_line()])

    wait_until(lambda: Notification.objects.filter(status="sent").count() >= 40, timeout=60, what="40 sends")
    first.kill(signal.SIGKILL)
    first.process.wait()
    in_flight = Notification.objects.filter(status="sending").count()
    sent_before = Notification.objects.filter(status="sent").count()
    assert sent_before < BATCH, "the batch finished before the kill; nothing was tested"

    second = Worker(name="survivor", env=fault_env, queues="sms", concurrency=2).start()
    try:
        # Claims of the killed worker expire after their lease; the sweep then publishes them,
        # and the messages it had reserved, again.
        def all_sent():
            sweeps.notifications_sweep()
            return Notification.objects.filter(status="sent").count() == BATCH

        wait_until(all_sent, timeout=240, interval=5, what=f"all {BATCH} notifications sent")
    finally:
        second.stop()

    accepted = [request["To"] for request in fake_twilio.accepted() if request["To"] in set(phones)]
    duplicates = len(accepted) - len(set(accepted))
    with capsys.disabled():
        print(f"\nSIGKILL mid-batch: {sent_before} sent before, {in_flight} in flight, {duplicates} duplicate(s)")
    assert set(accepted) == set(phones)
    assert duplicates <= in_flight


# --- the broker stopped while orders are placed, then started again -----------------------------

ORDERS_BEFORE, ORDERS_DURING = 15, 10


def test_orders_placed_while_the_broker_is_down_are_accepted_and_all_sent_when_it_returns(
    fault_env, own_redis, api, fake_twilio, fake_smtp, capsys
):
    customers = [(f"+1505555{n:04d}", f"broker{n}@shop.example") for n in range(ORDERS_BEFORE + ORDERS_DURING)]

    def place(phone: str, email: str) -> tuple[int, float]:
        started = time.monotonic()
        response = api.post(
            "/api/orders/",
            {
                "customer_name": "Ada",
                "customer_email": email,
                "customer_phone": phone,
                "items": [{"sku": "TEA-1", "name": "Green tea", "quantity": 1, "unit_price": "4.50"}],
            },
            format="json",
        )
        return response.status_code, time.monotonic() - started

    point_app_at(own_redis.url())
    # 5 SMS a second: the first orders' SMS still wait in the broker when it stops.
    env = {**fault_env, "CELERY_BROKER_URL": own_redis.url(), "NOTIFICATIONS_SMS_RATE_LIMIT": "5/s"}
    worker = Worker(name="broker-down", env=env).start()
    sent = Notification.objects.filter(status="sent")
    swept = {"unpublished": 0, "message_lost": 0, "abandoned": 0}

    def all_sent() -> bool:
        counts = sweeps.notifications_sweep()  # what beat runs every 5 minutes
        for reason in swept:
            swept[reason] += counts.get(reason, 0)
        return sent.count() == 2 * len(customers)

    try:
        answers = [place(*customer) for customer in customers[:ORDERS_BEFORE]]
        own_redis.stop()
        sent_before, in_flight = sent.count(), Notification.objects.filter(status="sending").count()
        answers_during = [place(*customer) for customer in customers[ORDERS_BEFORE:]]
        pending = Notification.objects.filter(status="pending").count()
        own_redis.start()
        back_at = time.monotonic()
        wait_until(all_sent, timeout=180, interval=2, what="every notification sent")
        recovered_in = time.monotonic() - back_at
        worker_alive = worker.alive()
    finally:
        worker.stop()

    sms = [request["To"] for request in fake_twilio.accepted() if request["To"] in {phone for phone, _ in customers}]
    mails = [len(fake_smtp.delivered(email)) for _, email in customers]
    duplicates = len(sms) - len(set(sms)) + sum(count - 1 for count in mails if count > 1)
    statuses = {status for status, _ in answers + answers_during}
    slowest = max(seconds for _, seconds in answers_during)
    with capsys.disabled():
        print(
            f"\nbroker down: {len(answers_during)} orders placed while down, answers {sorted(statuses)}, slowest "
            f"{slowest:.2f} s; {sent_before} of {2 * len(customers)} sent before, "
            f"{pending} pending; the sweep published {swept['unpublished']} unpublished and "
            f"{swept['message_lost']} lost with the broker, {swept['abandoned']} abandoned; all sent "
            f"{recovered_in:.1f} s after the broker returned, {duplicates} duplicate(s)"
        )
    assert statuses == {201}
    assert slowest < 5  # a publish gives up within a second or two
    assert pending == 2 * ORDERS_DURING
    assert worker_alive  # it reconnected by itself
    assert sorted(set(sms)) == sorted(phone for phone, _ in customers)
    assert all(count >= 1 for count in mails)
    assert duplicates <= in_flight


def test_a_worker_holding_a_message_when_the_broker_goes_away_reconnects_and_goes_on(fault_env, own_redis):
    """A retry's countdown or a receipt looked at again later is a message the worker holds,
    unacknowledged; a broker restart or failover then must not end the worker."""
    point_app_at(own_redis.url())
    worker = Worker(name="broker-away-holding", env={**fault_env, "CELERY_BROKER_URL": own_redis.url()})
    worker.start()
    broker = redis.Redis.from_url(own_redis.url())
    try:
        publish("notifications.tasks.health_check", args=[], queue="default", countdown=300)
        wait_until(lambda: broker.hlen("unacked") == 1, timeout=20, what="the worker to hold the message")
        own_redis.stop()
        wait_until(lambda: "Connection to broker lost" in worker.log_path.read_text(), timeout=20)
        time.sleep(3)  # its first tries to connect again
        alive_while_away = worker.alive()
        own_redis.start()
        task_id = publish("notifications.tasks.health_check", args=[], queue="default")
        ran = f"health_check[{task_id}] succeeded"
        wait_until(lambda: ran in worker.log_path.read_text() or not worker.alive(), timeout=60, what="a task to run")
        log = worker.log_path.read_text()
    finally:
        worker.stop()
        point_app_at(fault_env["CELERY_BROKER_URL"])
    assert alive_while_away, log[-3000:]
    assert ran in log, log[-3000:]
    assert "Unrecoverable error" not in log
    assert "In Celery 5.1 we introduced" not in log  # a setting here says what is wanted


# --- the rate limiter's Redis stopped for a while -----------------------------------------------

LIMIT_PER_SECOND = 5
LIMITER_BACKLOG = 60
OUTAGE_SECONDS = 8


def test_rate_limiter_down_for_a_while_sends_nothing_without_a_token_and_everything_when_back(
    fault_env, own_redis, fake_twilio, capsys
):
    owner = UserFactory(username="limiter-shop")
    phones = [f"+1720555{n:04d}" for n in range(LIMITER_BACKLOG)]
    env = {**fault_env, "REDIS_URL": own_redis.url(), "NOTIFICATIONS_SMS_RATE_LIMIT": f"{LIMIT_PER_SECOND}/s"}
    worker = Worker(name="limiter-down", env=env, queues="sms", concurrency=2).start()
    sent = Notification.objects.filter(status="sent")
    try:
        for phone in phones:
            order_services.order_create(owner=owner, customer_name="Bulk", customer_phone=phone, items=[order_line()])
        wait_until(lambda: sent.count() >= 10, timeout=60, what="10 sends")

        cpu_before = worker.cpu_seconds()
        own_redis.stop()
        stopped_at, sent_before = time.time(), sent.count()
        time.sleep(OUTAGE_SECONDS)
        cpu_during = worker.cpu_seconds() - cpu_before
        alive_during = worker.alive()
        own_redis.start()
        back_at = time.time()

        wait_until(lambda: sent.count() == LIMITER_BACKLOG, timeout=120, interval=0.5, what="every SMS sent")
    finally:
        worker.stop()

    requests = [request for request in fake_twilio.requests if request["To"] in set(phones)]
    arrivals = sorted(request["at"] for request in requests)
    # In the first second each worker process opens its connection to the provider, so its
    # first send arrives later after its token than the others do; the window counts from there.
    most_in_a_second = most_in_any_second([at for at in arrivals if at >= arrivals[0] + 1])
    # A send that had its token when Redis stopped may still arrive in the first moment after.
    during = sum(1 for at in arrivals if stopped_at + 1 < at < back_at)
    resumed_after = min(at for at in arrivals if at >= back_at) - back_at
    complaints = worker.log_path.read_text().count("rate limiter unavailable")
    attempts = sorted(set(Notification.objects.values_list("attempts", flat=True)))
    with capsys.disabled():
        print(
            f"\nrate limiter down {OUTAGE_SECONDS} s at {LIMIT_PER_SECOND}/s: {sent_before} sent before, "
            f"{during} sent while down, most in any 1 s window {most_in_a_second}, "
            f"worker CPU while down {cpu_during:.2f} s, {complaints} limiter log line(s), "
            f"first send {resumed_after:.1f} s after it returned, attempts per SMS {attempts}"
        )
    assert during == 0
    assert most_in_a_second <= LIMIT_PER_SECOND + 1
    assert alive_during
    assert cpu_during < OUTAGE_SECONDS / 4  # waiting, not spinning
    assert complaints <= 10
    assert sorted(request["To"] for request in requests) == sorted(phones)  # each once, none lost
    assert attempts == [1]  # waiting for the limiter used up no attempt
    assert not DeadLetter.objects.exists()


# --- a provider down for longer than the retries last ------------------------------------------

DOWN_BATCH = 10


def requeue_twice(ids: list[int], operator) -> int:
    """The operator's requeue, and a second click on it: the second finds nothing left to requeue."""
    first = dead_letters.dead_letters_requeue(ids=ids, by=operator)
    second = dead_letters.dead_letters_requeue(ids=ids, by=operator)
    assert second.requeued == 0
    return first.requeued


def test_sms_provider_answering_500_past_the_retries_goes_dead_then_a_requeue_delivers_each_once(
    fault_env, fake_twilio, client, capsys
):
    owner = UserFactory(username="provider-down-shop")
    phones = [f"+1602555{n:04d}" for n in range(DOWN_BATCH)]
    worker = Worker(name="provider-down", env=fault_env, queues="sms", concurrency=2).start()
    sms = Notification.objects.filter(channel="sms")
    try:
        fake_twilio.default_answer = 500
        for phone in phones:
            order_services.order_create(owner=owner, customer_name="Ada", customer_phone=phone, items=[order_line()])
        wait_until(lambda: sms.filter(status="dead").count() == DOWN_BATCH, timeout=90, what="every SMS dead")
        refused = sum(1 for request in fake_twilio.requests if request["To"] in set(phones))
        attempts = sorted(set(sms.values_list("attempts", flat=True)))
        letters = list(DeadLetter.objects.filter(status="dead").values_list("pk", flat=True))

        fake_twilio.default_answer = 201  # the provider is back
        client.force_login(UserFactory(username="provider-operator", is_staff=True, is_superuser=True))
        requeued_at = time.monotonic()
        for _ in range(2):  # the admin action, clicked twice
            response = client.post(
                "/admin/notifications/deadletter/", {"action": "requeue_selected", "_selected_action": letters}
            )
            assert response.status_code == 302
        wait_until(lambda: sms.filter(status="sent").count() == DOWN_BATCH, timeout=60, what="every SMS sent")
        recovered_in = time.monotonic() - requeued_at
    finally:
        fake_twilio.default_answer = 201
        worker.stop()

    delivered = [len(fake_twilio.accepted(phone)) for phone in phones]
    with capsys.disabled():
        print(
            f"\nSMS provider answering 500: {DOWN_BATCH} SMS dead after {attempts} attempt(s) each "
            f"({refused} requests refused), {len(letters)} dead letters; after a requeue clicked twice, "
            f"delivered per recipient {sorted(set(delivered))}, all sent in {recovered_in:.1f} s"
        )
    assert attempts == [MAX_RETRIES + 1]
    assert refused == DOWN_BATCH * (MAX_RETRIES + 1)
    assert len(letters) == DOWN_BATCH
    assert delivered == [1] * DOWN_BATCH
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"requeued"}


def test_smtp_server_down_past_the_retries_goes_dead_then_a_requeue_delivers_each_once(fault_env, fake_smtp, capsys):
    owner = UserFactory(username="smtp-down-shop")
    addresses = [f"smtp-down-{n:03d}@shop.example" for n in range(DOWN_BATCH)]
    worker = Worker(name="smtp-down", env=fault_env, queues="email", concurrency=2).start()
    emails = Notification.objects.filter(channel="email")
    try:
        fake_smtp.stop()  # connections are refused
        for address in addresses:
            order_services.order_create(owner=owner, customer_name="Ada", customer_email=address, items=[order_line()])
        wait_until(lambda: emails.filter(status="dead").count() == DOWN_BATCH, timeout=90, what="every email dead")
        attempts = sorted(set(emails.values_list("attempts", flat=True)))
        codes = sorted(set(emails.values_list("last_error_code", flat=True)))
        letters = list(DeadLetter.objects.filter(status="dead").values_list("pk", flat=True))

        fake_smtp.start()  # on the same port
        requeued_at = time.monotonic()
        requeued = requeue_twice(letters, UserFactory(username="smtp-operator", is_staff=True))
        wait_until(lambda: emails.filter(status="sent").count() == DOWN_BATCH, timeout=60, what="every email sent")
        recovered_in = time.monotonic() - requeued_at
    finally:
        if fake_smtp.controller is None:
            fake_smtp.start()
        worker.stop()

    delivered = [len(fake_smtp.delivered(address)) for address in addresses]
    with capsys.disabled():
        print(
            f"\nSMTP server down: {DOWN_BATCH} emails dead after {attempts} attempt(s) each ({codes}), "
            f"{len(letters)} dead letters; {requeued} requeued (a second requeue found none), delivered per "
            f"recipient {sorted(set(delivered))}, all sent in {recovered_in:.1f} s"
        )
    assert attempts == [MAX_RETRIES + 1]
    assert codes == ["network"]
    assert len(letters) == requeued == DOWN_BATCH
    assert delivered == [1] * DOWN_BATCH


# --- PostgreSQL restarted under load ------------------------------------------------------------

LOAD_ORDERS = 120
RESTART_AFTER_ORDERS = 40
DATABASE = "orderflow_restart"


@pytest.fixture
def own_postgres(worker_env):
    """A cluster of the test's own, migrated; stopped and removed whatever the test did."""
    cluster = PostgresCluster()
    try:
        cluster.create().start()
        cluster.create_database(DATABASE)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env={**worker_env, "DATABASE_URL": cluster.url(DATABASE)},
            check=True,
            timeout=120,
        )
        yield cluster
    finally:
        cluster.remove()


def notification_statuses(url: str) -> dict[str, int]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(f"SELECT status, count(*) FROM {Notification._meta.db_table} GROUP BY status")  # noqa: S608
        return dict(rows.fetchall())


def orders_placed(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM orders_order").fetchone()[0]


def test_workers_recover_by_themselves_when_postgresql_restarts_under_load(
    fault_env, own_postgres, fake_twilio, fake_smtp, capsys
):
    url = own_postgres.url(DATABASE)
    env = {**fault_env, "DATABASE_URL": url}
    worker = Worker(name="postgres-restart", env=env, queues="sms,email,notifications").start()
    load_log = worker.log_path.with_name("orderflow-test-order-load.log")
    with load_log.open("w") as output:
        load = subprocess.Popen(
            [sys.executable, "-m", "tests.notifications.order_load", "--orders", str(LOAD_ORDERS), "--pause", "0.02"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: orders_placed(url) >= RESTART_AFTER_ORDERS, timeout=60, what="the first orders")
        sent_before = notification_statuses(url).get("sent", 0)
        restart_started = time.monotonic()
        own_postgres.restart()
        restarted_in = time.monotonic() - restart_started
        load.wait(timeout=120)

        def all_sent() -> bool:
            publish("notifications.tasks.retry_failed_notifications", args=[])  # what beat does every 5 minutes
            return notification_statuses(url).get("sent", 0) == 2 * LOAD_ORDERS

        wait_until(all_sent, timeout=150, interval=2, what="every notification sent")
        recovered_in = time.monotonic() - restart_started
        worker_alive = worker.alive()
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
        worker.stop()

    figures = json.loads(load_log.read_text().strip().splitlines()[-1])
    phones = [f"+1971555{n:04d}" for n in range(LOAD_ORDERS)]
    sms = [request["To"] for request in fake_twilio.accepted() if request["To"] in set(phones)]
    mails = [len(fake_smtp.delivered(f"load-{n:04d}@shop.example")) for n in range(LOAD_ORDERS)]
    duplicates = len(sms) - len(set(sms)) + sum(count - 1 for count in mails)
    log = worker.log_path.read_text().splitlines()
    task_retries = sum(
        1 for line in log if "Retry in" in line and ("OperationalError" in line or "InterfaceError" in line)
    )
    writes_waited = sum(1 for line in log if "database error, writing again" in line)
    claims_waited = sum(1 for line in log if "database error, claiming again" in line)
    with capsys.disabled():
        print(
            f"\nPostgreSQL restarted under load: {figures['placed']} orders placed, {figures['refused']} refused "
            f"while it restarted ({restarted_in:.1f} s); {sent_before} of {2 * LOAD_ORDERS} sent before the "
            f"restart, all sent {recovered_in:.1f} s after it began by the same worker process; "
            f"{task_retries} send(s) retried on a database error, {claims_waited} claim(s) and "
            f"{writes_waited} outcome write(s) waiting for it, "
            f"{duplicates} duplicate(s)"
        )
    assert load.returncode == 0
    assert figures["placed"] == LOAD_ORDERS
    assert worker_alive
    assert sorted(set(sms)) == phones
    assert min(mails) == 1
    assert duplicates == 0


# --- PostgreSQL away longer than a worker writes an outcome -------------------------------------

AWAY_CUSTOMER = 900  # order_load's customer number: its own phone on the session's Twilio double
AWAY_PHONE = f"+1971555{AWAY_CUSTOMER:04d}"


def notification_row(url: str, phone: str) -> dict:
    with psycopg.connect(url, connect_timeout=5) as conn:
        cursor = conn.execute(
            f"SELECT status, attempts, provider_message_id FROM {Notification._meta.db_table}"  # noqa: S608
            " WHERE recipient = %s",
            [phone],
        )
        columns = [column.name for column in cursor.description]
        return dict(zip(columns, cursor.fetchone(), strict=True))


def test_a_send_whose_outcome_cannot_be_written_is_written_later_not_sent_again(
    fault_env, own_postgres, fake_twilio, capsys
):
    """PostgreSQL stops while Twilio takes the SMS and stays away past services.RECORD_RETRY_SECONDS:
    the send travels on with the task's retry and is written down when the database is back,
    long before the claim's lease (70 s here) would have it sent again."""
    url = own_postgres.url(DATABASE)
    worker = Worker(name="record-later", env={**fault_env, "DATABASE_URL": url}, queues="sms").start()
    stopped_at = []

    def stop_postgres_while_accepting(form):
        if form["To"] == AWAY_PHONE and not stopped_at:
            stopped_at.append(time.monotonic())
            own_postgres.stop()

    fake_twilio.before_accepting = stop_postgres_while_accepting
    try:
        subprocess.run(
            [sys.executable, "-m", "tests.notifications.order_load", "--orders", "1", "--first", str(AWAY_CUSTOMER)],
            cwd=ROOT,
            env={**fault_env, "DATABASE_URL": url},
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(lambda: stopped_at, timeout=30, what="the SMS to reach Twilio")
        # Away past the time a worker keeps writing an outcome (services.RECORD_RETRY_SECONDS).
        time.sleep(max(0.0, stopped_at[0] + services.RECORD_RETRY_SECONDS + 2 - time.monotonic()))
        away_for = time.monotonic() - stopped_at[0]
        own_postgres.start()
        wait_until(lambda: notification_row(url, AWAY_PHONE)["status"] == "sent", timeout=40, what="the SMS recorded")
        recorded_after = time.monotonic() - stopped_at[0]
        worker_alive = worker.alive()
    finally:
        fake_twilio.before_accepting = None
        worker.stop()

    requests = fake_twilio.received(AWAY_PHONE)
    row = notification_row(url, AWAY_PHONE)
    unrecorded = worker.log_path.read_text().count("notification.unrecorded")
    with capsys.disabled():
        print(
            f"\nPostgreSQL away {away_for:.1f} s from the moment Twilio took the SMS: recorded "
            f"{recorded_after:.1f} s after it stopped, carried by {unrecorded} task retry(ies); "
            f"{len(requests)} request(s) to Twilio"
        )
    assert len(requests) == 1
    # Written down as sent: neither the sweep nor a redelivery will send it again. Left claimed,
    # it would have gone out again once its lease ran out.
    assert row == {"status": "sent", "attempts": 1, "provider_message_id": requests[0]["sid"]}
    assert unrecorded >= 1  # written down by a later run of the task, not by the first one's own retries
    assert worker_alive
