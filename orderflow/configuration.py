"""Reading and checking the environment.

Every bad value raises ConfigurationError naming its variable; `exit_on_bad_configuration`
turns that into the one line a person deploying orderflow sees at start-up.
"""

import os
import re
import smtplib
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import environ
import phonenumbers
import redis
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email
from kombu import Connection

RATE_PERIODS = {"s": 1, "m": 60, "h": 3600}
RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")


class ConfigurationError(ImproperlyConfigured):
    def __init__(self, variable: str, problem: str):
        self.variable = variable
        super().__init__(f"{variable}: {problem}")


# The project's .env: read first by every settings module and entry point.
DOTENV = Path(__file__).resolve().parent.parent / ".env"
DEFAULT_SETTINGS_MODULE = "orderflow.settings.local"


def read_dotenv(path) -> None:
    """Variables from a `.env` file (the environment's own win), as UTF-8 with or without the
    byte-order mark some editors write: django-environ would read that mark into the first
    variable's name and drop it with only a warning."""
    if not path.is_file():
        return
    try:
        environ.Env.read_env(path, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigurationError(".env", f"{path} is not UTF-8 text (UTF-16?); save it as UTF-8") from None


def use_settings_module() -> None:
    """DJANGO_SETTINGS_MODULE as the environment has it, else as .env has it (.env.example sets
    it there), else the local settings. Read before Django reads it: once the entry point has
    set its default, a value in .env would never be seen."""
    read_dotenv(DOTENV)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS_MODULE)


def environment_value(variable: str, dotenv: Path = DOTENV) -> str:
    """A variable as the settings see it: the environment's value, else .env's, else empty. For
    `make run`, whose Procfile reads WEB_PORT and PROMETHEUS_MULTIPROC_DIR before any settings do."""
    read_dotenv(dotenv)
    return os.environ.get(variable, "")


@dataclass(frozen=True)
class Rate:
    """A number of events per period, written in Celery's rate syntax (`10/m`)."""

    count: int
    period_seconds: int

    @property
    def per_second(self) -> float:
        return self.count / self.period_seconds

    def __str__(self) -> str:
        unit = {seconds: unit for unit, seconds in RATE_PERIODS.items()}[self.period_seconds]
        return f"{self.count}/{unit}"


# The most a rate may count in its period: far above any provider's limit, and within what the
# limiter's Redis script computes with (a larger count failed every token request there).
MAX_RATE_COUNT = 1_000_000


def parse_rate(variable: str, value: str) -> Rate:
    match = RATE_PATTERN.match(value)
    if not match or int(match.group(1)) == 0:
        raise ConfigurationError(variable, f"{value!r} is not a rate; write a positive count per s, m or h, e.g. 10/m")
    if int(match.group(1)) > MAX_RATE_COUNT:
        raise ConfigurationError(
            variable, f"{value[:40]!r} counts more than {MAX_RATE_COUNT:,} per period; no provider takes that many"
        )
    return Rate(count=int(match.group(1)), period_seconds=RATE_PERIODS[match.group(2)])


TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}


def parse_bool(variable: str, value: str) -> bool:
    word = value.strip().lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise ConfigurationError(variable, f"{value!r} is not true or false")
    return word in TRUE_WORDS


def read(variable: str, cast, env, *, default, minimum=None, maximum=None, minimum_from: str = ""):
    """Read one variable with django-environ, naming it if the value does not parse.

    `minimum_from`: the variable the minimum is, named in the error.
    """
    try:
        value = cast(variable, default=default)
    except (ValueError, ImproperlyConfigured) as error:
        shown = without_password(env.str(variable))
        if cast == env.int:
            raise ConfigurationError(variable, f"{shown!r} is not a whole number") from None
        raise ConfigurationError(variable, f"{shown!r} is not valid ({error})") from None
    if minimum is not None and value < minimum:
        least = f"{minimum_from} ({minimum})" if minimum_from else minimum
        raise ConfigurationError(variable, f"{value!r} must be at least {least}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(variable, f"{value!r} must be at most {maximum}")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_log_level(variable: str, value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigurationError(variable, f"{value!r} is not a log level; use one of {', '.join(LOG_LEVELS)}")
    return level


# django-environ reads only the scheme (smtp+tls://, smtp+ssl://) and EMAIL_USE_TLS-style names
# in the query: `?tls=True`, the common way to write it, would have been dropped without a word.
EMAIL_URL_OPTIONS = {"tls": "EMAIL_USE_TLS", "ssl": "EMAIL_USE_SSL", "email_use_tls": "EMAIL_USE_TLS",
                     "email_use_ssl": "EMAIL_USE_SSL"}  # fmt: skip
# What django-environ makes of the secured schemes: smtps:// is STARTTLS, as smtp+tls://.
EMAIL_URL_SCHEMES = {"smtps": "EMAIL_USE_TLS", "smtp+tls": "EMAIL_USE_TLS", "smtp+ssl": "EMAIL_USE_SSL"}
SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
# The submission ports (RFC 8314): STARTTLS on 587, TLS from the first byte on 465.
STARTTLS_PORT, IMPLICIT_TLS_PORT = 587, smtplib.SMTP_SSL_PORT
EXAMPLE_TLS_URL = "smtp://user:password@smtp.example.com:587/?tls=true"
EXAMPLE_SSL_URL = "smtp://user:password@smtp.example.com:465/?ssl=true"


def email_settings(variable: str, value: str, env) -> dict:
    """The EMAIL_* settings an email URL gives: its scheme's or its `tls` or `ssl` option's way
    of securing SMTP, and with no port given, that way's port (smtp_port)."""
    # The URL may hold a password: the messages below do not repeat it.
    if hint := credentials_hint(value):
        raise ConfigurationError(variable, f"{without_password(value)!r} is not read as meant{hint}")
    try:
        config = env.email_url_config(value)
    except (ValueError, ImproperlyConfigured):
        schemes = ", ".join(f"{scheme}://" for scheme in env.EMAIL_SCHEMES)
        raise ConfigurationError(
            variable,
            f"{without_password(value)[:80]!r} is not an email URL; one of {schemes}, "
            "e.g. smtp://user:pass@host:587/?tls=True",
        ) from None
    url = urlsplit(value)
    given = [name.lower() for name, _ in parse_qsl(url.query, keep_blank_values=True)]
    if repeated := sorted({name for name in given if given.count(name) > 1}):
        raise ConfigurationError(variable, f"gives the option {repeated[0]!r} more than once; give it once")
    if config.get("EMAIL_PORT") == 0:
        raise ConfigurationError(
            variable, "names port 0; give the server's port, or none for 25 (587 with tls, 465 with ssl)"
        )
    # Read here rather than from django-environ, which lets its scheme override a ?tls= and a
    # ?email_use_tls= override its scheme.
    for name in ("OPTIONS", "EMAIL_USE_TLS", "EMAIL_USE_SSL"):
        config.pop(name, None)
    scheme_setting = EMAIL_URL_SCHEMES.get(url.scheme.lower())
    if scheme_setting:
        config[scheme_setting] = True
    for option, text in parse_qsl(url.query, keep_blank_values=True):
        setting = EMAIL_URL_OPTIONS.get(option.lower())
        if setting is None:
            raise ConfigurationError(variable, f"does not know the option {option.lower()!r}; use tls=true or ssl=true")
        word = text.strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ConfigurationError(variable, f"option {option.lower()}={text!r} is not true or false")
        if setting == scheme_setting and word in FALSE_WORDS:
            raise ConfigurationError(
                variable,
                f"{url.scheme.lower()}:// asks for {'ssl' if setting == 'EMAIL_USE_SSL' else 'STARTTLS'} and its "
                f"option {option.lower()}={text!r} says not; give one of them, e.g. {EXAMPLE_TLS_URL}",
            )
        config[setting] = word in TRUE_WORDS
    if config.get("EMAIL_USE_TLS") and config.get("EMAIL_USE_SSL"):
        raise ConfigurationError(variable, "asks for both tls and ssl; use tls (STARTTLS, port 587) or ssl (port 465)")
    if config.get("EMAIL_BACKEND") == SMTP_BACKEND:
        if not config.get("EMAIL_HOST"):
            raise ConfigurationError(
                variable, "names no SMTP host, e.g. smtp://user:password@smtp.example.com:587/?tls=true"
            )
        config["EMAIL_PORT"] = smtp_port(variable, config)
    return config


def smtp_port(variable: str, config: dict) -> int:
    """The port an SMTP URL's server is reached on: the one given, or its way's (STARTTLS 587,
    the submission port, where 25 is often blocked or takes no password; ssl 465; plain 25).

    Refused: STARTTLS or plain SMTP on 465, which waits in silence for a TLS handshake, so that
    every email would fail at its send after a time-out; and ssl on 587, whose handshake every
    send would fail.
    """
    port = config.get("EMAIL_PORT")
    if config.get("EMAIL_USE_SSL"):
        if port == STARTTLS_PORT:
            raise ConfigurationError(
                variable,
                f"asks for ssl (TLS from the first byte) on port {STARTTLS_PORT}, where servers speak STARTTLS; "
                f"write {EXAMPLE_TLS_URL}, or {EXAMPLE_SSL_URL}",
            )
        return port or IMPLICIT_TLS_PORT
    if port == IMPLICIT_TLS_PORT:
        asked = "STARTTLS" if config.get("EMAIL_USE_TLS") else "plain SMTP"
        raise ConfigurationError(
            variable,
            f"asks for {asked} on port {IMPLICIT_TLS_PORT}, where servers speak TLS from the first byte; "
            f"write {EXAMPLE_SSL_URL}, or {EXAMPLE_TLS_URL}",
        )
    if config.get("EMAIL_USE_TLS"):
        return port or STARTTLS_PORT
    return port or smtplib.SMTP_PORT


def check_hosts(variable: str, hosts: list[str]) -> list[str]:
    """Host names as Django matches them: a name holding a space matches no request, and with
    none at all every request is refused (DEBUG off)."""
    if not hosts:
        raise ConfigurationError(
            variable, "is empty, so every request would be refused; name the hosts, e.g. shop.example.com,localhost"
        )
    for host in hosts:
        if not host.strip() or any(character.isspace() for character in host):
            raise ConfigurationError(
                variable, f"{host!r} is not a host name; separate names with commas, e.g. shop.example.com,localhost"
            )
    return hosts


# A URL's user and password up to its last "@", for a URL whose password holds an unencoded
# "#", "/" or "?": a URL parser ends the address there and reads the rest of the password as
# a path or fragment (and the text before it as a host and a malformed port).
CREDENTIALS = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<password>.*)@")
CUT_SHORT = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<authority>[^/?#]*)[/?#](?P<rest>.*)$")


def credentials_hint(url: str) -> str:
    """What to do about a URL whose user or password holds an unencoded "#", "/" or "?"."""
    cut = CUT_SHORT.match(url)
    if not cut or "@" in cut["authority"] or "@" not in cut["rest"]:
        return ""  # an "@" only after the address may be a query's or a path's
    _, colon, after = cut["authority"].rpartition(":")
    if not colon or after.isdigit():
        return ""  # host:port, then a path holding an "@"
    return "; a '#', '/' or '?' in its user name or password must be percent-encoded (%23, %2F, %3F)"


def without_password(url: str) -> str:
    """`url` as an error message may show it: a password in it replaced by ***."""
    if credentials_hint(url):
        return CREDENTIALS.sub(lambda found: f"{found['scheme']}{found['user']}:***@", url, count=1)
    parts = urlsplit(url)
    try:
        password = parts.password
    except ValueError:
        password = None
    if not password:
        return url
    credentials, _, host = parts.netloc.rpartition("@")
    user = credentials.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def check_url(variable: str, value: str, *, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    scheme = parts.scheme.split("+")[0]
    shown = without_password(value)
    if scheme not in schemes or not (parts.netloc or parts.path):
        raise ConfigurationError(variable, f"{shown!r} is not a URL with one of the schemes {', '.join(schemes)}")
    if hint := credentials_hint(value):
        raise ConfigurationError(variable, f"{shown!r} is not read as meant{hint}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigurationError(variable, f"{shown!r} has a malformed port") from None
    return value


REDIS_SCHEMES = ("redis", "rediss")
# A Redis URL names its database: without one redis-py takes 0, the default broker's, and the
# broker's messages, the limiter's keys and the task results would share one database.
REDIS_DATABASE_PATH = re.compile(r"/\d+")


def _unknown_option(error: TypeError) -> str:
    unknown = re.search(r"argument '(\w+)'", str(error))
    return unknown.group(1) if unknown else str(error)


def _check_redis_database(variable: str, value: str) -> None:
    # redis-py reads a path that is not a number as database 0, and kombu fails on it when it
    # first connects; no path at all is database 0 too.
    if not REDIS_DATABASE_PATH.fullmatch(urlsplit(value).path):
        raise ConfigurationError(variable, f"{without_password(value)!r}: its path must be a database number, e.g. /1")


def check_redis_url(variable: str, value: str) -> str:
    """A Redis URL as redis-py will use it: a database number, and options the connection
    knows (`?socket_timout=5` would fail every use of the limiter and the cache)."""
    _check_redis_database(variable, value)
    try:
        redis.ConnectionPool.from_url(value).make_connection()  # builds the connection; does not connect
    except ValueError as error:
        raise ConfigurationError(variable, str(error)) from None
    except TypeError as error:
        raise ConfigurationError(
            variable, f"has an option the Redis connection does not know: {_unknown_option(error)!r}"
        ) from None
    return value


def check_result_backend(variable: str, value: str) -> str:
    """Celery's result backend: a Redis one names its database (Celery fails on any other path
    only when a worker starts, with a traceback)."""
    if urlsplit(value).scheme in REDIS_SCHEMES:
        _check_redis_database(variable, value)
    return value


def check_broker_url(variable: str, value: str) -> str:
    """A broker URL, or a `;` list of them to fail over to, that kombu will use as written: a
    Redis one names its database, and every query option is one kombu knows (it refuses an
    unknown one, `?socket_timout=5`, only when it builds a connection, that is on every publish)."""
    for url in value.split(";"):  # as kombu splits them
        if urlsplit(url).scheme in REDIS_SCHEMES:
            _check_redis_database(variable, url)
    try:
        Connection(value).release()
    except TypeError as error:
        raise ConfigurationError(
            variable, f"has an option the broker connection does not know: {_unknown_option(error)!r}"
        ) from None
    return value


def check_whole_number_options(variable: str, options: dict, names: tuple[str, ...]) -> None:
    """Options from a URL's query that must be whole numbers (django-environ makes digits an
    int and leaves anything else text, which the driver refuses only when it is used)."""
    for name in names:
        value = options.get(name)
        if value is not None and not (isinstance(value, int) and value >= 0):
            raise ConfigurationError(variable, f"?{name}={value} is not a whole number, e.g. ?{name}=5")


# .env.example marks each secret a deployment must set with this; the example is public.
PLACEHOLDER_MARK = "CHANGE-me"
# The variables that hold a secret of .env.example's (in a URL: a password).
SECRETS_TO_SET = (
    "DJANGO_SECRET_KEY",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "EMAIL_URL",
    "METRICS_TOKEN",
    "FLOWER_BASIC_AUTH",
)


def check_not_placeholder(variable: str, value: str) -> str:
    """A secret of the deployment's own, not .env.example's placeholder for it (shown nowhere)."""
    if PLACEHOLDER_MARK.lower() in value.lower():
        raise ConfigurationError(
            variable, f"still holds .env.example's placeholder ({PLACEHOLDER_MARK}...); set a secret of your own"
        )
    return value


# Django's own bar for a key (check --deploy, security.W009): anything shorter or plainer can be guessed.
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_DIFFERENT_CHARACTERS = 5


def check_secret_key(variable: str, value: str) -> str:
    """A key long and varied enough to sign sessions and tokens with, for DEBUG off."""
    if value.startswith("django-insecure-"):
        raise ConfigurationError(variable, "is one startproject made for development; set a secret of your own")
    if len(value) < SECRET_KEY_MIN_LENGTH or len(set(value)) < SECRET_KEY_MIN_DIFFERENT_CHARACTERS:
        raise ConfigurationError(
            variable,
            f"is too easy to guess ({len(value)} characters, {len(set(value))} different); set at least "
            f"{SECRET_KEY_MIN_LENGTH} random characters, e.g. from "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'",
        )
    return value


def check_email_address(variable: str, value: str) -> str:
    """An address to send from, bare or with a name (`Shop <orders@shop.example>`)."""
    _, address = parseaddr(value)
    try:
        validate_email(address)
    except ValidationError:
        raise ConfigurationError(
            variable, f"{value!r} is not an email address, e.g. Shop <orders@shop.example>"
        ) from None
    return value


# Twilio sends from a phone number, or in some countries from an alphanumeric sender ID.
ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


def check_sender(variable: str, value: str) -> str:
    """A sender ID as it is, or a phone number in E.164, as Twilio takes it (`+1 (415) 555-2671`
    becomes +14155552671)."""
    if ALPHANUMERIC_SENDER.match(value):
        return value
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise ConfigurationError(
            variable,
            f"{value!r} is neither a phone number in international form (+14155552671) "
            "nor a sender ID of up to 11 letters",
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_twilio_sid(variable: str, value: str, *, prefix: str, base_url: str) -> str:
    """A SID as Twilio's own API issues them: its two letters and 32 hexadecimal digits. A
    Twilio-compatible provider elsewhere (TWILIO_API_BASE_URL) may name accounts its own way."""
    host = urlsplit(base_url).hostname or ""
    if host != "twilio.com" and not host.endswith(".twilio.com"):
        return value
    if not re.fullmatch(f"{prefix}[0-9a-fA-F]{{32}}", value):
        raise ConfigurationError(
            variable,
            f"must be {prefix} followed by 32 hexadecimal digits, as the Twilio console shows it "
            f"(got {len(value)} characters{'' if value.startswith(prefix) else f' not starting with {prefix}'})",
        )
    return value


def check_currency(variable: str, value: str) -> str:
    """An ISO 4217 currency code (any case), or empty for none; returned upper case."""
    code = value.strip().upper()
    if not code:
        return ""
    from orders.money import currency_problem  # Babel's data, loaded only when a currency is set

    if problem := currency_problem(code):
        raise ConfigurationError(variable, f"{problem}; leave it empty for none")
    return code


def check_directory(variable: str, value: str) -> str:
    if not os.path.isdir(value) or not os.access(value, os.W_OK):
        raise ConfigurationError(variable, f"{value!r} is not a directory this process can write to")
    return value


SETTINGS_MODULES = ("orderflow.settings.local", "orderflow.settings.production")


def as_configuration_error(error: BaseException) -> ConfigurationError | None:
    """The error as a bad variable, if it is one: a ConfigurationError, or a DJANGO_SETTINGS_MODULE
    naming no module or set empty (a module missing inside real settings is a defect, and stays one)."""
    if isinstance(error, ConfigurationError):
        return error
    module = os.environ.get("DJANGO_SETTINGS_MODULE")
    use = f"use one of {', '.join(SETTINGS_MODULES)}"
    if isinstance(error, ModuleNotFoundError) and module and error.name and f"{module}.".startswith(f"{error.name}."):
        return ConfigurationError("DJANGO_SETTINGS_MODULE", f"there is no module {module!r}; {use}")
    if isinstance(error, ImproperlyConfigured) and module is not None and not module.strip():
        # Set, but empty: the entry points' default applies only when it is not set at all.
        return ConfigurationError("DJANGO_SETTINGS_MODULE", f"it is set but empty; unset it (local settings) or {use}")
    return None


# The exit status gunicorn reads as "worker failed to boot": it stops, instead of starting
# one worker after another into the same error.
WEB_WORKER_BOOT_ERROR = 3


@contextmanager
def exit_on_bad_configuration(status: int = 2):
    """Let a bad variable end the process with one line, and `status`, instead of a traceback."""
    try:
        yield
    except (ImproperlyConfigured, ModuleNotFoundError) as error:
        bad = as_configuration_error(error)
        if bad is None:
            raise
        print(f"orderflow: configuration error: {bad}", file=sys.stderr)
        raise SystemExit(status) from None


def report_bad_configuration_in_one_line() -> None:
    """For entry points we do not own (the `celery` command): print a bad variable as one line."""
    default_hook = sys.excepthook

    def hook(kind, error, traceback):
        bad = as_configuration_error(error)
        if bad is not None:
            print(f"orderflow: configuration error: {bad}", file=sys.stderr)
        else:
            default_hook(kind, error, traceback)

    sys.excepthook = hook
