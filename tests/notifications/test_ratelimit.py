import socket
import threading
import time

import pytest

from notifications.ratelimit import (
    LONGEST_CALL_SECONDS,
    PAUSE_READ_SECONDS,
    ChannelRateLimiter,
    LimiterUnavailable,
    limit_window,
)
from orderflow.configuration import Rate
from tests.notifications.servers import RedisServer


@pytest.fixture
def make_limiter(settings):
    made = []

    def make(rate: Rate, channel: str = "test-channel"):
        limiter = ChannelRateLimiter(channel=channel, rate=rate, redis_url=settings.REDIS_URL)
        limiter.reset()
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.reset()


def test_gives_tokens_up_to_the_limit_then_refuses(make_limiter):
    limiter = make_limiter(Rate(3, 1))
    assert [limiter.acquire(timeout=0) for _ in range(4)] == [True, True, True, False]


def test_a_limit_per_minute_is_spread_over_the_minute_not_let_out_at_once(make_limiter):
    """60/m is one send a second, as a provider counting per second sees it; not sixty at once."""
    limiter = make_limiter(Rate(60, 60))
    assert [limiter.acquire(timeout=0) for _ in range(2)] == [True, False]
    asked_at = time.monotonic()
    assert limiter.acquire(timeout=3)
    assert 0.5 < time.monotonic() - asked_at < 2


@pytest.mark.parametrize(
    ("rate", "sends", "seconds"),
    [
        (Rate(10, 60), 1, 6),
        (Rate(60, 60), 1, 1),
        (Rate(100, 60), 5, 3),
        (Rate(100, 3600), 1, 36),
        (Rate(5, 1), 5, 1),
        (Rate(7, 60), 7, 60),  # 60/7 s is no whole number of seconds: the period's burst stays
    ],
)
def test_the_window_is_the_shortest_that_holds_a_whole_number_of_sends(rate, sends, seconds):
    window = limit_window(rate)
    assert (window.amount, window.get_expiry()) == (sends, seconds)
    assert window.amount * rate.period_seconds == rate.count * window.get_expiry()  # the same long-run rate


def test_a_waiting_caller_gets_the_token_freed_by_the_window(make_limiter):
    limiter = make_limiter(Rate(5, 1))
    assert all(limiter.acquire(timeout=0) for _ in range(5))
    assert limiter.acquire(timeout=3)


def test_channels_count_separately(make_limiter):
    sms, email = make_limiter(Rate(1, 60), "sms-test"), make_limiter(Rate(1, 60), "email-test")
    assert sms.acquire(timeout=0)
    assert email.acquire(timeout=0)
    assert not sms.acquire(timeout=0)


def test_limit_holds_across_separate_limiters_like_separate_workers(make_limiter):
    """Three limiters with their own Redis connections share one limit, as workers on three hosts do."""
    rate = Rate(5, 1)
    limiters = [make_limiter(rate, "shared") for _ in range(3)]
    granted, lock = [], threading.Lock()
    stop_at = time.time() + 2.5

    def timed(hit):
        """Each token granted, as (time before the Redis call, time after it): the limiter
        stamps it in between. A time read only after acquire() returns can come late when
        threads wait for one another, and make a window look fuller than Redis kept it."""

        def hit_and_note(*args):
            before = time.time()
            if not hit(*args):
                return False
            with lock:
                granted.append((before, time.time()))
            return True

        return hit_and_note

    def worker(limiter):
        limiter.strategy.hit = timed(limiter.strategy.hit)
        while time.time() < stop_at:
            limiter.acquire(timeout=0.2)

    threads = [threading.Thread(target=worker, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted.sort()
    # Grants certainly inside one window: both ends of their Redis call fall in it.
    busiest = max(
        sum(1 for before, after in granted if start <= before and after < start + 1.0) for start, _ in granted
    )
    assert busiest <= rate.count + 1
    assert len(granted) >= 2 * rate.count  # it does hand tokens out, about 5 a second


def test_a_pause_holds_every_limiter_of_the_channel_until_it_ends_and_spends_no_token(make_limiter):
    """One worker hears "too many requests"; the others, their own limiters and connections,
    send nothing on the channel until the pause ends, and then have the whole limit."""
    rate = Rate(3, 1)
    told, other = make_limiter(rate, "paused"), make_limiter(rate, "paused")
    told.pause(1.0)
    paused_at = time.monotonic()
    assert not told.acquire(timeout=0)
    assert not other.acquire(timeout=0)
    assert other.acquire(timeout=3)
    assert time.monotonic() - paused_at >= 0.95
    assert [other.acquire(timeout=0) for _ in range(3)] == [True, True, False]


def test_a_pause_reaches_a_limiter_that_looked_just_before_within_the_read_interval(make_limiter):
    rate = Rate(100, 1)
    told, other = make_limiter(rate, "paused"), make_limiter(rate, "paused")
    assert other.acquire(timeout=0)  # reads the channel's pause: none
    told.pause(5)
    time.sleep(PAUSE_READ_SECONDS)
    assert not other.acquire(timeout=0)


def test_a_pause_holds_only_its_own_channel(make_limiter):
    sms, email = make_limiter(Rate(10, 1), "sms-test"), make_limiter(Rate(10, 1), "email-test")
    sms.pause(5)
    assert not sms.acquire(timeout=0)
    assert email.acquire(timeout=0)


def test_a_shorter_pause_does_not_cut_a_longer_one_a_longer_one_lengthens_it(make_limiter):
    """Sends under way when the provider asked for a long pause may come back with a short one."""
    told, other = make_limiter(Rate(10, 1), "paused"), make_limiter(Rate(10, 1), "paused")
    told.pause(0.3)
    told.pause(60)
    told.pause(1)
    assert 59 < told.redis.pttl(told.pause_key) / 1000 <= 60
    assert not other.acquire(timeout=0.5)


def test_a_pause_without_redis_is_reported():
    limiter = ChannelRateLimiter(channel="x", rate=Rate(10, 1), redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(LimiterUnavailable):
        limiter.pause(1)


def test_unreachable_redis_is_waited_for_then_reported_not_treated_as_a_token():
    limiter = ChannelRateLimiter(channel="x", rate=Rate(10, 1), redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(LimiterUnavailable):
        limiter.acquire(timeout=0)
    started = time.monotonic()
    with pytest.raises(LimiterUnavailable):
        limiter.acquire(timeout=1.5)
    assert 1.5 <= time.monotonic() - started < 3


def test_a_redis_that_never_answers_holds_the_wait_up_one_call_at_most():
    """redis-py retries a timed-out call 3 times by default: 12 s past the wait's deadline,
    enough for an email task's time limit to strike after the send it allows."""
    silent = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers
    try:
        limiter = ChannelRateLimiter(
            channel="x", rate=Rate(10, 1), redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        )
        started = time.monotonic()
        with pytest.raises(LimiterUnavailable):
            limiter.acquire(timeout=0)
        assert time.monotonic() - started < LONGEST_CALL_SECONDS + 1
    finally:
        silent.close()


def test_redis_back_within_the_wait_gives_the_token():
    server = RedisServer().start()
    comeback = None
    try:
        limiter = ChannelRateLimiter(channel="x", rate=Rate(10, 1), redis_url=server.url())
        server.stop()
        comeback = threading.Timer(1.5, server.start)
        comeback.start()
        started = time.monotonic()
        assert limiter.acquire(timeout=10)
        assert time.monotonic() - started < 5  # tried again about every second, not at the deadline
    finally:
        if comeback is not None:
            comeback.cancel()
            comeback.join()  # never start the server again after it is removed
        server.remove()
