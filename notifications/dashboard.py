"""The operator's dashboard in the admin: the state at a glance, drawn without any CDN."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from notifications import selectors
from orderflow.admin import may_view, needs

CHART_HEIGHT = 120
BAR_WIDTH = 14


# Queue depths, workers and delivery counts are the notifications' state: for those who may view them.
DASHBOARD_PERMISSION = "notifications.view_notification"


def dashboard_view(request):
    if not request.user.has_perm(DASHBOARD_PERMISSION):
        raise PermissionDenied(needs("“Can view notification”"))
    timeline = selectors.delivery_timeline()
    tallest = max((slot["sent"] + slot["failed"] for hourly in timeline.values() for slot in hourly), default=0) or 1
    charts = [
        {
            "channel": channel,
            "bars": _bars(hourly, tallest),
            "sent": sum(slot["sent"] for slot in hourly),
            "failed": sum(slot["failed"] for slot in hourly),
        }
        for channel, hourly in timeline.items()
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "queue_depths": selectors.queue_depths(),
        "workers": selectors.workers_seen(),
        "dead_letters_waiting": selectors.dead_letters_waiting(),
        "may_open_dead_letters": may_view(request, "notifications.deadletter"),
        "charts": charts,
        "chart_height": CHART_HEIGHT,
        "chart_width": BAR_WIDTH * 24,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def _bars(hourly: list[dict], tallest: int) -> list[dict]:
    """Stacked bars in SVG coordinates: failed (on top) and sent, one bar an hour."""
    bars = []
    for index, slot in enumerate(hourly):
        sent_height = round(CHART_HEIGHT * slot["sent"] / tallest)
        failed_height = round(CHART_HEIGHT * slot["failed"] / tallest)
        bars.append(
            {
                "x": index * BAR_WIDTH,
                "sent_y": CHART_HEIGHT - sent_height,
                "sent_height": sent_height,
                "failed_y": CHART_HEIGHT - sent_height - failed_height,
                "failed_height": failed_height,
                "label": f"{slot['hour']:%H}:00 sent {slot['sent']}, failed attempts {slot['failed']}",
            }
        )
    return bars
