"""Settings for a deployment behind a TLS-terminating proxy. DJANGO_DEBUG defaults to false
here, so a missing variable never shows a debug page, nor runs with the development key."""

import os

from orderflow.configuration import DOTENV, parse_bool, read, read_dotenv

# The .env file first, as base reads it (a DJANGO_DEBUG there still counts), then the default.
read_dotenv(DOTENV)
os.environ.setdefault("DJANGO_DEBUG", "false")

from orderflow.settings.base import *  # noqa: E402, F403
from orderflow.settings.base import MIDDLEWARE, env  # noqa: E402

# Static files (the admin's) served by the app itself, next after SecurityMiddleware as its docs
# ask: http://whitenoise.readthedocs.io
_after_security = MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1
MIDDLEWARE = [
    *MIDDLEWARE[:_after_security],
    "whitenoise.middleware.WhiteNoiseMiddleware",
    *MIDDLEWARE[_after_security:],
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = parse_bool("DJANGO_SECURE_SSL_REDIRECT", env.str("DJANGO_SECURE_SSL_REDIRECT", default="true"))
# Probes (compose's health check, Kubernetes) and Prometheus reach the process itself over
# plain HTTP, not through the proxy: redirected to https they would fail for good.
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = read("DJANGO_SECURE_HSTS_SECONDS", env.int, env, default=60 * 60 * 24 * 30, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
