"""Rate-limit accuracy: the global SMS limit against Celery's own per-worker `rate_limit`.

The same three SMS workers (concurrency 1 each) work through a backlog twice in one run:

- global: SMS-only orders placed through orders.services, published by the notifications
  receivers; each send_sms_notification waits for a token of NOTIFICATIONS_SMS_RATE_LIMIT,
  shared through Redis;
- celery: as many bench.sms_celery_rate_limited messages on the same queue, each sending through
  the same SMS backend, limited by Celery's task `rate_limit` set to the same rate.

The Twilio double notes when each request arrives. Printed per mode: the most sends in any
window of one period (the global limit must hold it to limit + 1), also leaving out the first
period, in which every worker makes its first send (and opens its connection to Twilio); the
most in any window of the limit spread over its period (60/m: one a second; the global limit
must hold it to that + 1); and the steady rate after the first of those windows as a share of the
limit (goal: at least 95%).

    .venv/bin/python bench/ratelimit.py [--rate 5/s] [--messages 300] [--workers 3]
"""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # first: it sets Django up for the imports below

# isort: split

from django.db.models import Count

from notifications.broker import publish
from notifications.models import Channel, Notification, NotificationStatus
from notifications.ratelimit import limit_window
from orderflow.configuration import Rate, parse_rate

GOAL_SHARE_OF_LIMIT = 0.95


def most_in_any_window(times: list[float], period: float) -> int:
    """The largest number of sorted `times` inside any half-open window [t, t + period)."""
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= period:
            first += 1
        most = max(most, last - first + 1)
    return most


def steady_rate(times: list[float], window: float) -> float:
    """Sends per second over the whole windows after the first one.

    A moving window lets a burst of its size through at the start and then repeats the burst's
    shape every window, so only whole windows give an unbiased rate. The window is the limit
    spread over its period (limit_window): 60/m has one of a second.
    """
    start = times[0] + window
    windows = int((times[-1] - start) // window)
    if windows < 1:
        raise ValueError("too few sends for a steady rate: raise --messages")
    end = start + windows * window
    return sum(start <= moment < end for moment in times) / (end - start)


def after_first_period(times: list[float], period: float) -> list[float]:
    return [moment for moment in times if moment >= times[0] + period]


@dataclass(frozen=True)
class Figures:
    most_in_window: int
    most_in_window_warm: int  # leaving out the first period, when each worker sends its first SMS
    most_in_spread_window: int  # in any window of the limit spread over its period (limit_window)
    steady_rate: float
    share_of_limit: float

    @classmethod
    def of(cls, times: list[float], rate: Rate) -> "Figures":
        period, window = rate.period_seconds, limit_window(rate).get_expiry()
        achieved = steady_rate(times, window)
        return cls(
            most_in_window=most_in_any_window(times, period),
            most_in_window_warm=most_in_any_window(after_first_period(times, period), period),
            most_in_spread_window=most_in_any_window(times, window),
            steady_rate=achieved,
            share_of_limit=achieved / rate.per_second,
        )


def sends_under_global_limit(*, twilio: harness.TimedTwilio, messages: int, rate: Rate) -> list[float]:
    sent = Notification.objects.filter(channel=Channel.SMS, status=NotificationStatus.SENT)
    harness.wait_until(
        lambda: sent.count() >= messages,
        timeout=messages / rate.per_second * 1.5 + 60,
        interval=0.5,
        what=f"{messages} SMS notifications to be sent",
    )
    return twilio.arrivals_since(0)


def sends_under_celery_limit(*, twilio: harness.TimedTwilio, messages: int, rate: Rate, workers: int) -> list[float]:
    mark = len(twilio.arrivals)
    for number in range(messages):
        publish(
            "bench.sms_celery_rate_limited",
            args=[harness.CUSTOMER_PHONE, f"bench message {number}"],
            queue=Channel.SMS,
        )
    harness.wait_until(
        lambda: len(twilio.arrivals) - mark >= messages,
        timeout=messages / (rate.per_second * workers) * 3 + 60,
        interval=0.5,
        what=f"{messages} Celery-limited SMS to reach Twilio",
    )
    return twilio.arrivals_since(mark)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="5/s", help="the limit, in Celery's syntax (default 5/s)")
    parser.add_argument("--messages", type=int, default=300, help="SMS per mode (default 300)")
    parser.add_argument("--workers", type=int, default=3, help="SMS worker processes, concurrency 1 each")
    args = parser.parse_args()
    rate = parse_rate("--rate", args.rate)
    period = rate.period_seconds

    harness.prepare()
    owner = harness.bench_owner()
    with harness.running_twilio() as twilio:
        # The backlog first: every order's SMS is published when its transaction commits.
        for _ in range(args.messages):
            harness.place_order(owner=owner)
        env = harness.worker_env(twilio, NOTIFICATIONS_SMS_RATE_LIMIT=str(rate))
        workers = [
            harness.Worker(name=f"ratelimit-{number}", env=env, queue=Channel.SMS, concurrency=1)
            for number in range(1, args.workers + 1)
        ]
        with harness.running_workers(workers):
            started = time.monotonic()
            global_times = sends_under_global_limit(twilio=twilio, messages=args.messages, rate=rate)
            global_seconds = time.monotonic() - started
            started = time.monotonic()
            celery_times = sends_under_celery_limit(
                twilio=twilio, messages=args.messages, rate=rate, workers=args.workers
            )
            celery_seconds = time.monotonic() - started
    harness.empty_broker_and_limiter()

    figures = {mode: Figures.of(times, rate) for mode, times in (("global", global_times), ("celery", celery_times))}
    glob, celery = figures["global"], figures["celery"]
    spread = limit_window(rate)
    harness.print_table(
        f"Rate-limit accuracy: {args.messages} SMS per mode, {args.workers} workers x concurrency 1, limit {rate}",
        ["", "global limit (Redis)", "Celery rate_limit"],
        [
            ["requests reaching Twilio", len(global_times), len(celery_times)],
            [f"most in any {period} s window", glob.most_in_window, celery.most_in_window],
            ["  the same after the first period", glob.most_in_window_warm, celery.most_in_window_warm],
            ["  allowed (limit + 1)", rate.count + 1, rate.count + 1],
            [
                f"most in any {spread.get_expiry()} s window",
                glob.most_in_spread_window,
                celery.most_in_spread_window,
            ],
            [f"  allowed ({spread.amount} + 1, the limit spread)", spread.amount + 1, spread.amount + 1],
            ["steady rate, sends/s", f"{glob.steady_rate:.2f}", f"{celery.steady_rate:.2f}"],
            ["steady rate / limit", f"{glob.share_of_limit:.1%}", f"{celery.share_of_limit:.1%}"],
            ["backlog took, s", f"{global_seconds:.1f}", f"{celery_seconds:.1f}"],
        ],
    )
    held = glob.most_in_window <= rate.count + 1
    print(f"\n  global: most in a window {glob.most_in_window} <= {rate.count + 1}: {'yes' if held else 'NO'}")
    spread_held = glob.most_in_spread_window <= spread.amount + 1
    print(
        f"  global: most in a {spread.get_expiry()} s window {glob.most_in_spread_window} <= {spread.amount + 1}:"
        f" {'yes' if spread_held else 'NO'}"
    )
    reached = glob.share_of_limit >= GOAL_SHARE_OF_LIMIT
    print(
        f"  global: steady rate {glob.share_of_limit:.1%} of the limit, "
        f"goal >= {GOAL_SHARE_OF_LIMIT:.0%}: {'yes' if reached else 'NO'}"
    )
    print(f"  celery: lets {celery.share_of_limit:.2f}x the limit through ({args.workers} workers)")
    statuses = Notification.objects.order_by("status").values("status").annotate(count=Count("pk"))
    counts = ", ".join(f"{row['count']} {row['status']}" for row in statuses)
    print(f"  notifications after the run: {counts}")


if __name__ == "__main__":
    main()
