import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import environ
import pytest

from orderflow.configuration import (
    SECRETS_TO_SET,
    ConfigurationError,
    Rate,
    check_broker_url,
    check_sender,
    email_settings,
    parse_rate,
    read_dotenv,
)
from tests.processes import run_deployed, unreachable_database_url, web_command
from tests.test_deployment import EXAMPLE_ENV

ROOT = Path(__file__).resolve().parent.parent
# Long and varied enough for DEBUG off (orderflow.configuration.check_secret_key).
SECRET_KEY = "test-only-not-a-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
# A SID of the form Twilio issues (not a real account).
TWILIO_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10/m", Rate(10, 60)), ("1/s", Rate(1, 1)), (" 500 / h ", Rate(500, 3600))],
)
def test_rates_in_celery_syntax_parse(text, rate):
    assert parse_rate("X", text) == rate


@pytest.mark.parametrize(
    "text", ["10", "10/x", "ten/m", "0/m", "-1/m", "10/min", "", "1000001/s", "99999999999999999999/s"]
)
def test_bad_rate_names_the_variable(text):
    with pytest.raises(ConfigurationError, match=r"^NOTIFICATIONS_SMS_RATE_LIMIT: "):
        parse_rate("NOTIFICATIONS_SMS_RATE_LIMIT", text)


def start(**variables):
    """Run `manage.py check` with the given environment, as a person deploying would."""
    return run_deployed("manage.py", "check", **variables)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (unreachable_database_url("hunter2"), "Connection refused"),
        ("sqlite:////nonexistent/directory/db.sqlite3", "unable to open database file"),
    ],
)
def test_migrate_with_a_database_it_cannot_reach_says_so_in_one_line(url, said):
    result = run_deployed("manage.py", "migrate", "--noinput", DATABASE_URL=url)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    where = url.replace(":hunter2", "").replace("postgres://", "postgresql://")
    assert line.startswith(f"CommandError: DATABASE_URL: cannot connect to {where}: ")
    assert said in line


def test_production_settings_run_with_debug_off_unless_told(tmp_path):
    """A deployment that forgot DJANGO_DEBUG must not show debug pages nor run on the development key."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "PYTEST"))}
    env["DJANGO_SETTINGS_MODULE"] = "orderflow.settings.production"
    shell = ["manage.py", "shell", "-c", "from django.conf import settings; print('DEBUG', settings.DEBUG)"]

    def run(**variables):
        return subprocess.run(
            [sys.executable, *shell], cwd=ROOT, env={**env, **variables}, capture_output=True, text=True, timeout=60
        )

    refused = run()
    assert refused.stderr.strip().splitlines() == [
        "orderflow: configuration error: DJANGO_SECRET_KEY: must be set (not empty) when DJANGO_DEBUG is false"
    ]
    assert run(DJANGO_SECRET_KEY=SECRET_KEY).stdout.splitlines()[-1] == "DEBUG False"
    assert run(DJANGO_DEBUG="true").stdout.splitlines()[-1] == "DEBUG True"


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("short", "is too easy to guess (5 characters, 5 different)"),
        ("k" * 60, "is too easy to guess (60 characters, 1 different)"),
        ("django-insecure-" + SECRET_KEY, "is one startproject made for development"),
    ],
)
def test_a_key_anyone_could_guess_stops_production_settings_with_one_line(key, said):
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DJANGO_", "PYTEST"))}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "orderflow.settings.production", "DJANGO_SECRET_KEY": key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"orderflow: configuration error: DJANGO_SECRET_KEY: {said}"), line
    assert key not in line


def test_probes_and_metrics_are_answered_over_plain_http_the_rest_redirected_to_https():
    """As compose's health check asks, with the redirect on (as .env.example has it)."""
    script = (
        "from django.test import Client; client = Client(HTTP_HOST='127.0.0.1'); "
        "paths = ('/healthz', '/readyz', '/metrics', '/api/orders/', '/admin/', '/healthz/', '/readyz/', '/metrics/'); "
        "print([client.get(path).status_code for path in paths])"
    )
    result = run_deployed(
        "manage.py",
        "shell",
        "-c",
        script,
        DJANGO_SETTINGS_MODULE="orderflow.settings.production",
        DJANGO_SECRET_KEY=SECRET_KEY,
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_SSL_REDIRECT="true",
        METRICS_TOKEN="t" * 32,
    )
    codes = eval(result.stdout.splitlines()[-1])  # noqa: S307 - our own print
    healthz, readyz, metrics, api, admin = codes[:5]
    assert (healthz, metrics, api, admin) == (200, 403, 301, 301), result.stderr
    assert readyz in (200, 503)  # its checks' answer, whatever the services here: not a redirect
    assert codes[5:] == [healthz, readyz, metrics]  # probes and scrapers are configured with the slash too


@pytest.mark.parametrize(
    "command",
    [
        ["showmigrations"],
        ["drf_create_token", "shop"],
        ["createsuperuser", "--noinput", "--username", "ops", "--email", "ops@example.com"],
        ["requeue_dead_letters", "--dry-run"],
        ["runserver", "127.0.0.1:0"],  # make run's web process: its checks run in a thread of their own
    ],
)
def test_any_command_meeting_an_unreachable_database_says_so_in_one_line(command):
    url = unreachable_database_url("hunter2")
    result = run_deployed("manage.py", *command, DATABASE_URL=url)
    assert result.returncode == 1
    where = url.replace(":hunter2", "").replace("postgres://", "postgresql://")
    assert result.stderr.strip().splitlines()[-1].startswith(f"CommandError: DATABASE_URL: cannot connect to {where}: ")
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr


def test_a_database_that_takes_the_connection_and_never_answers_is_given_up_on():
    """A firewall or a hung server that accepts and stays silent: a command, a request, or a
    send waiting for the database at its claim, gives up after the connect timeout (5 s)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgres://postgres@127.0.0.1:{silent.getsockname()[1]}/orderflow"
        result = run_deployed("manage.py", "showmigrations", DATABASE_URL=url)  # 60 s, or TimeoutExpired
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"CommandError: DATABASE_URL: cannot connect to {url.replace('postgres://', 'postgresql://')}: "
        "connection timeout expired"
    )


@pytest.mark.parametrize("url", ["nonsense", "carrierpigeon://user:hunter2@coop"])
def test_an_email_url_of_no_known_kind_names_the_kinds_without_its_password(url):
    with pytest.raises(ConfigurationError) as raised:
        email_settings("EMAIL_URL", url, environ.Env())
    message = str(raised.value)
    assert message.startswith("EMAIL_URL: '") and "is not an email URL; one of smtp://, smtps://" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("variable", "url", "shown"),
    [
        ("DATABASE_URL", "postgres://u:Sup3r#Secret@db:5432/x", "postgres://u:***@db:5432/x"),
        ("DATABASE_URL", "postgres://u:Sup3r/Secret@db:5432/x", "postgres://u:***@db:5432/x"),
        ("CELERY_BROKER_URL", "amqp://u:Sup3r#Secret@rabbit:5672//", "amqp://u:***@rabbit:5672//"),
        ("REDIS_URL", "redis://:Sup3r?Secret@redis:6379/1", "redis://:***@redis:6379/1"),
        (
            "EMAIL_URL",
            "smtp://user:Sup3r#Secret@smtp.example.com:587/?tls=True",
            "smtp://user:***@smtp.example.com:587/?tls=True",
        ),
    ],
)
def test_a_password_holding_a_url_delimiter_is_named_not_shown(variable, url, shown):
    result = start(**{variable: url})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"orderflow: configuration error: {variable}: {shown!r} is not read as meant; a '#', '/' or '?' in its "
        "user name or password must be percent-encoded (%23, %2F, %3F)"
    ]
    assert "Secret" not in result.stderr


def test_an_at_sign_after_the_address_is_no_password():
    """An address in an option (smtp://host:25/?x=a@b) or a path is read as written."""
    assert start(DATABASE_URL="postgres://u:p%23w@127.0.0.1:5432/x").returncode == 0
    said = start(EMAIL_URL="smtp://smtp.example.com:587/?tls=True&from=a@b").stderr
    assert "does not know the option 'from'" in said and "percent-encoded" not in said


def test_the_default_database_is_the_projects_file_whichever_folder_a_command_starts_in(tmp_path):
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DJANGO_", "PYTEST"))}
    env.pop("DATABASE_URL", None)
    script = "from django.conf import settings; print(settings.DATABASES['default']['NAME'])"
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", script],
        cwd=tmp_path,
        env={**env, "DJANGO_SETTINGS_MODULE": "orderflow.settings.local"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip().splitlines()[-1] == str(ROOT / "db.sqlite3"), result.stderr


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
        ({"DATABASE_URL": "mysql://shop@db.example/orders"}, "DATABASE_URL"),  # no driver installed
        ({"CELERY_BROKER_URL": "localhost:6379"}, "CELERY_BROKER_URL"),
        ({"CELERY_BROKER_URL": "redis://localhost:6379/0?socket_timout=5"}, "CELERY_BROKER_URL"),
        ({"REDIS_URL": "redis://localhost:notaport/1"}, "REDIS_URL"),
        # redis-py reads a path that is not a number as database 0, another process's database.
        ({"REDIS_URL": "redis://localhost:6379/abc"}, "REDIS_URL"),
        # Options redis-py refuses only on the first use of the limiter or the cache.
        ({"REDIS_URL": "redis://localhost:6379/1?socket_timout=5"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://localhost:6379/1?socket_timeout=soon"}, "REDIS_URL"),
        ({"CELERY_BROKER_URL": "redis://localhost:6379/abc"}, "CELERY_BROKER_URL"),
        # psycopg refuses these only when a statement is prepared or a connection opened.
        ({"DATABASE_URL": "postgres://shop@db.example/orders?prepare_threshold=abc"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://shop@db.example/orders?prepare_threshold=-5"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://shop@db.example/orders?connect_timeout=soon"}, "DATABASE_URL"),
        ({"TWILIO_API_BASE_URL": "api.twilio.com"}, "TWILIO_API_BASE_URL"),
        ({"EMAIL_URL": "carrierpigeon://coop"}, "EMAIL_URL"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"DJANGO_DEBUG": "false"}, "DJANGO_SECRET_KEY"),
        ({"TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "secret"}, "TWILIO_FROM_NUMBER"),
        ({"SMS_BACKEND": "notifications.backends.sms.TwilioBackend"}, "TWILIO_ACCOUNT_SID"),
        # Half a set of Twilio credentials would send every SMS to the console.
        ({"TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID, "TWILIO_FROM_NUMBER": "+15005550006"}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_AUTH_TOKEN": "secret"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_FROM_NUMBER": "not a number!"}, "TWILIO_FROM_NUMBER"),
        # Twilio answers a malformed SID with 20003 on every send, long after start-up.
        ({"TWILIO_ACCOUNT_SID": "foo", "TWILIO_AUTH_TOKEN": "secret"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID + "0", "TWILIO_AUTH_TOKEN": "secret"}, "TWILIO_ACCOUNT_SID"),
        (
            {
                "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": "secret",
                "TWILIO_MESSAGING_SERVICE_SID": "xyz",
            },
            "TWILIO_MESSAGING_SERVICE_SID",
        ),
        ({"CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/x"}, "CELERY_RESULT_BACKEND"),
        ({"EMAIL_URL": "smtp://"}, "EMAIL_URL"),
        ({"EMAIL_URL": "smtp://user:pass@smtp.example.com:587/?tls=maybe"}, "EMAIL_URL"),
        ({"EMAIL_URL": "smtp://smtp.example.com/?tls=true&ssl=true"}, "EMAIL_URL"),
        ({"EMAIL_URL": "smtp://smtp.example.com/?starttls=true"}, "EMAIL_URL"),
        ({"DEFAULT_FROM_EMAIL": "not-an-address"}, "DEFAULT_FROM_EMAIL"),
        ({"EMAIL_URL": "smtp://smtp.example.com:0"}, "EMAIL_URL"),
        ({"EMAIL_URL": "smtp://smtp.example.com/?tls=True&tls=False"}, "EMAIL_URL"),
        ({"EMAIL_URL": "smtps://user:pass@smtp.example.com:465"}, "EMAIL_URL"),
        ({"EMAIL_URL": "smtp://user:pass@smtp.example.com:587/?ssl=true"}, "EMAIL_URL"),
        ({"DJANGO_ALLOWED_HOSTS": "local host"}, "DJANGO_ALLOWED_HOSTS"),
        ({"DJANGO_ALLOWED_HOSTS": ""}, "DJANGO_ALLOWED_HOSTS"),
        ({"DJANGO_ALLOWED_HOSTS": " , "}, "DJANGO_ALLOWED_HOSTS"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
        ({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY"),
        # .env.example's placeholders are public: a deployment must not run on one.
        *(
            ({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": SECRET_KEY, variable: EXAMPLE_ENV[variable]}, variable)
            for variable in SECRETS_TO_SET
        ),
        ({"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/metrics"}, "PROMETHEUS_MULTIPROC_DIR"),
        ({"NOTIFICATIONS_RETENTION_DAYS": "100000000"}, "NOTIFICATIONS_RETENTION_DAYS"),
        ({"NOTIFICATIONS_STUCK_AFTER": "999999999999"}, "NOTIFICATIONS_STUCK_AFTER"),
        (
            {
                "DJANGO_SETTINGS_MODULE": "orderflow.settings.production",
                "DJANGO_DEBUG": "false",
                "DJANGO_SECRET_KEY": SECRET_KEY,
                "DJANGO_SECURE_HSTS_SECONDS": "a month",
            },
            "DJANGO_SECURE_HSTS_SECONDS",
        ),
        (
            {
                "DJANGO_SETTINGS_MODULE": "orderflow.settings.production",
                "DJANGO_DEBUG": "false",
                "DJANGO_SECRET_KEY": SECRET_KEY,
                "DJANGO_SECURE_SSL_REDIRECT": "ture",
            },
            "DJANGO_SECURE_SSL_REDIRECT",
        ),
    ],
)
def test_bad_variable_stops_startup_with_one_line_naming_it(variables, named):
    result = start(**variables)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"orderflow: configuration error: {named}: ")


def test_twilio_sids_of_twilio_itself_pass_and_a_compatible_provider_names_accounts_its_own_way():
    twilio = {"TWILIO_AUTH_TOKEN": "secret", "TWILIO_FROM_NUMBER": "+14155552671"}
    result = start(**twilio, TWILIO_ACCOUNT_SID=TWILIO_ACCOUNT_SID, TWILIO_MESSAGING_SERVICE_SID="MG" + "0a" * 16)
    assert result.returncode == 0, result.stderr
    result = start(
        **twilio,
        TWILIO_ACCOUNT_SID="b6f1c0a2-5d9e-4c1f-8a7b-2e3d4c5b6a79",
        TWILIO_API_BASE_URL="https://sms.compatible.example",
    )
    assert result.returncode == 0, result.stderr


def test_a_dotenv_saved_with_a_byte_order_mark_is_read_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERFLOW_DOTENV_PROBE", "")
    monkeypatch.delenv("ORDERFLOW_DOTENV_PROBE")  # gone again after the test
    dotenv = tmp_path / ".env"
    dotenv.write_text("ORDERFLOW_DOTENV_PROBE=2/m\n", encoding="utf-8-sig")
    read_dotenv(dotenv)
    assert os.environ["ORDERFLOW_DOTENV_PROBE"] == "2/m"


def test_a_dotenv_in_another_encoding_stops_startup_naming_the_file(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("LOG_LEVEL=info\n", encoding="utf-16")
    with pytest.raises(ConfigurationError, match=r"^\.env: .* is not UTF-8 text"):
        read_dotenv(dotenv)


def test_secret_key_given_allows_debug_off():
    result = start(DJANGO_DEBUG="false", DJANGO_SECRET_KEY=SECRET_KEY)
    assert result.returncode == 0, result.stderr


NO_SUCH_SETTINGS = (
    "orderflow: configuration error: DJANGO_SETTINGS_MODULE: there is no module 'orderflow.settings.bogus'; "
    "use one of orderflow.settings.local, orderflow.settings.production"
)


@pytest.mark.parametrize("command", [["manage.py", "check"], ["-m", "celery", "-A", "orderflow", "inspect", "ping"]])
def test_a_settings_module_that_is_not_there_is_one_line_naming_the_variable(command):
    result = run_deployed(*command, DJANGO_SETTINGS_MODULE="orderflow.settings.bogus")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [NO_SUCH_SETTINGS]


@pytest.mark.parametrize("command", [["manage.py", "check"], ["-m", "celery", "-A", "orderflow", "inspect", "ping"]])
def test_a_settings_module_set_empty_is_one_line_saying_so(command):
    result = run_deployed(*command, DJANGO_SETTINGS_MODULE="")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "orderflow: configuration error: DJANGO_SETTINGS_MODULE: it is set but empty; unset it (local settings) "
        "or use one of orderflow.settings.local, orderflow.settings.production"
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["manage.py", "check"],
        ["-m", "celery", "-A", "orderflow", "inspect", "ping"],
        ["-m", "gunicorn", "orderflow.wsgi", "--bind", "127.0.0.1:0", "--workers", "1"],
    ],
)
def test_the_settings_package_itself_is_one_line_naming_the_modules(command):
    result = run_deployed(*command, DJANGO_SETTINGS_MODULE="orderflow.settings")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("[")]  # gunicorn's own
    assert lines == [
        "orderflow: configuration error: DJANGO_SETTINGS_MODULE: 'orderflow.settings' is the package of the "
        "settings modules, not one; use one of orderflow.settings.local, orderflow.settings.production"
    ]


def test_a_module_missing_inside_real_settings_is_a_defect_shown_in_full(tmp_path):
    (tmp_path / "settings_needing_a_package.py").write_text(
        "from orderflow.settings.local import *  # noqa\nimport a_package_not_installed  # noqa\n"
    )
    result = run_deployed(
        "manage.py",
        "check",
        DJANGO_SETTINGS_MODULE="settings_needing_a_package",
        PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}",
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().endswith("ModuleNotFoundError: No module named 'a_package_not_installed'")


@pytest.mark.parametrize("attempt", [1, 2, 3])  # several workers failing together stopped gunicorn unevenly
def test_the_deployed_web_command_stops_at_a_bad_variable_with_its_one_line(attempt):
    command = web_command(bind="127.0.0.1:0")
    assert command[0] == "gunicorn" and "--workers" in command
    result = run_deployed("-m", *command, DJANGO_SETTINGS_MODULE="orderflow.settings.bogus")
    assert result.returncode == 3  # stopped, not a restart loop cut by the timeout
    assert result.stderr.strip().splitlines() == [NO_SUCH_SETTINGS]


def test_gunicorn_without_preload_stops_when_its_worker_cannot_boot():
    result = run_deployed(
        "-m",
        "gunicorn",
        "orderflow.wsgi",
        "--bind",
        "127.0.0.1:0",
        # One worker: when several fail at once, gunicorn itself sometimes stops with a traceback
        # of its own (HaltServer raised again while halting), exit status 1; it stops either way.
        "--workers",
        "1",
        DJANGO_SETTINGS_MODULE="orderflow.settings.bogus",
    )
    assert result.returncode == 3  # the arbiter's "worker failed to boot", not a restart loop cut by the timeout
    assert [line for line in result.stderr.splitlines() if not line.startswith("[")] == [NO_SUCH_SETTINGS]
    assert "Reason: Worker failed to boot." in result.stderr


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


@pytest.mark.parametrize(
    ("url", "tls", "ssl"),
    [
        ("smtp://user:pass@smtp.example.com:587/?tls=True", True, False),
        ("smtp+tls://user:pass@smtp.example.com:587", True, False),
        ("smtp://user:pass@smtp.example.com:587/?EMAIL_USE_TLS=true", True, False),
        ("smtp://user:pass@smtp.example.com:465/?ssl=1", False, True),
        ("smtp://smtp.example.com:25/?tls=false", False, False),
    ],
)
def test_an_email_url_asking_for_tls_or_ssl_gets_it(url, tls, ssl):
    config = email_settings("EMAIL_URL", url, environ.Env())
    assert (bool(config.get("EMAIL_USE_TLS")), bool(config.get("EMAIL_USE_SSL"))) == (tls, ssl)
    assert config["EMAIL_HOST"] == "smtp.example.com"
    # Django's own: notifications bound their conversations (backends/smtp.py), Django's mail keeps its backend
    assert config["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"


@pytest.mark.parametrize(
    ("url", "server", "tls", "ssl"),
    [
        ("smtps://user:pass@smtp.example.com", "smtp.example.com:587", True, False),
        ("smtp+tls://user:pass@smtp.example.com", "smtp.example.com:587", True, False),
        ("smtp://user:pass@smtp.example.com/?tls=true", "smtp.example.com:587", True, False),
        ("smtp+ssl://user:pass@smtp.example.com", "smtp.example.com:465", False, True),
        ("smtp://user:pass@smtp.example.com/?ssl=true", "smtp.example.com:465", False, True),
        ("smtp://smtp.example.com", "smtp.example.com:25", False, False),
        ("smtp://smtp.example.com/?tls=false", "smtp.example.com:25", False, False),
        ("smtps://user:pass@smtp.example.com:2525", "smtp.example.com:2525", True, False),
        ("smtps://user:pass@smtp.example.com/?tls=true", "smtp.example.com:587", True, False),
        ("smtp+ssl://user:pass@smtp.example.com/?tls=false", "smtp.example.com:465", False, True),
    ],
)
def test_a_secured_email_url_reaches_its_server_on_its_ways_port(url, server, tls, ssl):
    """Without a port, STARTTLS goes to 587 (25 is often blocked, or takes no password) and ssl to 465."""
    config = email_settings("EMAIL_URL", url, environ.Env())
    assert f"{config['EMAIL_HOST']}:{config['EMAIL_PORT']}" == server
    assert (bool(config.get("EMAIL_USE_TLS")), bool(config.get("EMAIL_USE_SSL"))) == (tls, ssl)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "smtps://user:hunter2@smtp.example.com:465",
            "asks for STARTTLS on port 465, where servers speak TLS from the first byte; "
            "write smtp://user:password@smtp.example.com:465/?ssl=true, "
            "or smtp://user:password@smtp.example.com:587/?tls=true",
        ),
        (
            "smtp://user:hunter2@smtp.example.com:465",
            "asks for plain SMTP on port 465, where servers speak TLS from the first byte; "
            "write smtp://user:password@smtp.example.com:465/?ssl=true, "
            "or smtp://user:password@smtp.example.com:587/?tls=true",
        ),
        (
            "smtp+ssl://user:hunter2@smtp.example.com:587",
            "asks for ssl (TLS from the first byte) on port 587, where servers speak STARTTLS; "
            "write smtp://user:password@smtp.example.com:587/?tls=true, "
            "or smtp://user:password@smtp.example.com:465/?ssl=true",
        ),
        (
            "smtps://user:hunter2@smtp.example.com/?tls=false",
            "smtps:// asks for STARTTLS and its option tls='false' says not; give one of them, "
            "e.g. smtp://user:password@smtp.example.com:587/?tls=true",
        ),
        (
            "smtp+ssl://user:hunter2@smtp.example.com/?EMAIL_USE_SSL=0",
            "smtp+ssl:// asks for ssl and its option email_use_ssl='0' says not; give one of them, "
            "e.g. smtp://user:password@smtp.example.com:587/?tls=true",
        ),
    ],
)
def test_an_email_url_that_every_send_would_fail_on_is_refused_saying_what_to_write(url, said):
    """Refused at start-up: the server's port and the URL's way of securing SMTP do not match,
    or the scheme and an option disagree. None of the messages repeats the password."""
    with pytest.raises(ConfigurationError) as error:
        email_settings("EMAIL_URL", url, environ.Env())
    assert str(error.value) == f"EMAIL_URL: {said}"


def test_an_email_url_of_another_kind_keeps_its_backend():
    config = email_settings("EMAIL_URL", "consolemail://", environ.Env())
    assert config["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"


def test_an_email_url_error_does_not_repeat_its_password():
    with pytest.raises(ConfigurationError) as error:
        email_settings("EMAIL_URL", "smtp://user:hunter2@smtp.example.com/?tls=maybe", environ.Env())
    assert "hunter2" not in str(error.value)


def test_a_log_level_in_lower_case_is_taken():
    result = start(LOG_LEVEL="debug")
    assert result.returncode == 0, result.stderr


def test_a_url_in_an_error_does_not_show_its_password():
    result = start(DATABASE_URL="mysql://shop:hunter2@db.example/orders")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr
    assert "'mysql://shop:***@db.example/orders'" in result.stderr


@pytest.mark.parametrize("variable", ["REDIS_URL", "CELERY_RESULT_BACKEND", "CELERY_BROKER_URL"])
@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379", "redis://127.0.0.1:6379/"])
def test_a_redis_url_without_its_database_number_is_refused(variable, url):
    result = start(**{variable: url})
    assert result.returncode == 2
    assert f"{variable}: {url!r}: its path must be a database number, e.g. /1" in result.stderr


def test_a_list_of_redis_brokers_to_fail_over_to_is_taken_and_each_is_checked():
    listed = "redis://:pw1@a.example:6379/0;redis://:pw2@b.example:6379/0"
    assert check_broker_url("CELERY_BROKER_URL", listed) == listed
    with pytest.raises(ConfigurationError) as raised:
        check_broker_url("CELERY_BROKER_URL", "redis://:pw1@a.example:6379/0;redis://:pw2@b.example:6379/x")
    assert str(raised.value) == (
        "CELERY_BROKER_URL: 'redis://:***@b.example:6379/x': its path must be a database number, e.g. /1"
    )


def test_a_sender_number_written_any_way_is_sent_from_in_e164():
    assert check_sender("TWILIO_FROM_NUMBER", "+1 (415) 555-2671") == "+14155552671"
    assert check_sender("TWILIO_FROM_NUMBER", "OrderFlow") == "OrderFlow"


@pytest.mark.parametrize(
    ("variables", "said"),
    [
        ({"NOTIFICATIONS_MAX_RETRIES": "three"}, "NOTIFICATIONS_MAX_RETRIES: 'three' is not a whole number"),
        (
            {"NOTIFICATIONS_RETRY_BACKOFF": "60", "NOTIFICATIONS_RETRY_BACKOFF_MAX": "30"},
            "NOTIFICATIONS_RETRY_BACKOFF_MAX: 30 must be at least NOTIFICATIONS_RETRY_BACKOFF (60)",
        ),
    ],
)
def test_a_bad_number_is_said_in_words_naming_where_its_bound_comes_from(variables, said):
    assert start(**variables).stderr.strip() == f"orderflow: configuration error: {said}"


# Each entry point as a deployment starts it, from the project's folder.
ENTRY_POINTS = {
    "manage.py": ["manage.py", "check"],
    "wsgi": ["-c", "import orderflow.wsgi"],
    "asgi": ["-c", "import orderflow.asgi"],
    "celery": ["-m", "celery", "-A", "orderflow", "inspect", "ping"],
}


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_the_settings_module_named_in_dotenv_is_the_one_used(entry_point, tmp_path):
    """.env.example sets DJANGO_SETTINGS_MODULE there: the entry points must read it, not set
    their default first. A copy of the project with its own .env naming a module that does not
    exist shows which module they tried."""
    for part in ("manage.py", "orderflow", "orders", "notifications", "templates"):
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / part)
    (tmp_path / ".env").write_text("DJANGO_SETTINGS_MODULE=orderflow.settings.bogus\n")
    result = run_deployed(*ENTRY_POINTS[entry_point], cwd=tmp_path)
    assert result.returncode != 0
    assert NO_SUCH_SETTINGS in result.stderr.splitlines(), result.stderr


def test_a_variable_for_make_run_comes_from_the_environment_else_dotenv(tmp_path, monkeypatch):
    from orderflow.configuration import environment_value

    dotenv = tmp_path / ".env"
    dotenv.write_text("WEB_PORT=8123\nORDERFLOW_PROBE_ONLY_IN_DOTENV=from-dotenv\n")
    monkeypatch.setenv("WEB_PORT", "8001")
    monkeypatch.setenv("ORDERFLOW_PROBE_ONLY_IN_DOTENV", "")
    monkeypatch.delenv("ORDERFLOW_PROBE_ONLY_IN_DOTENV")  # gone again after the test
    assert environment_value("WEB_PORT", dotenv) == "8001"
    assert environment_value("ORDERFLOW_PROBE_ONLY_IN_DOTENV", dotenv) == "from-dotenv"
    assert environment_value("ORDERFLOW_PROBE_NOWHERE", dotenv) == ""
