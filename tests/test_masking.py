import logging
import logging.config
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orderflow.masking import MaskingFilter, mask_recipient, mask_text

ROOT = Path(__file__).resolve().parents[1]
PHONE, EMAIL = "+14155550123", "ada.lovelace@example.com"


@pytest.mark.parametrize(
    ("value", "masked"),
    [("+14155550123", "+14***23"), ("ada@example.com", "a***@example.com"), ("123", "***"), ("", "")],
)
def test_recipients_are_masked(value, masked):
    assert mask_recipient(value) == masked


def test_free_text_is_masked():
    text = "The 'To' number +1 415 555 0123 is invalid; copy to ada.lovelace@example.com"
    assert mask_text(text) == "The 'To' number +14***23 is invalid; copy to a***@example.com"


def test_the_filter_masks_formatted_messages():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s and %s", (PHONE, EMAIL), None)
    MaskingFilter().filter(record)
    assert record.getMessage() == "to +14***23 and a***@example.com"


def test_the_filter_masks_the_fields_a_json_line_carries(settings):
    """The JSON format writes `extra` fields as they are: a dead letter's reason quoting the
    provider put the full number and address in the log."""
    record = logging.makeLogRecord(
        {"msg": "notification.dead", "reason": f"The 'To' number {PHONE} is not valid; <{EMAIL}>", "attempt": 1}
    )
    MaskingFilter().filter(record)
    assert record.reason == "The 'To' number +14***23 is not valid; <a***@example.com>"
    assert record.attempt == 1
    formatter = logging.config.dictConfigClass(settings.LOGGING).configure_formatter(
        settings.LOGGING["formatters"]["json"]
    )
    line = formatter.format(record)
    assert PHONE not in line and EMAIL not in line


def test_an_emails_message_id_is_logged_whole_to_be_found_in_the_mail_servers_logs():
    message_id = "<176402.1234.5678@shop.example>"
    record = logging.makeLogRecord(
        {
            "msg": f"notification.sent recipient={EMAIL} provider_message_id={message_id} reason={EMAIL}",
            "provider_message_id": message_id,
            "recipient": EMAIL,
        }
    )
    MaskingFilter().filter(record)
    assert record.getMessage() == (
        f"notification.sent recipient=a***@example.com provider_message_id={message_id} reason=a***@example.com"
    )
    assert (record.provider_message_id, record.recipient) == (message_id, "a***@example.com")


@pytest.mark.parametrize("provider_id", ["12345", "5", "example.com", "bob12345"])
def test_a_kept_id_never_unmasks_a_number_or_address_it_is_part_of(provider_id):
    """A Twilio-compatible provider may answer a short id: it must not cut a phone number or
    an address into pieces the patterns no longer recognise."""
    record = logging.makeLogRecord(
        {"msg": "reason=call +4912345678 or bob12345@example.com", "provider_message_id": provider_id}
    )
    MaskingFilter().filter(record)
    assert record.getMessage() == "reason=call +49***78 or b***@example.com"


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ('"GET /admin/notifications/deadletter/?q=+14155550111 HTTP/1.1" 200', "?q=+14***11 "),
        ('"GET /admin/?q=%2B14155550111&o=1 HTTP/1.1" 200', "?q=+14***11&o=1 "),
        ('"GET /admin/?q=%2b44%2020%207946%200958 HTTP/1.1" 200', "?q=+44***58 "),
        ('"GET /admin/orders/order/?q=ada%40example.com HTTP/1.1" 200', "?q=a***@example.com "),
        # As a browser's search form sends a number typed with spaces, brackets, or 00 for "+".
        ('"GET /admin/?q=%2B1+415+555+0111 HTTP/1.1" 200', "?q=+14***11 "),
        ('"GET /admin/?q=%2B1+%28415%29+555-0111&p=2 HTTP/1.1" 200', "?q=+14***11&p=2 "),
        ('"GET /admin/?status__exact=dead&q=0014155550111 HTTP/1.1" 200', "?status__exact=dead&q=00***11 "),
        ('"GET /admin/?q=001+415+555+0111 HTTP/1.1" 200', "?q=00***11 "),
        ('"GET /admin/?q=4155550111 HTTP/1.1" 200', "?q=41***11 "),
    ],
)
def test_a_request_line_is_masked_also_where_its_query_is_url_encoded(line, masked):
    assert masked in mask_text(line)
    assert "4155550111" not in mask_text(line) and "ada%40" not in mask_text(line)


@pytest.mark.parametrize(
    "query", ["?q=%2317", "?q=1234567", "?o=-3.1&p=12", "?q=Ada+Lovelace", "?created_at__gte=2026-11-25"]
)
def test_a_query_holding_no_phone_is_logged_as_it_is(query):
    line = f'"GET /admin/orders/order/{query} HTTP/1.1" 200'
    assert mask_text(line) == line


def test_the_development_servers_request_lines_pass_the_mask(settings):
    """make run serves with runserver, whose request lines Django logs through a handler of its own."""
    logging.config.dictConfig(settings.LOGGING)
    server = logging.getLogger("django.server")
    assert server.handlers and not server.propagate
    assert all(any(isinstance(found, MaskingFilter) for found in handler.filters) for handler in server.handlers)


def test_a_request_warning_prints_once_masked_and_a_403_without_a_traceback():
    """Under DJANGO_DEBUG=true too, where Django adds a console handler of its own."""
    code = (
        "import logging\n"
        "from django.core.exceptions import PermissionDenied\n"
        "from django.test import RequestFactory\n"
        "from django.core.handlers.exception import response_for_exception\n"
        "request = RequestFactory().get('/admin/orders/order/')\n"
        "try:\n"
        "    raise PermissionDenied\n"
        "except PermissionDenied as error:\n"
        "    response_for_exception(request, error)\n"
        "logging.getLogger('django.request').warning('Bad Request: %s', '/api/orders/?q=+14155550111')\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_DEBUG": "true", "LOG_FORMAT": "plain"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.strip().splitlines()
    assert [line.partition(" WARNING ")[2] for line in lines] == [
        "django.request Forbidden (Permission denied): /admin/orders/order/",
        "django.request Bad Request: /api/orders/?q=+14***11",
    ], result.stderr
