"""Prometheus metrics.

Workers count what they do (sends, failures, latency, rate-limit waits). With
PROMETHEUS_MULTIPROC_DIR set, as it must be wherever several processes run (prefork
workers, gunicorn), each process writes its counts there and `/metrics` adds them up. The
state of things (notifications by status, dead letters, queue depths) is read from the
database and the broker when Prometheus scrapes; `orderflow_database_up` and
`orderflow_broker_up` say whether each answered.
"""

import os
import socket

from django.db import InterfaceError, OperationalError
from django.db.models import Count
from prometheus_client import Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily

from notifications import broker
from notifications.models import WAITING, Channel, DeadLetter, Notification


def process_identifier() -> str:
    """Names a process's file in PROMETHEUS_MULTIPROC_DIR. prometheus_client names it by PID, but
    under compose every container shares the one directory and numbers its own processes from 1:
    two processes of one PID wrote one file, and each overwrote the other's counts. The host name
    (a container's own) keeps them apart; no underscore, which separates the file name's parts."""
    return f"{socket.gethostname().replace('_', '-')}-{os.getpid()}"


if getattr(values.ValueClass, "_multiprocess", False):  # before any metric is made
    values.ValueClass = values.MultiProcessValue(process_identifier=process_identifier)

SENDS = Counter("orderflow_notification_sends", "Notifications accepted by their provider", ["channel"])
RECORDS_DEFERRED = Counter(
    "orderflow_notification_records_deferred",
    "Accepted sends the database could not record yet; their task writes them on its next run",
    ["channel"],
)
FAILURES = Counter(
    "orderflow_notification_failures",
    "Sends that failed, by error class (transient, permanent)",
    ["channel", "error_class"],
)
SEND_SECONDS = Histogram(
    "orderflow_notification_send_seconds",
    "Time the provider took to accept or refuse a send",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 90),  # an SMTP conversation may take 90 s
)
RATE_LIMIT_WAIT_SECONDS = Histogram(
    "orderflow_rate_limit_wait_seconds",
    "Time a send waited for a token from the global rate limiter",
    ["channel"],
    buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60),
)
CHANNEL_PAUSES = Counter(
    "orderflow_channel_pauses",
    "Times a provider's answer (too many requests, Retry-After) paused a channel for every worker",
    ["channel"],
)
SUPPRESSED = Counter(
    "orderflow_notifications_suppressed",
    "Notifications cancelled unsent: their provider had refused the recipient for good",
    ["channel"],
)
QUEUES = ("sms", "email", "notifications", "default")


class StateCollector:
    """Read at scrape time: what the database and the broker hold right now."""

    def collect(self):
        database_up = GaugeMetricFamily("orderflow_database_up", "1 when the database answered this scrape")
        try:
            # Read whole before any is yielded: with the database away, none of them, and the
            # processes' counters and the broker's queues are still served.
            from_database = list(self._database_state())
            database_up.add_metric([], 1)
        except (OperationalError, InterfaceError):
            from_database = []
            database_up.add_metric([], 0)
        yield from from_database
        yield database_up
        yield from self._broker_state()

    def _database_state(self):
        notifications = GaugeMetricFamily(
            "orderflow_notifications", "Notifications by channel and status", labels=["channel", "status"]
        )
        for row in Notification.objects.order_by().values("channel", "status").annotate(count=Count("id")):
            notifications.add_metric([row["channel"], row["status"]], row["count"])
        yield notifications

        # Pending ones, less these, are the ones the broker did not take: an alert on pending alone
        # would also fire for a backlog of status updates waiting their turn.
        waiting = GaugeMetricFamily(
            "orderflow_notifications_waiting_in_order",
            "Pending notifications waiting for an earlier one of their order on their channel",
            labels=["channel"],
        )
        rows = Notification.objects.filter(WAITING).order_by().values("channel").annotate(count=Count("id"))
        counts = {row["channel"]: row["count"] for row in rows}
        for channel in Channel.values:
            waiting.add_metric([channel], counts.get(channel, 0))
        yield waiting

        dead_letters = GaugeMetricFamily("orderflow_dead_letters", "Dead letters by status", labels=["status"])
        for row in DeadLetter.objects.order_by().values("status").annotate(count=Count("id")):
            dead_letters.add_metric([row["status"]], row["count"])
        yield dead_letters

    def _broker_state(self):
        depth = GaugeMetricFamily("orderflow_queue_depth", "Messages waiting in each broker queue", labels=["queue"])
        up = GaugeMetricFamily("orderflow_broker_up", "1 when the broker answered this scrape")
        try:
            for queue in QUEUES:
                depth.add_metric([queue], broker.queue_depth(queue))
            up.add_metric([], 1)
        except broker.BrokerUnavailable:
            up.add_metric([], 0)
        yield depth
        yield up
