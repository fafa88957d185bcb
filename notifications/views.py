"""`/metrics` for Prometheus, for staff or a scraper holding METRICS_TOKEN; nobody else."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from notifications.metrics import StateCollector
from orderflow.api import allow_methods, holds_metrics_token


def _allowed(request) -> bool:
    return holds_metrics_token(request) or (request.user.is_authenticated and request.user.is_staff)


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
