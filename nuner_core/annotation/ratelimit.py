"""Client-side rate limiting: requests per minute, tokens per minute, requests in flight.

Requests are paced by two rules, both enforced at every admission, in arrival order:

- a bucket refilled at ``rpm / 60`` per second holding at most **two** requests: requests
  are spread evenly instead of bursting at the start of a minute, and the time an
  event-loop wake-up overshoots is credited back, so the average reaches the limit;
- a sliding log of the last 10 seconds (plus a 200 ms guard for the varying delay between admission and arrival) that
  admits at most ``floor(rpm / 6)`` requests in it: the limit holds over **every**
  10-second window, not just on average over a minute. (For any window, look at its last
  request: the log had room for it, so the window holds at most that many.)

Tokens: a bucket refilled at ``tpm / 60`` per second, holding one second's worth. A
request is charged an *estimate* before it is sent and the difference to the *reported
usage* afterwards (the bucket may go into debt, which delays later requests).

A separate semaphore caps the sentences in flight. The limiter is used outside the retry
loop (``client.py``): waiting here is never an attempt and is never retried; each retry is
admitted again before it is sent.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Protocol

EPSILON_S = 1e-9
WINDOW_S = 10.0  # the window in which the requests limit must hold exactly
WINDOW_GUARD_S = 0.2  # the log spans a little more: a request reaches the server 2-120 ms after admission (the first ones, on new connections, latest)
REQUEST_BURST = 2.0  # the requests bucket's capacity: credit for late wake-ups, never a real burst


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Bucket:
    """A continuously refilled bucket that may go into debt. Units: requests or tokens."""

    def __init__(self, per_second: float, capacity: float):
        self.rate = per_second
        self.capacity = capacity
        self.level = capacity
        self._t: float | None = None

    def _refill(self, now: float) -> None:
        if self._t is not None:
            self.level = min(self.capacity, self.level + (now - self._t) * self.rate)
        self._t = now

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` may be taken (a request larger than the capacity needs a full bucket)."""
        self._refill(now)
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def give_back(self, amount: float) -> None:
        """Correct an earlier charge (negative ``amount`` charges more)."""
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: float,
        tokens_per_minute: float | None,
        max_in_flight: int,
        clock: Clock | None = None,
    ):
        self.clock = clock or RealClock()
        self.requests = Bucket(requests_per_minute / 60.0, REQUEST_BURST)
        self.window_limit = max(1, math.floor(requests_per_minute * WINDOW_S / 60.0 + EPSILON_S))
        self._recent: deque[float] = deque()  # admission times within the last WINDOW_S + guard
        self.tokens = Bucket(tokens_per_minute / 60.0, tokens_per_minute / 60.0) if tokens_per_minute else None
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._order = asyncio.Lock()  # FIFO: admissions happen in the order they were asked for
        self.waited_s = 0.0  # total time spent waiting for admission (for the manifest)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One sentence in flight (held across its retries)."""
        async with self._in_flight:
            yield

    async def admit(self, est_tokens: int) -> None:
        """Wait until one request of about ``est_tokens`` tokens may be sent, then charge it."""
        async with self._order:
            while True:
                now = self.clock.now()
                span = WINDOW_S + WINDOW_GUARD_S
                while self._recent and self._recent[0] <= now - span + EPSILON_S:
                    self._recent.popleft()
                wait = self.requests.wait_s(1, now)
                if len(self._recent) >= self.window_limit:
                    wait = max(wait, self._recent[0] + span - now)
                if self.tokens is not None:
                    wait = max(wait, self.tokens.wait_s(est_tokens, now))
                if wait <= EPSILON_S:  # float rounding must not turn into an endless series of tiny sleeps
                    break
                self.waited_s += wait
                await self.clock.sleep(wait)
            self.requests.take(1, now)
            self._recent.append(now)
            if self.tokens is not None:
                self.tokens.take(est_tokens, now)

    def correct_tokens(self, estimated: int, actual: int) -> None:
        """Replace a request's estimated token charge by the usage the endpoint reported."""
        if self.tokens is not None:
            self.tokens.give_back(estimated - actual)
