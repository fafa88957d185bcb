"""System checks: a mistyped SMS_BACKEND stops `migrate`, `runserver` and `start_celery_worker`
with its name, instead of surfacing at the first send."""

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from notifications.backends import sms_backend_class


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
