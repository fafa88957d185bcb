"""The global per-channel rate limit, shared through Redis by every worker on every host.

Celery's own `rate_limit` counts per worker process; this one counts across all of them,
with a moving window (limits.MovingWindowRateLimiter) so that no window of the period ever
holds more sends than the limit.
"""

import random
import time
from functools import cache

from django.conf import settings
from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from orderflow.configuration import Rate

# Longest single sleep between two tries for a token, so a freed slot is seen promptly.
MAX_POLL_SECONDS = 1.0


class LimiterUnavailable(Exception):
    """Redis did not answer: no token can be given, so nothing may be sent."""


class ChannelRateLimiter:
    def __init__(self, *, channel: str, rate: Rate, redis_url: str):
        self.channel = channel
        self.item = RateLimitItemPerSecond(rate.count, rate.period_seconds, namespace="orderflow")
        storage = RedisStorage(redis_url, wrap_exceptions=True, socket_connect_timeout=1, socket_timeout=2)
        self.strategy = MovingWindowRateLimiter(storage)

    def acquire(self, *, timeout: float) -> bool:
        """Take one token, waiting up to `timeout` seconds; False if none came in time."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.strategy.hit(self.item, self.channel):
                    return True
                reset_at = self.strategy.get_window_stats(self.item, self.channel).reset_time
            except StorageError as error:
                raise LimiterUnavailable(str(error)) from error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Sleep until the oldest send leaves the window; jitter spreads waiting workers.
            pause = max(0.0, reset_at - time.time()) + random.uniform(0, 0.05)
            time.sleep(min(pause, MAX_POLL_SECONDS, remaining))

    def reset(self) -> None:
        self.strategy.clear(self.item, self.channel)


@cache
def limiter_for(channel: str) -> ChannelRateLimiter:
    rate = {"sms": settings.NOTIFICATIONS_SMS_RATE_LIMIT, "email": settings.NOTIFICATIONS_EMAIL_RATE_LIMIT}[channel]
    return ChannelRateLimiter(channel=channel, rate=rate, redis_url=settings.REDIS_URL)
