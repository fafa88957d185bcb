"""Settings shared by every environment.

Every variable of the configuration contract is read here, once, with one django-environ
`env`. A bad value raises ConfigurationError naming the variable.
"""

import os
import sys
from pathlib import Path

import environ
from kombu import Exchange, Queue

from orderflow.configuration import (
    DOTENV,
    REDIS_SCHEMES,
    SECRETS_TO_SET,
    ConfigurationError,
    check_broker_url,
    check_currency,
    check_directory,
    check_email_address,
    check_hosts,
    check_not_placeholder,
    check_redis_url,
    check_result_backend,
    check_secret_key,
    check_sender,
    check_twilio_sid,
    check_url,
    check_whole_number_options,
    email_settings,
    parse_bool,
    parse_log_level,
    parse_rate,
    read,
    read_dotenv,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
read_dotenv(DOTENV)

DEV_SECRET_KEY = "dev-only-insecure-key-change-me"  # noqa: S105 - refused when DEBUG is off

# --- Core ------------------------------------------------------------------------------
DEBUG = parse_bool("DJANGO_DEBUG", env.str("DJANGO_DEBUG", default="true"))
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or DEV_SECRET_KEY
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ConfigurationError("DJANGO_SECRET_KEY", "must be set (not empty) when DJANGO_DEBUG is false")
if not DEBUG:
    # A secret left as .env.example has it is known to anyone: sessions signed with it could be
    # forged, the database, broker, metrics or Flower opened with it.
    for variable in SECRETS_TO_SET:
        check_not_placeholder(variable, env.str(variable, default=""))
    check_secret_key("DJANGO_SECRET_KEY", SECRET_KEY)
ALLOWED_HOSTS = check_hosts(
    "DJANGO_ALLOWED_HOSTS", env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "django_celery_beat",
    "django_celery_results",
    "orders",
    "notifications",
]

# Database sessions, as Django's default, refusing a cookie no session key can look like.
SESSION_ENGINE = "orderflow.sessions"

MIDDLEWARE = [
    "orderflow.middleware.probe_host_middleware",
    "orderflow.middleware.api_over_https_middleware",
    "django.middleware.security.SecurityMiddleware",
    "orderflow.middleware.request_limits_middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "orderflow.middleware.DatabaseUnavailableMiddleware",
    "orderflow.middleware.AdminBadInputMiddleware",
]

ROOT_URLCONF = "orderflow.urls"
WSGI_APPLICATION = "orderflow.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Anything larger is refused with 413 before parsing. The largest valid order (500 items, sku
# and name at their longest, in characters JSON escapes as 12 bytes) is about 1.7 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- Database --------------------------------------------------------------------------
# The databases whose drivers requirements.txt installs: PostgreSQL, and SQLite for a quick local run.
DATABASE_SCHEMES = ("postgres", "postgresql", "pgsql", "psql", "sqlite")
DATABASE_URL = check_url(
    # The default is the project's own file, whichever folder a command is started from.
    "DATABASE_URL",
    env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
    schemes=DATABASE_SCHEMES,
)
DATABASES = {"default": read("DATABASE_URL", env.db_url, env, default=DATABASE_URL)}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
if sys.argv[1:2] == ["runserver"]:
    # The development server answers each request in a thread of its own, and a persistent
    # connection outlives its thread: a few clients in parallel used up PostgreSQL's
    # connections. https://docs.djangoproject.com/en/5.2/ref/databases/#caveats
    DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django turns psycopg's prepared statements off for poolers; only orderflow.database's
    # cursor uses them (see there). `?prepare_threshold=` in DATABASE_URL wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)
    # Seconds a connection may take to open. A host that takes the connection and stays silent
    # (a firewall, a hung server) would otherwise hold a request, or a send waiting for the
    # database at its claim, for good. `?connect_timeout=` in DATABASE_URL wins.
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
    check_whole_number_options(
        "DATABASE_URL", DATABASES["default"]["OPTIONS"], ("prepare_threshold", "connect_timeout")
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # make run's default: the web server, three workers and beat write to one file. A transaction
    # takes the write lock as it begins, so one that read first cannot fail at once with "database
    # is locked" when it then writes; a writer waits up to 20 s for another; in WAL mode reads go on
    # while one writes. https://docs.djangoproject.com/en/5.2/ref/databases/#database-is-locked-errors
    SQLITE_OPTIONS = {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL"}
    DATABASES["default"]["OPTIONS"] = {**SQLITE_OPTIONS, **DATABASES["default"].get("OPTIONS", {})}

# --- Redis (rate limiter, cache) -------------------------------------------------------
REDIS_URL = check_redis_url(
    "REDIS_URL",
    check_url("REDIS_URL", env.str("REDIS_URL", default="redis://localhost:6379/1"), schemes=REDIS_SCHEMES),
)
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

# --- Celery ----------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html
CELERY_BROKER_URL = check_url(
    "CELERY_BROKER_URL",
    env.str("CELERY_BROKER_URL", default="redis://localhost:6379/0"),
    schemes=("redis", "rediss", "amqp", "amqps", "pyamqp", "memory"),
)
check_broker_url("CELERY_BROKER_URL", CELERY_BROKER_URL)
CELERY_RESULT_BACKEND = check_result_backend(
    "CELERY_RESULT_BACKEND", env.str("CELERY_RESULT_BACKEND", default="django-db")
)
CELERY_RESULT_EXTENDED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "orderflow.beat:DatabaseScheduler"  # django-celery-beat's, see orderflow/beat.py
# A publish with the broker down must fail within a second or two, not hang a request. It is
# tried twice (notifications.broker), each time connecting at most twice, 0.2 s apart (kombu's
# default pause is 2 s: 4.2 s a refused publish); 1 s to connect keeps a broker that does not
# answer at all (a host down, packets dropped) to a few seconds. A LAN connects in milliseconds.
CELERY_BROKER_CONNECTION_TIMEOUT = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 1,
    "socket_timeout": 5,
    "max_retries": 1,
    "interval_start": 0.2,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers and beat try to reach a broker that went away for as long as it takes (Celery's
# default gives up after 100 tries, about 50 minutes, and the process exits).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Survives a Redis broker lost while the worker holds messages; see orderflow/worker.py.
CELERY_WORKER_CONSUMER = "orderflow.worker:Consumer"
# Celery reads these on every publish. Stated here, at Celery's defaults, because a setting
# Django does not have is first looked for there under four names (10 µs a read, 0.08 ms an order).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_POOL_ACQUIRE_TIMEOUT = None
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_TASK_REPR_MAXLEVELS = 3
# One message reserved per process, also for a plain `celery worker`: a backlog waits in the broker.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Workers keep their database connection across tasks (Celery closes it after each by default):
# a broken one is dropped before the next task (notifications.tasks) and an old one after
# CONN_MAX_AGE. Celery's own count would close it every N tasks; at 1000, a pool child's life
# (--max-tasks-per-child), a busy worker no longer reconnects several times a second.
CELERY_DB_REUSE_MAX = 1000
# A message is acknowledged after its task ran, and given back if the worker dies mid-task.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# When the broker connection drops, a running send finishes instead of being terminated: cut
# off mid-send it would leave its row claimed until the lease ends, or send twice. The message
# it can no longer acknowledge comes back and finds nothing to claim.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-cancel-long-running-tasks-on-connection-loss
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False

CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name), routing_key=name) for name in ("default", "notifications", "sms", "email")
]
CELERY_TASK_ROUTES = {
    "notifications.tasks.send_sms_notification": {"queue": "sms"},
    "notifications.tasks.send_email_notification": {"queue": "email"},
    "notifications.tasks.send_order_confirmation": {"queue": "notifications"},
    "notifications.tasks.send_order_status_update": {"queue": "notifications"},
    "notifications.tasks.retry_failed_notifications": {"queue": "notifications"},
    "notifications.tasks.requeue_dead_letter_batch": {"queue": "notifications"},
    "notifications.tasks.record_receipt": {"queue": "notifications"},
    "notifications.tasks.cleanup_old_notifications": {"queue": "default"},
    "notifications.tasks.health_check": {"queue": "default"},
}

# --- SMS (Twilio) ----------------------------------------------------------------------
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
TWILIO_FROM_NUMBER = env.str("TWILIO_FROM_NUMBER", default="")
TWILIO_MESSAGING_SERVICE_SID = env.str("TWILIO_MESSAGING_SERVICE_SID", default="")
TWILIO_API_BASE_URL = check_url(
    "TWILIO_API_BASE_URL",
    env.str("TWILIO_API_BASE_URL", default="https://api.twilio.com"),
    schemes=("http", "https"),
)
TWILIO_STATUS_CALLBACK_URL = env.str("TWILIO_STATUS_CALLBACK_URL", default="")
if TWILIO_STATUS_CALLBACK_URL:
    check_url("TWILIO_STATUS_CALLBACK_URL", TWILIO_STATUS_CALLBACK_URL, schemes=("http", "https"))
# Half a set of credentials is a mistake, not a wish for the console: no SMS would reach anyone.
if bool(TWILIO_ACCOUNT_SID) != bool(TWILIO_AUTH_TOKEN):
    missing = "TWILIO_AUTH_TOKEN" if TWILIO_ACCOUNT_SID else "TWILIO_ACCOUNT_SID"
    given = "TWILIO_ACCOUNT_SID" if TWILIO_ACCOUNT_SID else "TWILIO_AUTH_TOKEN"
    raise ConfigurationError(missing, f"must be set too: {given} is set, and SMS go through Twilio with both")
if TWILIO_ACCOUNT_SID:
    check_twilio_sid("TWILIO_ACCOUNT_SID", TWILIO_ACCOUNT_SID, prefix="AC", base_url=TWILIO_API_BASE_URL)
if TWILIO_MESSAGING_SERVICE_SID:
    check_twilio_sid(
        "TWILIO_MESSAGING_SERVICE_SID", TWILIO_MESSAGING_SERVICE_SID, prefix="MG", base_url=TWILIO_API_BASE_URL
    )
if TWILIO_FROM_NUMBER:
    TWILIO_FROM_NUMBER = check_sender("TWILIO_FROM_NUMBER", TWILIO_FROM_NUMBER)
_twilio_configured = bool(TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)
SMS_BACKEND = env.str(
    "SMS_BACKEND",
    default="notifications.backends.sms.TwilioBackend"
    if _twilio_configured
    else "notifications.backends.sms.ConsoleBackend",
)
if SMS_BACKEND.endswith(".TwilioBackend"):
    if not _twilio_configured:
        raise ConfigurationError("TWILIO_ACCOUNT_SID", "and TWILIO_AUTH_TOKEN must be set to send SMS through Twilio")
    if not (TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID):
        raise ConfigurationError(
            "TWILIO_FROM_NUMBER", "or TWILIO_MESSAGING_SERVICE_SID must be set to send SMS through Twilio"
        )

# --- Email -----------------------------------------------------------------------------
vars().update(email_settings("EMAIL_URL", env.str("EMAIL_URL", default="consolemail://"), env))
DEFAULT_FROM_EMAIL = check_email_address(
    "DEFAULT_FROM_EMAIL", env.str("DEFAULT_FROM_EMAIL", default="orders@localhost")
)
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_TIMEOUT = 10

# --- Notifications ---------------------------------------------------------------------
NOTIFICATIONS_SMS_RATE_LIMIT = parse_rate(
    "NOTIFICATIONS_SMS_RATE_LIMIT", env.str("NOTIFICATIONS_SMS_RATE_LIMIT", default="10/m")
)
NOTIFICATIONS_EMAIL_RATE_LIMIT = parse_rate(
    "NOTIFICATIONS_EMAIL_RATE_LIMIT", env.str("NOTIFICATIONS_EMAIL_RATE_LIMIT", default="30/m")
)
# Upper bounds: past them a date computed from the value leaves the calendar, and the sweep or
# the cleanup fails every time it runs.
DAY_SECONDS = 24 * 60 * 60
NOTIFICATIONS_MAX_RETRIES = read("NOTIFICATIONS_MAX_RETRIES", env.int, env, default=3, minimum=0, maximum=100)
NOTIFICATIONS_RETRY_BACKOFF = read(
    "NOTIFICATIONS_RETRY_BACKOFF", env.int, env, default=60, minimum=1, maximum=DAY_SECONDS
)
NOTIFICATIONS_RETRY_BACKOFF_MAX = read(
    "NOTIFICATIONS_RETRY_BACKOFF_MAX",
    env.int,
    env,
    default=600,
    minimum=NOTIFICATIONS_RETRY_BACKOFF,
    minimum_from="NOTIFICATIONS_RETRY_BACKOFF",
    maximum=7 * DAY_SECONDS,
)
NOTIFICATIONS_RETENTION_DAYS = read(
    "NOTIFICATIONS_RETENTION_DAYS", env.int, env, default=7, minimum=1, maximum=100 * 365
)
NOTIFICATIONS_DEAD_LETTER_RETENTION_DAYS = read(
    "NOTIFICATIONS_DEAD_LETTER_RETENTION_DAYS", env.int, env, default=30, minimum=1, maximum=100 * 365
)
NOTIFICATIONS_STUCK_AFTER = read(
    "NOTIFICATIONS_STUCK_AFTER", env.int, env, default=300, minimum=1, maximum=7 * DAY_SECONDS
)

# --- Metrics ---------------------------------------------------------------------------
# https://prometheus.github.io/client_python/multiprocess/ : every web and worker process
# writes its counts to this directory, emptied when the deployment starts.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    check_directory("PROMETHEUS_MULTIPROC_DIR", PROMETHEUS_MULTIPROC_DIR)
else:
    # Blank means unset, for prometheus_client too: it counts across processes whenever the
    # variable exists, and a blank one would have it write its files into the current directory.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
# A scraper sends `Authorization: Bearer <METRICS_TOKEN>`; without a token only staff may read /metrics.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Orders ----------------------------------------------------------------------------
# The currency of orders that name none (ISO 4217); each order keeps the one it was placed in.
# Empty: amounts are shown bare.
ORDERS_CURRENCY = check_currency("ORDERS_CURRENCY", env.str("ORDERS_CURRENCY", default=""))

# --- API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "orderflow.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["orderflow.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "orderflow.api.Pagination",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "orderflow.negotiation.ContentNegotiation",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "orderflow.schema.AutoSchema",
    "EXCEPTION_HANDLER": "orderflow.api.exception_handler",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "orderflow API",
    "DESCRIPTION": "Orders in, SMS and email notifications out.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "orders.models.OrderStatus",
        "ChangeSourceEnum": "orders.models.ChangeSource",
        "NotificationStatusEnum": "notifications.models.NotificationStatus",
        "ChannelEnum": "notifications.models.Channel",
        "EventEnum": "notifications.models.Event",
    },
}

# --- Logging ---------------------------------------------------------------------------
# LOG_FORMAT=json gives one JSON object a line (python-json-logger) for log shippers.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ConfigurationError("LOG_FORMAT", f"{LOG_FORMAT!r} is not plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "mask": {"()": "orderflow.masking.MaskingFilter"},
        "client_error_plain": {"()": "orderflow.masking.ClientErrorWithoutTraceback"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["mask"]}},
    "root": {"handlers": ["console"], "level": parse_log_level("LOG_LEVEL", env.str("LOG_LEVEL", default="INFO"))},
    "loggers": {
        # Only through the masked handler above: Django's own console handler (under DEBUG)
        # printed every warning a second time, unmasked.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.request": {"filters": ["client_error_plain"]},
        # The twilio library logs each request's parameters (numbers, texts) at INFO.
        "twilio": {"level": "WARNING"},
        # The development server's request lines (make run's web process): masked like the rest,
        # where Django's own handler for them would print a searched phone number whole.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
# Workers log through the configuration above, not Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# What a task prints (the console email backend writes each email out) is not a warning.
CELERY_WORKER_REDIRECT_STDOUTS_LEVEL = "INFO"
