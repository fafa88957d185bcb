"""The global per-channel rate limit, shared through Redis by every worker on every host.

Celery's own `rate_limit` counts per worker process; this one counts across all of them,
with a moving window (limits.MovingWindowRateLimiter) so that no window of the period ever
holds more sends than the limit. The limit is spread over its period, as Celery spaces its
own: `10/m` lets one send go every 6 seconds, not ten at once and then none for a minute
(limit_window).

A provider that answers "too many requests" (or names a time in Retry-After) pauses the
channel: a key in the same Redis that every worker's limiter gives no token through until it
expires.
"""

import logging
import math
import random
import time
from functools import cache

from django.conf import settings
from limits import RateLimitItem, RateLimitItemPerSecond
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
# Sets the channel's pause (KEYS[1]) to ARGV[1] ms unless the one set ends later; returns the
# pause's milliseconds left.
LENGTHEN_PAUSE = """
local left = redis.call('PTTL', KEYS[1])
local asked = tonumber(ARGV[1])
if left >= asked then
    return left
end
redis.call('SET', KEYS[1], '1', 'PX', asked)
return asked
"""


def limit_window(rate: Rate) -> RateLimitItem:
    """The shortest moving window that holds a whole number of the rate's sends: `10/m` one per
    6 s, `100/m` five per 3 s, `5/s` five per second. Every window of the whole period then
    holds at most the limit too, and the long-run rate is the limit's. The windows of `limits`
    are whole seconds: a count that shares no factor with its period (`7/m`) keeps the period
    as its window, and so its burst."""
    common = math.gcd(rate.count, rate.period_seconds)
    return RateLimitItemPerSecond(rate.count // common, rate.period_seconds // common, namespace="orderflow")


class LimiterUnavailable(Exception):
    """Redis did not answer: no token can be given, so nothing may be sent."""


class ChannelRateLimiter:
    def __init__(self, *, channel: str, rate: Rate, redis_url: str):
        self.channel = channel
        self.item = limit_window(rate)
        storage = RedisStorage(
            redis_url,
            wrap_exceptions=True,
            socket_connect_timeout=REDIS_CONNECT_SECONDS,
            socket_timeout=REDIS_ANSWER_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        self.strategy = MovingWindowRateLimiter(storage)
        self.redis = storage.get_connection()
        self._lengthen_pause = self.redis.register_script(LENGTHEN_PAUSE)
        self.pause_key = f"orderflow:pause:{channel}"
        self._paused_until = 0.0  # time.monotonic() when the pause last read ends
        self._pause_read_at = float("-inf")

    def acquire(self, *, timeout: float) -> bool:
        """Take one token, waiting up to `timeout` seconds; False if none came in time.

        While Redis does not answer, wait for it the same way: the caller's message stays in
        the broker meanwhile. LimiterUnavailable if it still does not answer at the deadline.
        A paused channel gives no token until its pause ends. Once a token was asked for, no
        call to Redis starts after the deadline: the wait overruns it by one call at most.
        """
        deadline = time.monotonic() + timeout
        asked = False
        waiting_for_redis = False
        while True:
            try:
                before_deadline = time.monotonic() < deadline
                wait = self._pause_left(read=before_deadline or not asked)
                if wait <= 0 and (before_deadline or not asked):
                    asked = True
                    if self.strategy.hit(self.item, self.channel):
                        return True
                    if time.monotonic() < deadline:
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
        """Give no token on this channel, to any worker, for `seconds`, unless a pause already set
        ends later: sends that were under way when the provider asked for a long pause, and come
        back with a short one, do not cut it. LimiterUnavailable if Redis does not answer."""
        try:
            milliseconds = self._lengthen_pause(keys=[self.pause_key], args=[max(1, round(seconds * 1000))])
        except RedisError as error:
            raise LimiterUnavailable(str(error)) from error
        self._paused_until = time.monotonic() + int(milliseconds) / 1000
        self._pause_read_at = time.monotonic()

    def _pause_left(self, *, read: bool) -> float:
        """Seconds left of the channel's pause, read from Redis if `read` and the last reading is
        older than PAUSE_READ_SECONDS (RedisError if Redis does not answer)."""
        now = time.monotonic()
        if read and now - self._pause_read_at >= PAUSE_READ_SECONDS:
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
