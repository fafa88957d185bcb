"""Settings for a deployment behind a TLS-terminating proxy."""

from orderflow.configuration import parse_bool, read
from orderflow.settings.base import *  # noqa: F403
from orderflow.settings.base import MIDDLEWARE, env

# Static files (the admin's) served by the app itself: http://whitenoise.readthedocs.io
MIDDLEWARE = [MIDDLEWARE[0], "whitenoise.middleware.WhiteNoiseMiddleware", *MIDDLEWARE[1:]]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = parse_bool("DJANGO_SECURE_SSL_REDIRECT", env.str("DJANGO_SECURE_SSL_REDIRECT", default="true"))
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = read("DJANGO_SECURE_HSTS_SECONDS", env.int, env, default=60 * 60 * 24 * 30, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
