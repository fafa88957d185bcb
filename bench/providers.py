"""The Twilio double or the SMTP server in a process of its own, so that its memory is its own
to measure (bench/load.py):

    python -m bench.providers twilio ACCOUNT_SID AUTH_TOKEN
    python -m bench.providers smtp

Once serving it prints one JSON line, {"url": ...}; it serves until its standard input closes,
then prints one more, {"orders": [...]}: the order number of every message it accepted, in the
order they arrived (null for a message without one). Nothing here imports Django.
"""

import json
import re
import sys

from tests.fakes.smtp_server import FakeSMTP
from tests.fakes.twilio_server import FakeTwilio

# The SMS text says "(order #42, ...", the email subject "Order #42: ...".
ORDER_NUMBER = re.compile(r"order #(\d+)", re.IGNORECASE)


def order_number(text: str) -> int | None:
    match = ORDER_NUMBER.search(text or "")
    return int(match.group(1)) if match else None


def main() -> None:
    kind = sys.argv[1]
    if kind == "twilio":
        server = FakeTwilio(account_sid=sys.argv[2], auth_token=sys.argv[3]).start()
    elif kind == "smtp":
        server = FakeSMTP().start()
    else:
        raise SystemExit(f"unknown provider {kind!r}: twilio or smtp")
    print(json.dumps({"url": server.url}), flush=True)
    sys.stdin.read()
    server.stop()
    if kind == "twilio":
        texts = [request["Body"] for request in server.accepted()]
    else:
        texts = [message["Subject"] for message in server.handler.messages]
    print(json.dumps({"orders": [order_number(text) for text in texts]}), flush=True)


if __name__ == "__main__":
    main()
