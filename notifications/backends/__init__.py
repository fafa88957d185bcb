"""Channel backends: one object per channel that hands a message to its provider.

Each `send` returns the provider's message id or raises a DeliveryError subclass.
"""

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from notifications.backends.email import EmailBackend


def sms_backend_class() -> type:
    """The class SMS_BACKEND names; ImproperlyConfigured, naming the variable, if it is not one."""
    path = settings.SMS_BACKEND
    try:
        backend_class = import_string(path)
    except ImportError as error:
        raise ImproperlyConfigured(f"SMS_BACKEND: cannot import {path!r}: {error}") from error
    if not (isinstance(backend_class, type) and callable(getattr(backend_class, "send", None))):
        raise ImproperlyConfigured(f"SMS_BACKEND: {path!r} is not a backend class (a class with a send method)")
    return backend_class


@cache
def _sms_backend(path: str):  # keyed by the setting: a changed SMS_BACKEND builds a new backend
    return sms_backend_class()()


@cache
def _email_backend():
    return EmailBackend()


def get_backend(channel: str):
    return _sms_backend(settings.SMS_BACKEND) if channel == "sms" else _email_backend()
