"""/healthz: the process answers. /readyz: the parts it needs answer too, and which one does not."""

import logging

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from notifications import broker
from orderflow.api import allow_methods, holds_metrics_token
from orderflow.connectivity import database_error_line

logger = logging.getLogger(__name__)


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    broker.queue_depth("default")


def _redis() -> None:
    redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()


CHECKS = {"database": _database, "broker": _broker, "redis": _redis}


@allow_methods("GET", "HEAD")
def healthz(request):
    return JsonResponse({"status": "ok"})


@allow_methods("GET", "HEAD")
def readyz(request):
    # Why a part is down names its host and port: for monitoring holding METRICS_TOKEN and the
    # log, not for whoever can reach the probe.
    shown = holds_metrics_token(request)
    results, down = {}, []
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as error:  # any failure means "not ready"; the text says which and why
            why = database_error_line(error) if name == "database" else str(error)
            reason = f"{error.__class__.__name__}: {why}"[:300]
            logger.warning("readyz: %s down: %s", name, reason)
            results[name] = f"down: {reason}" if shown else "down"
            down.append(name)
    status = 503 if down else 200
    return JsonResponse({"status": "unavailable" if down else "ready", "down": down, "checks": results}, status=status)
