"""A shop front placing orders one after another, for fault tests that need load on the database.

    python -m tests.notifications.order_load --orders 120 --pause 0.02

Each order has an SMS and an email. An order the database refuses (it is restarting) is placed
again with the same idempotency key, as a client retrying a request would, so an order whose
commit went through before the connection broke is not placed twice. Prints one JSON line of
figures at the end.
"""

import argparse
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderflow.settings.local")
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402 - needs Django set up
from django.db import DatabaseError, connections  # noqa: E402

from orders.services import OrderLine, order_create  # noqa: E402

ITEM = OrderLine(sku="TEA-1", name="Green tea", quantity=1, unit_price=Decimal("4.50"))


def customer(number: int) -> dict:
    return {"customer_phone": f"+1971555{number:04d}", "customer_email": f"load-{number:04d}@shop.example"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, required=True)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between two orders")
    parser.add_argument("--first", type=int, default=0, help="number of the first customer (default 0)")
    args = parser.parse_args()

    owner = None
    placed = refused = 0
    started = time.monotonic()
    while placed < args.orders:
        try:
            owner = owner or get_user_model().objects.get_or_create(username="load-shop")[0]
            number = args.first + placed
            order_create(
                owner=owner, customer_name="Load", items=[ITEM], idempotency_key=f"load-{number}", **customer(number)
            )
            placed += 1
        except DatabaseError:
            refused += 1
            connections.close_all()  # a broken connection is not reused
            time.sleep(0.2)
        time.sleep(args.pause)
    print(json.dumps({"placed": placed, "refused": refused, "seconds": round(time.monotonic() - started, 1)}))


if __name__ == "__main__":
    main()
