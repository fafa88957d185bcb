"""Settings for the test suite: the same environment, with fast hashing and in-memory email."""

from orderflow.configuration import Rate
from orderflow.settings.base import *  # noqa: F403
from orderflow.settings.base import env

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Keep the suite's rate-limit counters apart from a developer's running instance.
REDIS_URL = env.str("ORDERFLOW_TEST_REDIS_URL", default="redis://127.0.0.1:6379/13")
SMS_BACKEND = "notifications.backends.sms.InMemoryBackend"
# What unit tests publish goes to a broker database no worker reads (the pipeline tests point
# this process at the broker their worker consumes), never to a running instance's.
CELERY_BROKER_URL = env.str("ORDERFLOW_TEST_UNIT_BROKER_URL", default="redis://127.0.0.1:6379/12")

# Unit tests send several notifications within a second, which the default limits spread over
# minutes; the limiter has tests of its own (tests/notifications/test_ratelimit.py).
NOTIFICATIONS_SMS_RATE_LIMIT = NOTIFICATIONS_EMAIL_RATE_LIMIT = Rate(count=100, period_seconds=1)
