"""Reading and checking the environment.

Every bad value raises ConfigurationError naming its variable; `exit_on_bad_configuration`
turns that into the one line a person deploying orderflow sees at start-up.
"""

import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

RATE_PERIODS = {"s": 1, "m": 60, "h": 3600}
RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")


class ConfigurationError(ImproperlyConfigured):
    def __init__(self, variable: str, problem: str):
        self.variable = variable
        super().__init__(f"{variable}: {problem}")


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


def parse_rate(variable: str, value: str) -> Rate:
    match = RATE_PATTERN.match(value)
    if not match or int(match.group(1)) == 0:
        raise ConfigurationError(variable, f"{value!r} is not a rate; write a positive count per s, m or h, e.g. 10/m")
    return Rate(count=int(match.group(1)), period_seconds=RATE_PERIODS[match.group(2)])


TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}


def parse_bool(variable: str, value: str) -> bool:
    word = value.strip().lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise ConfigurationError(variable, f"{value!r} is not true or false")
    return word in TRUE_WORDS


def read(variable: str, cast, env, *, default, minimum=None):
    """Read one variable with django-environ, naming it if the value does not parse."""
    try:
        value = cast(variable, default=default)
    except (ValueError, ImproperlyConfigured) as error:
        raise ConfigurationError(variable, f"{env.str(variable)!r} is not valid ({error})") from None
    if minimum is not None and value < minimum:
        raise ConfigurationError(variable, f"{value!r} must be at least {minimum}")
    return value


def check_url(variable: str, value: str, *, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    scheme = parts.scheme.split("+")[0]
    if scheme not in schemes or not (parts.netloc or parts.path):
        raise ConfigurationError(variable, f"{value!r} is not a URL with one of the schemes {', '.join(schemes)}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigurationError(variable, f"{value!r} has a malformed port") from None
    return value


@contextmanager
def exit_on_bad_configuration():
    """Let a bad variable end the process with one line instead of a traceback."""
    try:
        yield
    except ConfigurationError as error:
        print(f"orderflow: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def report_bad_configuration_in_one_line() -> None:
    """For entry points we do not own (the `celery` command): print a bad variable as one line."""
    default_hook = sys.excepthook

    def hook(kind, error, traceback):
        if isinstance(error, ConfigurationError):
            print(f"orderflow: configuration error: {error}", file=sys.stderr)
        else:
            default_hook(kind, error, traceback)

    sys.excepthook = hook
