"""System checks: a mistyped SMS_BACKEND or CELERY_RESULT_BACKEND stops `migrate`, `runserver`
and `start_celery_worker` with its name, instead of surfacing at the first send or publish."""

from celery.app.backends import by_url
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from notifications.backends import sms_backend_class
from orderflow.configuration import without_password


@checks.register()
def sms_backend_importable(app_configs, **kwargs):
    try:
        sms_backend_class()
    except ImproperlyConfigured as error:
        return [
            checks.Error(
                str(error),
                hint="A dotted path to a class, such as notifications.backends.sms.TwilioBackend.",
                id="notifications.E001",
            )
        ]
    return []


@checks.register()
def result_backend_loadable(app_configs, **kwargs):
    try:
        by_url(settings.CELERY_RESULT_BACKEND)
    except (ImportError, ValueError, ImproperlyConfigured) as error:
        return [
            checks.Error(
                f"CELERY_RESULT_BACKEND: cannot load a result backend for "
                f"{without_password(settings.CELERY_RESULT_BACKEND)!r} ({without_password(str(error))})",
                hint="django-db (the default), or a URL Celery knows, such as redis://localhost:6379/2.",
                id="notifications.E002",
            )
        ]
    return []
