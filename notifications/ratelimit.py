"""The global per-channel rate limit, shared through Redis by every worker on every host.

Celery's own `rate_limit` counts per worker process; this one counts across all of them,
with a moving window (limits.MovingWindowRateLimiter) so that no window of the period ever
holds more sends than the limit.
"""

import logging
import random
import time
from functools import cache

from django.conf import settings
from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry

from orderflow.configuration import Rate

logger = logging.getLogger(__name__)

# Longest single sleep between two tries for a token (or to reach Redis), so a freed slot,
# or Redis back up, is seen promptly.
MAX_POLL_SECONDS = 1.0
# One call to Redis waits at most this long to connect and to be answered, and is not retried
# inside redis-py (acquire() tries again itself, within its timeout): the token wait may
# overrun its timeout by one call, which the send task's time limits allow for.
REDIS_CONNECT_SECONDS, REDIS_ANSWER_SECONDS = 1, 2
LONGEST_CALL_SECONDS = REDIS_CONNECT_SECONDS + REDIS_ANSWER_SECONDS


class LimiterUnavailable(Exception):
    """Redis did not answer: no token can be given, so nothing may be sent."""


class ChannelRateLimiter:
    def __init__(self, *, channel: str, rate: Rate, redis_url: str):
        self.channel = channel
        self.item = RateLimitItemPerSecond(rate.count, rate.period_seconds, namespace="orderflow")
        storage = RedisStorage(
            redis_url,
            wrap_exceptions=True,
            socket_connect_timeout=REDIS_CONNECT_SECONDS,
            socket_timeout=REDIS_ANSWER_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        self.strategy = MovingWindowRateLimiter(storage)

    def acquire(self, *, timeout: float) -> bool:
        """Take one token, waiting up to `timeout` seconds; False if none came in time.

        While Redis does not answer, wait for it the same way: the caller's message stays in
        the broker meanwhile. LimiterUnavailable if it still does not answer at the deadline.
        """
        deadline = time.monotonic() + timeout
        waiting_for_redis = False
        while True:
            try:
                if self.strategy.hit(self.item, self.channel):
                    return True
                reset_at = self.strategy.get_window_stats(self.item, self.channel).reset_time
            except StorageError as error:
                if time.monotonic() >= deadline:
                    raise LimiterUnavailable(str(error)) from error
                if not waiting_for_redis:  # once per wait, not once per try
                    logger.warning("rate limiter unavailable, waiting for Redis: %s", error)
                    waiting_for_redis = True
                pause = MAX_POLL_SECONDS
            else:
                if time.monotonic() >= deadline:
                    return False
                # Until the oldest send leaves the window.
                pause = max(0.0, reset_at - time.time())
            # Jitter spreads waiting workers.
            pause += random.uniform(0, 0.05)
            time.sleep(max(0.0, min(pause, MAX_POLL_SECONDS, deadline - time.monotonic())))

    def reset(self) -> None:
        self.strategy.clear(self.item, self.channel)


@cache
def limiter_for(channel: str) -> ChannelRateLimiter:
    rate = {"sms": settings.NOTIFICATIONS_SMS_RATE_LIMIT, "email": settings.NOTIFICATIONS_EMAIL_RATE_LIMIT}[channel]
    return ChannelRateLimiter(channel=channel, rate=rate, redis_url=settings.REDIS_URL)
