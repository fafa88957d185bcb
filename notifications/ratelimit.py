"""The global per-channel rate limit, shared through Redis by every worker on every host.

Celery's own `rate_limit` counts per worker process; this one counts across all of them,
with a moving window (limits.MovingWindowRateLimiter) so that no window of the period ever
holds more sends than the limit.

A provider that answers "too many requests" (or names a time in Retry-After) pauses the
channel: a key in the same Redis that every worker's limiter gives no token through until it
expires.
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
from redis.exceptions import RedisError
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
# Each process reads the channel's pause from Redis at most this often (not once a send), so
# a pause one worker sets holds every other worker's sends within this time.
PAUSE_READ_SECONDS = 0.25


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
        self.redis = storage.get_connection()
        self.pause_key = f"orderflow:pause:{channel}"
        self._paused_until = 0.0  # time.monotonic() when the pause last read ends
        self._pause_read_at = float("-inf")

    def acquire(self, *, timeout: float) -> bool:
        """Take one token, waiting up to `timeout` seconds; False if none came in time.

        While Redis does not answer, wait for it the same way: the caller's message stays in
        the broker meanwhile. LimiterUnavailable if it still does not answer at the deadline.
        A paused channel gives no token until its pause ends.
        """
        deadline = time.monotonic() + timeout
        waiting_for_redis = False
        while True:
            try:
                wait = self._pause_left()
                if wait <= 0:
                    if self.strategy.hit(self.item, self.channel):
                        return True
                    # Until the oldest send leaves the window.
                    wait = self.strategy.get_window_stats(self.item, self.channel).reset_time - time.time()
            except (StorageError, RedisError) as error:
                if time.monotonic() >= deadline:
                    raise LimiterUnavailable(str(error)) from error
                if not waiting_for_redis:  # once per wait, not once per try
                    logger.warning("rate limiter unavailable, waiting for Redis: %s", error)
                    waiting_for_redis = True
                wait = MAX_POLL_SECONDS
            else:
                if time.monotonic() >= deadline:
                    return False
            # Jitter spreads waiting workers.
            wait = max(0.0, wait) + random.uniform(0, 0.05)
            time.sleep(max(0.0, min(wait, MAX_POLL_SECONDS, deadline - time.monotonic())))

    def pause(self, seconds: float) -> None:
        """Give no token on this channel, to any worker, for `seconds`. The latest pause counts:
        it is the provider's latest word. LimiterUnavailable if Redis does not answer."""
        milliseconds = max(1, round(seconds * 1000))
        try:
            self.redis.set(self.pause_key, "1", px=milliseconds)
        except RedisError as error:
            raise LimiterUnavailable(str(error)) from error
        self._paused_until = time.monotonic() + milliseconds / 1000
        self._pause_read_at = time.monotonic()

    def _pause_left(self) -> float:
        """Seconds left of the channel's pause, as last read from Redis (RedisError if unread)."""
        now = time.monotonic()
        if now - self._pause_read_at >= PAUSE_READ_SECONDS:
            milliseconds = self.redis.pttl(self.pause_key)  # -2: no pause
            self._paused_until = now + milliseconds / 1000 if milliseconds > 0 else 0.0
            self._pause_read_at = now
        return self._paused_until - now

    def reset(self) -> None:
        self.strategy.clear(self.item, self.channel)
        self.redis.delete(self.pause_key)
        self._paused_until, self._pause_read_at = 0.0, float("-inf")


@cache
def limiter_for(channel: str) -> ChannelRateLimiter:
    rate = {"sms": settings.NOTIFICATIONS_SMS_RATE_LIMIT, "email": settings.NOTIFICATIONS_EMAIL_RATE_LIMIT}[channel]
    return ChannelRateLimiter(channel=channel, rate=rate, redis_url=settings.REDIS_URL)
