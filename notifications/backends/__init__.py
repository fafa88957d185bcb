"""Channel backends: one object per channel that hands a message to its provider.

Each `send` returns the provider's message id or raises a DeliveryError subclass.
"""

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from notifications.backends.email import EmailBackend


@cache
def _backend(path: str):
    return import_string(path)()


def get_backend(channel: str):
    if channel == "sms":
        return _backend(settings.SMS_BACKEND)
    return _backend(f"{EmailBackend.__module__}.{EmailBackend.__qualname__}")
