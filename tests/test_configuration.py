import os
import subprocess
import sys
from pathlib import Path

import pytest

from orderflow.configuration import ConfigurationError, Rate, parse_rate

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10/m", Rate(10, 60)), ("1/s", Rate(1, 1)), (" 500 / h ", Rate(500, 3600))],
)
def test_rates_in_celery_syntax_parse(text, rate):
    assert parse_rate("X", text) == rate


@pytest.mark.parametrize("text", ["10", "10/x", "ten/m", "0/m", "-1/m", "10/min", ""])
def test_bad_rate_names_the_variable(text):
    with pytest.raises(ConfigurationError, match=r"^NOTIFICATIONS_SMS_RATE_LIMIT: "):
        parse_rate("NOTIFICATIONS_SMS_RATE_LIMIT", text)


def start(**variables):
    """Run `manage.py check` with the given environment, as a person deploying would."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(variables)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_default_configuration_starts():
    result = start()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"NOTIFICATIONS_SMS_RATE_LIMIT": "lots"}, "NOTIFICATIONS_SMS_RATE_LIMIT"),
        ({"NOTIFICATIONS_EMAIL_RATE_LIMIT": "5/fortnight"}, "NOTIFICATIONS_EMAIL_RATE_LIMIT"),
        ({"NOTIFICATIONS_MAX_RETRIES": "-1"}, "NOTIFICATIONS_MAX_RETRIES"),
        ({"NOTIFICATIONS_MAX_RETRIES": "three"}, "NOTIFICATIONS_MAX_RETRIES"),
        ({"NOTIFICATIONS_RETRY_BACKOFF": "0"}, "NOTIFICATIONS_RETRY_BACKOFF"),
        (
            {"NOTIFICATIONS_RETRY_BACKOFF": "60", "NOTIFICATIONS_RETRY_BACKOFF_MAX": "30"},
            "NOTIFICATIONS_RETRY_BACKOFF_MAX",
        ),
        ({"NOTIFICATIONS_RETENTION_DAYS": "0"}, "NOTIFICATIONS_RETENTION_DAYS"),
        ({"NOTIFICATIONS_STUCK_AFTER": "soon"}, "NOTIFICATIONS_STUCK_AFTER"),
        ({"DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL"),
        ({"CELERY_BROKER_URL": "localhost:6379"}, "CELERY_BROKER_URL"),
        ({"REDIS_URL": "redis://localhost:notaport/1"}, "REDIS_URL"),
        ({"TWILIO_API_BASE_URL": "api.twilio.com"}, "TWILIO_API_BASE_URL"),
        ({"EMAIL_URL": "carrierpigeon://coop"}, "EMAIL_URL"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"DJANGO_DEBUG": "false"}, "DJANGO_SECRET_KEY"),
        ({"TWILIO_ACCOUNT_SID": "AC123", "TWILIO_AUTH_TOKEN": "secret"}, "TWILIO_FROM_NUMBER"),
        ({"SMS_BACKEND": "notifications.backends.sms.TwilioBackend"}, "TWILIO_ACCOUNT_SID"),
    ],
)
def test_bad_variable_stops_startup_with_one_line_naming_it(variables, named):
    result = start(**variables)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"orderflow: configuration error: {named}: ")


def test_secret_key_given_allows_debug_off():
    result = start(DJANGO_DEBUG="false", DJANGO_SECRET_KEY="x" * 50)
    assert result.returncode == 0, result.stderr


def test_celery_command_reports_a_bad_variable_in_one_line():
    env = {**os.environ, "NOTIFICATIONS_SMS_RATE_LIMIT": "lots"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "celery"), "-A", "orderflow", "inspect", "ping"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "orderflow: configuration error: NOTIFICATIONS_SMS_RATE_LIMIT: 'lots' is not a rate; "
        "write a positive count per s, m or h, e.g. 10/m"
    ]


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("notifications.backends.sms.TwillioBackend", "cannot import 'notifications.backends.sms.TwillioBackend'"),
        ("notifications.backends.sms.TWILIO_TIMEOUT_SECONDS", "is not a backend class"),
        ("notifications.backends.sms.Urllib3HttpClient", "is not a backend class"),
    ],
)
def test_an_sms_backend_that_is_not_one_stops_startup_naming_the_variable(path, said):
    result = start(SMS_BACKEND=path)
    assert result.returncode == 1
    assert "(notifications.E001) SMS_BACKEND: " in result.stderr
    assert said in result.stderr
