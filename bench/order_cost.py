"""Cost of placing an order with notifications on, against the same create with them off.

On: the notifications receivers write the outbox rows (SMS and email) in the order's
transaction and publish both send tasks to the bench broker (Redis) when it commits. Off: the
receivers are disconnected by their dispatch_uids. One process and no worker: the messages pile
up in the bench broker, which is emptied at the end. The modes alternate in rounds (on/off,
then off/on) to cancel drift, through orders.services.order_create and through the API (DRF
test client with a token).

Printed: per-order medians per path and mode, on / off (goal: at most 1.3), then where the
extra time of an order goes: its queries, and the time in each step the receivers add.

    .venv/bin/python bench/order_cost.py [--rounds 10] [--orders 25]
"""

import argparse
import statistics
import sys
import time
from collections import defaultdict
from contextlib import ExitStack, nullcontext
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # first: it sets Django up for the imports below

# isort: split

from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from notifications import broker, services

GOAL_RATIO = 1.3
MODES = ("on", "off")
# Steps the receivers add to an order, as (module, function, label); nested steps are indented.
STEPS = (
    (services, "notifications_create", "outbox rows, in the transaction"),
    (services, "render_notification", "  of which rendering the texts"),
    (services, "_publish", "publish, after the commit"),
    (broker, "publish_many", "  of which broker.publish_many (2 messages)"),
)


def notifications(mode: str):
    return harness.notifications_switched_off() if mode == "off" else nullcontext()


class Placer:
    """Places one SMS + email order through the service or the API, with notifications on or off."""

    def __init__(self, owner):
        self.owner = owner
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=owner)[0].key}")
        self.payload = {
            "customer_name": "Ada Lovelace",
            "customer_email": harness.CUSTOMER_EMAIL,
            "customer_phone": harness.CUSTOMER_PHONE,
            "items": [{"sku": "TEA-1", "name": "Green tea", "quantity": 2, "unit_price": "4.50"}],
        }

    def place(self, path: str) -> None:
        if path == "service":
            harness.place_order(owner=self.owner, phone=harness.CUSTOMER_PHONE, email=harness.CUSTOMER_EMAIL)
            return
        response = self.client.post("/api/orders/", self.payload, format="json")
        if response.status_code != 201:
            raise RuntimeError(f"the API answered {response.status_code}: {response.content[:300]!r}")

    def timed(self, path: str, mode: str) -> float:
        with notifications(mode):
            started = time.perf_counter()
            self.place(path)
            return time.perf_counter() - started


def measure(placer: Placer, *, rounds: int, orders: int) -> dict[tuple[str, str], list[float]]:
    """Seconds per order for each (path, mode), the modes alternating in every round."""
    seconds = defaultdict(list)
    for number in range(rounds):
        for path in ("service", "api"):
            for mode in MODES if number % 2 == 0 else MODES[::-1]:
                seconds[path, mode].extend(placer.timed(path, mode) for _ in range(orders))
    return seconds


def queries_of_one_order(placer: Placer, mode: str) -> list[str]:
    with notifications(mode), CaptureQueriesContext(connection) as captured:
        placer.place("service")
    return [query["sql"] for query in captured.captured_queries]


class QueryCounter:
    """A database execute wrapper that counts the queries run through it."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def step_profile(placer: Placer, orders: int) -> dict[str, tuple[float, float]]:
    """Medians per order (ms, SQL statements) of the whole order on and off, and of each step the
    receivers add; through the service, off and on alternating."""
    seconds = defaultdict(list)  # label -> seconds per order
    queries = defaultdict(int)  # label -> queries over all orders
    counter = QueryCounter()

    def timed(function, label):
        def wrapper(*args, **kwargs):
            before, started = counter.count, time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label][-1] += time.perf_counter() - started
                queries[label] += counter.count - before

        return wrapper

    with ExitStack() as patches, connection.execute_wrapper(counter):
        for module, name, label in STEPS:
            patches.enter_context(mock.patch.object(module, name, timed(getattr(module, name), label)))
        for _ in range(orders):
            for mode in MODES:
                whole = f"the whole order, notifications {mode}"
                for label in (whole, *(label for _, _, label in STEPS)) if mode == "on" else (whole,):
                    seconds[label].append(0.0)
                with notifications(mode):
                    timed(placer.place, whole)("service")
    return {label: (statistics.median(values) * 1000, queries[label] / orders) for label, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of on/off per path (default 10)")
    parser.add_argument("--orders", type=int, default=25, help="orders per mode in a round (default 25)")
    args = parser.parse_args()

    harness.prepare()
    placer = Placer(harness.bench_owner())
    measure(placer, rounds=2, orders=10)  # warm up: imports, template loading, broker connection
    seconds = measure(placer, rounds=args.rounds, orders=args.orders)
    queries = {mode: queries_of_one_order(placer, mode) for mode in MODES}
    steps = step_profile(placer, args.orders * 2)
    harness.empty_broker_and_limiter()

    print_ratios(seconds, title=f"Order cost: {args.rounds} rounds x {args.orders} orders per mode and path")
    print_breakdown(steps, queries, title=f"Where the extra time goes: {args.orders * 2} orders per mode, via service")


def print_ratios(seconds: dict[tuple[str, str], list[float]], *, title: str) -> None:
    ms = {key: statistics.median(values) * 1000 for key, values in seconds.items()}
    harness.print_table(
        f"{title}, SMS + email, broker {harness.BROKER_URL}",
        ["median", "on, ms/order", "off, ms/order", "on / off", "on - off, ms"],
        [
            [
                f"via {path}",
                f"{ms[path, 'on']:.2f}",
                f"{ms[path, 'off']:.2f}",
                f"{ms[path, 'on'] / ms[path, 'off']:.2f}",
                f"{ms[path, 'on'] - ms[path, 'off']:.2f}",
            ]
            for path in ("service", "api")
        ],
    )
    for path in ("service", "api"):
        ratio = ms[path, "on"] / ms[path, "off"]
        print(f"  via {path}: on / off {ratio:.2f} (goal <= {GOAL_RATIO}): {'yes' if ratio <= GOAL_RATIO else 'NO'}")


def print_breakdown(steps: dict[str, tuple[float, float]], queries: dict[str, list[str]], *, title: str) -> None:
    wholes = [f"the whole order, notifications {mode}" for mode in MODES]
    parts = [label for label in steps if label not in wholes]
    on, off = (steps[label][0] for label in wholes)
    accounted = sum(steps[label][0] for label in parts if not label.startswith(" "))
    harness.print_table(
        title,
        ["median", "ms/order", "statements/order"],
        [
            *([label, f"{steps[label][0]:.2f}", f"{steps[label][1]:g}"] for label in wholes + parts),
            ["rest of on - off (bigger commit, on_commit)", f"{on - off - accounted:.2f}", ""],
        ],
    )
    print("\n  statements only with notifications on:")
    for sql in _extra_queries(queries):
        print(f"    {sql[:110]}")


def _extra_queries(queries: dict[str, list[str]]) -> list[str]:
    remaining = list(queries["off"])
    extra = []
    for sql in queries["on"]:
        shape = _shape(sql)
        match = next((index for index, seen in enumerate(remaining) if _shape(seen) == shape), None)
        if match is None:
            extra.append(sql)
        else:
            remaining.pop(match)
    return extra


def _shape(sql: str) -> str:
    """A statement without its values, so that the same query for two orders compares equal."""
    return " ".join(word for word in sql.split() if not any(character.isdigit() for character in word))


if __name__ == "__main__":
    main()
