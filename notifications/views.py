"""`/metrics` for Prometheus, for staff or a scraper holding METRICS_TOKEN; nobody else."""

import hmac

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from notifications.metrics import StateCollector
from orderflow.api import allow_methods


def _allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""  # the scheme is case-insensitive
    # As bytes: compare_digest refuses str holding anything but ASCII, and a header may.
    if token and given and hmac.compare_digest(given.encode(), token.encode()):
        return True
    return request.user.is_authenticated and request.user.is_staff


@allow_methods("GET")
def metrics(request):
    if not _allowed(request):
        return JsonResponse(
            {"detail": "Metrics need a staff login or Authorization: Bearer <METRICS_TOKEN>.", "code": "forbidden"},
            status=403,
        )
    if settings.PROMETHEUS_MULTIPROC_DIR:
        processes = CollectorRegistry()
        MultiProcessCollector(processes, path=settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        processes = REGISTRY  # one process: its own counts are all there is
    state = CollectorRegistry()
    state.register(StateCollector())
    return HttpResponse(generate_latest(processes) + generate_latest(state), content_type=CONTENT_TYPE_LATEST)
