from django.contrib import admin
from django.urls import include, path, re_path
from django.views import defaults

from notifications.api import OrderNotificationList
from notifications.dashboard import dashboard_view
from notifications.views import metrics
from notifications.webhooks import twilio_status
from orderflow import api, health
from orderflow.schema_view import SchemaView

# The admin's "View site" linked to /, where nothing is served: the API and the admin are the site.
admin.site.site_url = None

urlpatterns = [
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    # With or without a slash, as probes and scrapers are configured either way.
    re_path(r"^healthz/?$", health.healthz, name="healthz"),
    re_path(r"^readyz/?$", health.readyz, name="readyz"),
    re_path(r"^metrics/?$", metrics, name="metrics"),
    path("webhooks/twilio/status/", twilio_status, name="twilio-status"),
    # Without its slash too: APPEND_SLASH would answer a POST with a redirect, and lose it.
    path("webhooks/twilio/status", twilio_status),
    path("api/", include("orders.urls")),
    # Each with or without its slash, as the order URLs (orders.urls).
    re_path(
        r"^api/orders/(?P<order_id>[0-9]+)/notifications/?$",
        OrderNotificationList.as_view(),
        name="order-notifications",
    ),
    re_path(r"^api/schema/?$", SchemaView.as_view(), name="schema"),
    # Anything else under /api/ is a JSON 404, in DEBUG too.
    re_path(r"^api/", api.json_not_found),
]


def handler404(request, exception=None):
    if request.path.startswith(api.JSON_PREFIXES):
        return api.json_not_found(request, exception)
    return defaults.page_not_found(request, exception)


def handler500(request):
    if request.path.startswith(api.JSON_PREFIXES):
        return api.json_server_error(request)
    return defaults.server_error(request)


def handler400(request, exception=None):
    if request.path.startswith(api.JSON_PREFIXES):
        return api.json_bad_request(request, exception)
    return defaults.bad_request(request, exception)
