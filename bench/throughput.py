"""Throughput with the limits lifted: SMS notifications per second from publish to `sent`, next to
a bare Celery no-op on the same worker, in one run.

One SMS worker with start_celery_worker's options (`--queue sms --concurrency 2`, as in the
Procfile: prefork, prefetch 1, acks_late), NOTIFICATIONS_SMS_RATE_LIMIT=1000/s and the Twilio
double answering at once. Each round runs, in rotating order, one batch of each on the sms queue:

- noop: bench.noop, which does nothing and keeps no result: Celery's ceiling here;
- noop+result: bench.noop_with_result, which stores its result (CELERY_RESULT_BACKEND): what
  a send task would cost if it kept one (they keep none; the attempt log is their record);
- pipeline: the outbox rows of SMS-only orders placed beforehand (untimed), handed to
  notifications.services.notifications_publish; timed from the first publish to the last
  notification `sent` (claim, global limiter, twilio library, record).

Printed: the rate of every batch, the medians, and pipeline / noop (goal: at least 50%).
With --without-provider the worker's SMS backend is the in-memory one: the same pipeline
without the HTTP call to Twilio, to see what the call itself costs.

The broker is Redis (database 10); ORDERFLOW_BENCH_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//
runs the same on RabbitMQ (its default vhost, which the tests use too: not while they run).
There a no-op batch ends when no message is ready, up to one running no-op per pool process
early (RabbitMQ does not tell a client how many are unacknowledged).

    .venv/bin/python bench/throughput.py [--messages 500] [--rounds 3] [--concurrency 2] [--without-provider]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # first: it sets Django up for the imports below

# isort: split

from django.db.models import Max

from notifications import services
from notifications.broker import publish
from notifications.models import Channel, Event, Notification, NotificationStatus

GOAL_SHARE_OF_CEILING = 0.5
LIFTED_LIMIT = "1000/s"
MODES = ("noop", "noop+result", "pipeline")
NOOP_TASKS = {"noop": "bench.noop", "noop+result": "bench.noop_with_result"}


def noop_rate(task_name: str, messages: int) -> float:
    """Publish `messages` no-ops and time them until the broker holds none (harness.wait_until_drained)."""
    started = time.monotonic()
    for number in range(messages):
        publish(task_name, args=[number], queue=Channel.SMS)
    finished = harness.wait_until_drained(Channel.SMS, timeout=120)
    return messages / (finished - started)


def pipeline_rate(owner, messages: int) -> float:
    """Write the outbox rows of `messages` SMS-only orders, then time them from publish to `sent`."""
    with harness.notifications_switched_off():
        orders = [harness.place_order(owner=owner) for _ in range(messages)]
    outbox = [
        (row.pk, row.channel)
        for order in orders
        for row in services.notifications_create(order=order, event=Event.PLACED, channels=[Channel.SMS])
    ]
    started = time.time()
    services.notifications_publish(notifications=outbox)
    batch = Notification.objects.filter(pk__in=[pk for pk, _ in outbox])
    # The rate ends at the last sent_at, not when this loop notices: polling rarely keeps its
    # queries from taking CPU from the workers being measured.
    harness.wait_until(
        lambda: batch.filter(status=NotificationStatus.SENT).count() == messages,
        timeout=180,
        interval=0.5,
        what=f"{messages} notifications to be sent",
    )
    last_sent = batch.aggregate(last=Max("sent_at"))["last"].timestamp()
    return messages / (last_sent - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500, help="messages per batch (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three batches (default 3)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes in the pool (default 2)")
    parser.add_argument(
        "--without-provider", action="store_true", help="send SMS to the in-memory backend instead of Twilio"
    )
    args = parser.parse_args()

    harness.prepare()
    owner = harness.bench_owner()
    rates = {mode: [] for mode in MODES}
    with harness.running_twilio() as twilio:
        env = harness.worker_env(
            twilio, NOTIFICATIONS_SMS_RATE_LIMIT=LIFTED_LIMIT, NOTIFICATIONS_EMAIL_RATE_LIMIT=LIFTED_LIMIT
        )
        if args.without_provider:
            env["SMS_BACKEND"] = "notifications.backends.sms.InMemoryBackend"
        worker = harness.Worker(name="throughput", env=env, queue=Channel.SMS, concurrency=args.concurrency)
        with harness.running_workers([worker]):
            # Warm the pool (connections to PostgreSQL, Redis and the Twilio double) outside the timed batches.
            noop_rate(NOOP_TASKS["noop"], 50)
            pipeline_rate(owner, 20)
            for number in range(args.rounds):
                for mode in MODES[number % 3 :] + MODES[: number % 3]:
                    if mode == "pipeline":
                        rates[mode].append(pipeline_rate(owner, args.messages))
                    else:
                        rates[mode].append(noop_rate(NOOP_TASKS[mode], args.messages))
        requests = len(twilio.requests)
    harness.empty_broker_and_limiter()

    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    ceiling = medians["noop"]
    harness.print_table(
        f"Throughput: {args.messages} messages per batch, 1 worker x concurrency {args.concurrency}, "
        f"broker {harness.BROKER_URL.partition(':')[0]}, SMS limit {LIFTED_LIMIT}"
        f"{', no provider (in-memory backend)' if args.without_provider else ''}",
        ["", *(f"round {number + 1}" for number in range(args.rounds)), "median", "/ noop"],
        [
            [
                f"{mode}, per s",
                *(f"{rate:.0f}" for rate in rates[mode]),
                f"{medians[mode]:.0f}",
                f"{medians[mode] / ceiling:.0%}",
            ]
            for mode in MODES
        ],
    )
    share = medians["pipeline"] / ceiling
    print(
        f"\n  pipeline / bare noop: {share:.2f} (goal >= {GOAL_SHARE_OF_CEILING}): "
        f"{'yes' if share >= GOAL_SHARE_OF_CEILING else 'NO'}"
    )
    print(f"  requests reaching Twilio: {requests} (pipeline notifications: {Notification.objects.count()})")


if __name__ == "__main__":
    main()
