"""The rate limiter on a fake clock, and Retry-After parsing."""

from __future__ import annotations

import asyncio
import email.utils
import math

import pytest
from annotate_helpers import FakeClock

from nuner_core.annotation.client import parse_retry_after
from nuner_core.annotation.ratelimit import RateLimiter


def _admissions(limiter: RateLimiter, clock: FakeClock, tokens: list[int], actual: list[int] | None = None) -> list[float]:
    times: list[float] = []

    async def go() -> None:
        for i, est in enumerate(tokens):
            await limiter.admit(est)
            times.append(clock.now())
            if actual is not None:
                limiter.correct_tokens(est, actual[i])

    asyncio.run(go())
    return times


def _max_in_window(times: list[float], window: float) -> int:
    best = 0
    for i, t in enumerate(times):
        best = max(best, sum(1 for u in times[i:] if u < t + window))
    return best


@pytest.mark.parametrize("rpm", [60, 600, 3500])
def test_requests_per_minute_hold_in_every_10s_window_without_a_burst(rpm):
    """About 98% of the limit on average, never more than the limit in any 10-second window."""
    clock = FakeClock()
    limiter = RateLimiter(rpm, None, 8, clock)
    n = rpm // 2  # 30 s of traffic
    times = _admissions(limiter, clock, [100] * n)
    assert _max_in_window(times, 10.2) <= math.floor(rpm / 6)  # every 10-s window, with the jitter guard
    assert _max_in_window(times, 1.0) <= math.ceil(rpm / 60) + 1  # evenly spread: at most one early request
    achieved = sum(1 for t in times if times[0] + 5 <= t < times[0] + 25) * 3  # per minute, after the start
    assert rpm * 0.975 <= achieved <= rpm  # the 0.2-s guard on a 10-s window costs 2%


@pytest.mark.parametrize(
    "tpm, estimates, actual, expected_per_min",
    [
        pytest.param(6000, [100] * 121, None, 60, id="estimates-only"),
        pytest.param(6000, [100] * 121, [50] * 121, 120, id="usage-below-estimate-speeds-up"),
        pytest.param(6000, [100] * 61, [200] * 61, 30, id="usage-above-estimate-slows-down"),
    ],
)
def test_tokens_per_minute_use_estimates_corrected_by_usage(tpm, estimates, actual, expected_per_min):
    clock = FakeClock()
    limiter = RateLimiter(1_000_000, tpm, 8, clock)
    times = _admissions(limiter, clock, estimates, actual)
    steady = times[20:]
    per_min = (len(steady) - 1) / (steady[-1] - steady[0]) * 60
    assert per_min == pytest.approx(expected_per_min, rel=0.05)


def test_a_request_larger_than_the_bucket_still_goes_through():
    clock = FakeClock()
    limiter = RateLimiter(1000, 600, 8, clock)  # 10 tokens/s, a bucket of 10
    times = _admissions(limiter, clock, [500, 500, 500])
    assert times[1] - times[0] == pytest.approx(50.0, rel=1e-6)  # the debt of 490 tokens is paid first


def test_in_flight_cap():
    clock = FakeClock()
    limiter = RateLimiter(1_000_000, None, 3, clock)
    running, peak = 0, 0

    async def one() -> None:
        nonlocal running, peak
        async with limiter.slot():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.001)
            running -= 1

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(20)))

    asyncio.run(main())
    assert peak == 3


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": email.utils.formatdate(1_000_030, usegmt=True)}, 30.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers, now=1_000_000) == expected
