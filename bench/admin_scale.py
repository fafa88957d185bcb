"""The operator's console and the periodic work at production scale, on a database of its own.

On 1,000,000 notifications, their attempts and 100,000 dead letters (bench/scale_seed.py), it
measures, in this order:

1. admin: the notification and dead-letter changelists as a logged-in superuser sees them,
   unfiltered, with every choice of every list_filter (the query strings are the admin's own
   links) and searched; the by-cause page and one detail page of each. Median of 3 GETs after
   one warm-up, in ms; over 500 ms is marked SLOW, and the slowest SQL statement of the warm-up
   (CaptureQueriesContext) is shown with EXPLAIN ANALYZE, once per statement shape.
2. sweep: 100,000 notifications left pending past stale_after, re-published by
   notifications_sweep(); every id must be in the sms or email queue exactly once, and a second
   sweep must publish nothing.
3. cleanup: 1,000,000 finished notifications older than the retention (a cohort written next to
   the seed, with the lowest ids as old rows have) deleted by notifications_cleanup() in a
   subprocess: rows deleted, wall time, peak RSS (goal < 200 MB; VmHWM, as Linux starts a child's
   ru_maxrss at its parent's RSS, which is printed too) and the longest transaction (goal <= 1 s),
   timed around each of the cleanup's transaction.atomic blocks in that process and cross-checked
   by sampling pg_locks from here every 50 ms.

The seed is reused when it is whole and younger than the retention (the cohorts are removed as
their phase ends); --reseed writes it again (about two minutes).

    .venv/bin/python bench/admin_scale.py [--reseed] [--phase admin --phase sweep --phase cleanup]
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from unittest import mock
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import scale_seed  # first: it points Django at the scale resources and sets it up

# isort: split

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications import broker, sweeps
from notifications.dead_letters import dead_letter_groups
from notifications.models import FINISHED_STATUSES, DeadLetter, DeadLetterStatus, Notification
from notifications.services import CHANNEL_TASKS
from orderflow.celery import app
from orders.models import Order

PHASES = ("admin", "sweep", "cleanup")
SLOW_MS = 500
RUNS = 3
NOTIFICATIONS_URL = "/admin/notifications/notification/"
DEAD_LETTERS_URL = "/admin/notifications/deadletter/"
BY_CAUSE_URL = "/admin/notifications/deadletter/by-cause/"
CHANNEL_QUEUES = ("sms", "email")
ALL_QUEUES = ("sms", "email", "notifications", "default")
DRAIN_CHUNK = 10_000  # messages read from a queue per LRANGE
CLEANUP_APP_NAME = "orderflow-scale-cleanup"  # how the parent finds the subprocess in pg_stat_activity
LOCK_SAMPLE_SECONDS = 0.05
PEAK_RSS_MB = 200
LONGEST_MS = 1000
# Held by a DELETE on the notification table until its transaction ends.
LONGEST_LOCK_SQL = """
SELECT coalesce(max(extract(epoch FROM clock_timestamp() - a.xact_start)), 0)
FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE a.application_name = %s AND l.mode = 'RowExclusiveLock'
  AND l.relation = 'notifications_notification'::regclass
"""


def main() -> None:
    options = parse_arguments()
    if options.cleanup_child:
        print(json.dumps(cleanup_in_this_process()))
        return
    phases = options.phase or PHASES
    seed_ready(reseed=options.reseed)
    if "admin" in phases:
        admin_report()
    if "sweep" in phases:
        sweep_report()
    if "cleanup" in phases:
        cleanup_report()


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reseed", action="store_true", help="write the seed again even if it is whole")
    parser.add_argument("--phase", action="append", choices=PHASES, help="run only this phase (repeatable)")
    parser.add_argument("--cleanup-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def seed_ready(*, reseed: bool) -> None:
    scale_seed.database_prepare()
    owner = scale_seed.operator()
    if reseed or not scale_seed.seed_is_complete():
        print("writing the seed ...", flush=True)
        started = time.perf_counter()
        scale_seed.seed_write(owner_id=owner.pk)
        print(f"seed written in {time.perf_counter() - started:.0f} s", flush=True)
    else:
        print("reusing the seed (whole, and younger than the retention; --reseed writes it again)", flush=True)
    started = time.perf_counter()
    # As autovacuum leaves a table: visibility map set, dead rows of earlier runs gone, statistics fresh.
    scale_seed.vacuum_analyze()
    print(f"VACUUM ANALYZE in {time.perf_counter() - started:.0f} s", flush=True)
    counts = scale_seed.seed_counts()
    print("seed: " + ", ".join(f"{count:,} {name}" for name, count in counts.items()), flush=True)


# --- 1. admin --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    label: str
    url: str


@dataclass(frozen=True)
class Timing:
    page: Page
    median_ms: float
    queries: list[dict]  # what the warm-up GET ran: SQL with its values, and seconds


def admin_report() -> None:
    client = Client()
    client.force_login(scale_seed.operator())
    sample = admin_samples()
    pages = notification_pages(client, sample) + dead_letter_pages(client, sample)
    print(f"\n1. ADMIN AT SCALE: median of {RUNS} GETs after 1 warm-up, as a superuser ({len(pages)} pages)")
    print(f"{'page':<72} {'ms':>8}")
    slow = []
    for page in pages:
        timing = page_timing(client, page)
        mark = "  SLOW" if timing.median_ms > SLOW_MS else ""
        print(f"{page.label:<72} {timing.median_ms:>8.1f}{mark}", flush=True)
        if mark:
            slow.append(timing)
    print(f"{len(slow)} of {len(pages)} pages over {SLOW_MS} ms")
    slowest_queries_explain(slow)


def notification_pages(client: Client, sample: dict) -> list[Page]:
    return [
        Page("notifications: unfiltered", NOTIFICATIONS_URL),
        *filter_pages(client, NOTIFICATIONS_URL, "notifications"),
        search_page("notifications", NOTIFICATIONS_URL, "order id", sample["order_id"]),
        search_page("notifications", NOTIFICATIONS_URL, "phone", sample["phone"]),
        search_page("notifications", NOTIFICATIONS_URL, "email", sample["email"]),
        Page(
            f"notification detail ({sample['notification_id']})",
            change_url(NOTIFICATIONS_URL, sample["notification_id"]),
        ),
    ]


def dead_letter_pages(client: Client, sample: dict) -> list[Page]:
    return [
        Page("dead letters: unfiltered", DEAD_LETTERS_URL),
        *filter_pages(client, DEAD_LETTERS_URL, "dead letters"),
        Page("dead letters: largest cause (link of the by-cause page)", DEAD_LETTERS_URL + sample["cause_query"]),
        search_page("dead letters", DEAD_LETTERS_URL, "order id", sample["letter_order_id"]),
        search_page("dead letters", DEAD_LETTERS_URL, "recipient", sample["letter_recipient"]),
        search_page("dead letters", DEAD_LETTERS_URL, "error word", "unsubscribed"),
        Page("dead letters by cause", BY_CAUSE_URL),
        Page(
            f"dead letter detail ({sample['dead_letter_id']})", change_url(DEAD_LETTERS_URL, sample["dead_letter_id"])
        ),
    ]


def admin_samples() -> dict:
    """What an operator would look up: an order and its customer, an open dead letter, the largest cause."""
    order = Order.objects.get(pk=scale_seed.ORDER_ID_BASE + scale_seed.ORDERS // 2)
    letter = (
        DeadLetter.objects.filter(status=DeadLetterStatus.DEAD, notification__isnull=False)
        .select_related("notification")
        .order_by("pk")[scale_seed.DEAD_LETTERS // 2]
    )
    largest_cause = dead_letter_groups()[0]["fingerprint"]
    return {
        "order_id": order.pk,
        "phone": order.customer_phone,
        "email": order.customer_email,
        "notification_id": letter.notification_id,
        "dead_letter_id": letter.pk,
        "letter_order_id": letter.notification.order_id,
        "letter_recipient": letter.notification.recipient,
        "cause_query": "?" + urlencode({"status__exact": DeadLetterStatus.DEAD, "fingerprint": largest_cause}),
    }


def change_url(changelist_url: str, pk: int) -> str:
    return f"{changelist_url}{pk}/change/"


def search_page(name: str, changelist_url: str, what: str, term) -> Page:
    return Page(f"{name}: search {what} {term}", f"{changelist_url}?{urlencode({'q': term})}")


def filter_pages(client: Client, changelist_url: str, name: str) -> list[Page]:
    """One page per choice of each list_filter, with the query string of the admin's own link."""
    changelist = client.get(changelist_url).context_data["cl"]
    pages = []
    for spec in changelist.filter_specs:
        for choice in spec.choices(changelist):
            if not choice["selected"]:  # the selected one is "All" / "Any date": the unfiltered page
                pages.append(
                    Page(f"{name}: {spec.title} = {choice['display']}", changelist_url + choice["query_string"])
                )
    return pages


def page_timing(client: Client, page: Page) -> Timing:
    with CaptureQueriesContext(connection) as warm_up:
        timed_get(client, page.url)
    queries = list(warm_up.captured_queries)  # now: the next request empties connection.queries
    runs = [timed_get(client, page.url) for _ in range(RUNS)]
    return Timing(page, statistics.median(runs), queries)


def timed_get(client: Client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    return elapsed_ms


def slowest_queries_explain(slow: list[Timing]) -> None:
    """The slowest statement of each slow page, with EXPLAIN ANALYZE once per statement shape."""
    explained = {}  # statement with its values taken out -> the page it was explained for
    for timing in slow:
        queries = timing.queries
        slowest = max(queries, key=lambda query: float(query["time"]))
        in_sql_ms = sum(float(query["time"]) for query in queries) * 1000
        slowest_ms = float(slowest["time"]) * 1000
        print(f"\n--- SLOW: {timing.page.label}  {timing.page.url}")
        print(f"{len(queries)} queries, {in_sql_ms:.0f} ms in SQL; the slowest took {slowest_ms:.0f} ms")
        shape = statement_shape(slowest["sql"])
        if shape in explained:
            print(f"the same statement as for '{explained[shape]}', with other values")
            continue
        explained[shape] = timing.page.label
        print(slowest["sql"])
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + slowest["sql"])
            print("\n".join(row[0] for row in cursor.fetchall()))


def statement_shape(sql: str) -> str:
    return re.sub(r"'(?:[^']|'')*'|\b\d+\b", "?", sql)


# --- 2. sweep --------------------------------------------------------------------------------


def sweep_report() -> None:
    print(f"\n2. SWEEP AT SCALE: notifications_sweep() with {scale_seed.SWEEP_COHORT:,} notifications left pending")
    written = scale_seed.sweep_cohort_write()
    due = Notification.objects.filter(pk__gt=scale_seed.SEED_LAST_NOTIFICATION_ID)
    expected = dict(due.values_list("pk", "channel"))
    queues_purge()
    row("due", f"{written:,} pending past stale_after; broker queues purged, depth {queues_depth()}")
    try:
        started = time.perf_counter()
        first = sweeps.notifications_sweep()
        row("first sweep", f"returned {first}", started)
        depth = queues_depth()
        total = sum(depth.values())
        row("queue depth after it", f"{depth}, total {total:,}", goal=(total == written, f"= {written:,}"))
        started = time.perf_counter()
        delivered = queues_drain()
        row(
            "messages drained",
            ", ".join(f"{queue} {len(messages):,}" for queue, messages in delivered.items()),
            started,
        )
        exactly_once_report(expected, delivered)
        second = sweeps.notifications_sweep()
        depth = queues_depth()
        row("second sweep", f"returned {second}", goal=(not any(second.values()), "publishes 0"))
        row("queue depth after it", f"{depth}", goal=(not any(depth.values()), "0"))
    finally:
        scale_seed.sweep_cohort_delete()
        queues_purge()


def exactly_once_report(expected: dict[int, str], delivered: dict[str, list[tuple[int, str]]]) -> None:
    seen = Counter(pk for messages in delivered.values() for pk, _ in messages)
    duplicated = sum(1 for count in seen.values() if count > 1)
    missing = len(expected.keys() - seen.keys())
    not_due = len(seen.keys() - expected.keys())
    misrouted = sum(
        1
        for queue, messages in delivered.items()
        for pk, task_name in messages
        if expected.get(pk, queue) != queue or task_name != CHANNEL_TASKS[queue]
    )
    drained = sum(len(messages) for messages in delivered.values())
    exact = drained == len(expected) and not (duplicated or missing or not_due or misrouted)
    row("distinct notification ids", f"{len(seen):,} of {len(expected):,} due")
    row("published twice or more / missing", f"{duplicated:,} / {missing:,}")
    row("not due but published / wrong queue or task", f"{not_due:,} / {misrouted:,}")
    row("every due notification exactly once", "yes" if exact else "NO", goal=(exact, "yes"))


def queues_depth() -> dict[str, int]:
    return {queue: broker.queue_depth(queue) for queue in CHANNEL_QUEUES}


def queues_purge() -> None:
    with app.connection_for_write() as broker_connection:
        for queue in ALL_QUEUES:
            broker_connection.default_channel.queue_purge(queue)


def queues_drain() -> dict[str, list[tuple[int, str]]]:
    """Take every message off the channel queues: (notification id, task name) per message."""
    delivered = {}
    with app.connection_for_write() as broker_connection:
        channel = broker_connection.default_channel
        for queue in CHANNEL_QUEUES:
            messages = queue_messages(channel, queue)
            delivered[queue] = [(message.decode()[0][0], message.headers["task"]) for message in messages]
            channel.queue_purge(queue)
    return delivered


def queue_messages(channel, queue: str):
    """The messages waiting in a queue, read and decoded by kombu, the queue left as it is.

    LRANGE, DRAIN_CHUNK at a time, as the bench broker is Redis: basic_get costs half a
    millisecond a message here.
    """
    start = 0
    while raw_messages := channel.client.lrange(queue, start, start + DRAIN_CHUNK - 1):
        start += len(raw_messages)
        for raw in raw_messages:
            yield channel.Message(json.loads(raw), channel=channel)


# --- 3. cleanup ------------------------------------------------------------------------------


def cleanup_report() -> None:
    print(f"\n3. CLEANUP AT SCALE: notifications_cleanup() in a subprocess, retention {retention_days()} days")
    started = time.perf_counter()
    written = scale_seed.cleanup_cohort_write()
    row("cohort written", f"{written:,} finished notifications older than the retention, with their attempts", started)
    row("eligible by the cleanup's own rule", f"{cleanup_eligible():,}")
    child, longest_lock_s = cleanup_subprocess()
    cleanup_figures(child, longest_lock_s)
    row("left after the cleanup", ", ".join(f"{count:,} {name}" for name, count in scale_seed.seed_counts().items()))
    print(
        "longest transaction: each transaction.atomic block of notifications.sweeps timed from BEGIN to COMMIT\n"
        "inside the subprocess; cross-check: the age of the subprocess's transaction while it holds\n"
        "RowExclusiveLock on notifications_notification, sampled every 50 ms from pg_locks + pg_stat_activity"
    )


def cleanup_figures(child: dict, longest_lock_s: float) -> None:
    peak_mb, longest_ms = child["peak_rss_mb"], child["longest_transaction_s"] * 1000
    median_ms, p99_ms = child["median_transaction_s"] * 1000, child["p99_transaction_s"] * 1000
    row("rows deleted", ", ".join(f"{what.replace('_', ' ')} {count:,}" for what, count in child["deleted"].items()))
    row("wall time of notifications_cleanup()", f"{child['wall_s']:.1f} s, {child['transactions']:,} transactions")
    row("peak RSS of the subprocess (VmHWM)", f"{peak_mb:.0f} MB", goal=(peak_mb < PEAK_RSS_MB, f"< {PEAK_RSS_MB} MB"))
    row("  its ru_maxrss (counts the parent's RSS)", f"{child['ru_maxrss_mb']:.0f} MB")
    row(
        "longest transaction (timed atomic)",
        f"{longest_ms:.0f} ms",
        goal=(longest_ms <= LONGEST_MS, f"<= {LONGEST_MS} ms"),
    )
    row("  median / p99 transaction", f"{median_ms:.0f} / {p99_ms:.0f} ms")
    row("  outside transactions (finding ids)", f"{child['outside_transactions_s']:.1f} s")
    row("longest lock held (pg_locks sampling)", f"{longest_lock_s * 1000:.0f} ms")


def retention_days() -> int:
    return settings.NOTIFICATIONS_RETENTION_DAYS


def cleanup_eligible() -> int:
    """The rows notifications_cleanup() is meant to delete, counted by its own rule."""
    cutoff = timezone.now() - timedelta(days=retention_days())
    return (
        Notification.objects.filter(status__in=FINISHED_STATUSES, updated_at__lt=cutoff)
        .exclude(dead_letters__status=DeadLetterStatus.DEAD)
        .count()
    )


def cleanup_subprocess() -> tuple[dict, float]:
    """Run the cleanup in a process of its own; sample its longest lock on the table meanwhile."""
    environment = {**os.environ, "PGAPPNAME": CLEANUP_APP_NAME}
    command = [sys.executable, str(Path(__file__).resolve()), "--cleanup-child"]
    longest_lock_s = 0.0
    with psycopg.connect(f"{scale_seed.POSTGRES}/{scale_seed.DATABASE_NAME}", autocommit=True) as sampler:
        child = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)  # noqa: S603
        while child.poll() is None:
            held = sampler.execute(LONGEST_LOCK_SQL, [CLEANUP_APP_NAME]).fetchone()[0]
            longest_lock_s = max(longest_lock_s, float(held))
            time.sleep(LOCK_SAMPLE_SECONDS)
    output = child.stdout.read()
    if child.returncode != 0:
        raise RuntimeError(f"the cleanup subprocess failed with exit code {child.returncode}")
    return json.loads(output.strip().splitlines()[-1]), longest_lock_s


def cleanup_in_this_process() -> dict:
    """The subprocess: notifications_cleanup() with each of its transactions timed."""
    durations = []
    started = time.perf_counter()
    with mock.patch.object(sweeps, "transaction", SimpleNamespace(atomic=timed_atomic(durations))):
        deleted = sweeps.notifications_cleanup()
    wall_s = time.perf_counter() - started
    ordered = sorted(durations) or [0.0]
    return {
        "deleted": deleted,
        "wall_s": wall_s,
        "transactions": len(durations),
        "longest_transaction_s": ordered[-1],
        "median_transaction_s": statistics.median(ordered),
        "p99_transaction_s": ordered[int(len(ordered) * 0.99)],
        "outside_transactions_s": wall_s - sum(durations),
        "peak_rss_mb": own_peak_rss_mb(),
        # Linux keeps ru_maxrss across exec: it starts at the parent's RSS when the child was spawned.
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }


def own_peak_rss_mb() -> float:
    """The high-water mark of this process image's resident memory (VmHWM, reset by exec)."""
    status = Path("/proc/self/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) / 1024


def timed_atomic(durations: list[float]):
    """transaction.atomic that appends how long each block held its transaction (BEGIN to COMMIT)."""

    @contextmanager
    def atomic(*args, **kwargs):
        started = time.perf_counter()
        try:
            with transaction.atomic(*args, **kwargs):
                yield
        finally:
            durations.append(time.perf_counter() - started)

    return atomic


def row(label: str, value: str, started: float | None = None, *, goal: tuple[bool, str] | None = None) -> None:
    took = f" ({time.perf_counter() - started:.0f} s)" if started is not None else ""
    verdict = f"  goal {goal[1]}: {'met' if goal[0] else 'MISSED'}" if goal else ""
    print(f"{label:<44} {value}{took}{verdict}", flush=True)


if __name__ == "__main__":
    main()
