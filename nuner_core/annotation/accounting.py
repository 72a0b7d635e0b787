"""What a run did and spent: counters for the manifest, and the budget that stops it."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nuner_core.annotation.config import ModelPrice


class BudgetExhausted(Exception):
    """Raised before a request that the budget does not allow; the run stops cleanly."""


@dataclass
class RunStats:
    sentences: int = 0  # rows written (or seen, when the run stops early)
    cache_hits: int = 0  # answers read from the cache: no request
    shared: int = 0  # same prompt as a sentence already in flight: answered by that request
    answered: int = 0  # answers received from the endpoint this run (and cached)
    requests: int = 0  # HTTP requests sent, retries included
    retries: Counter[str] = field(default_factory=Counter)  # reason -> retried attempts
    failures: Counter[str] = field(default_factory=Counter)  # reason -> sentences without an answer
    accepted_empty: int = 0  # empty answers kept as "no entity" (on_empty=accept, or recorded so)
    accepted_truncated: int = 0  # answers cut at max_tokens kept (on_truncated=accept)
    usage_missing: int = 0  # answers without a usage report: their tokens are estimates
    prompt_tokens: int = 0  # this run's requests
    completion_tokens: int = 0
    cost_usd: float = 0.0  # this run's requests, from the price table
    # What the answers read from the cache cost when they were asked (by earlier or other runs):
    # their cached token counts at this run's prices; imported answers count nothing.
    cached_cost_usd: float = 0.0
    not_requested: int = 0  # sentences left when the budget stopped the run
    from_other_run: int = 0  # answered by another run that held the sentence's lease while this one waited
    taken_over: int = 0  # leases of a dead or silent run taken over (the sentence was then asked here)
    budget_waits: int = 0  # requests that waited for requests in flight to settle before the budget allowed them

    def as_dict(self) -> dict[str, Any]:
        return {
            "sentences": self.sentences,
            "cache_hits": self.cache_hits,
            "shared_in_flight": self.shared,
            "answered": self.answered,
            "requests": self.requests,
            "retries": sum(self.retries.values()),
            "retries_by_reason": dict(sorted(self.retries.items())),
            "failed": sum(self.failures.values()),
            "failures_by_reason": dict(sorted(self.failures.items())),
            "accepted_empty": self.accepted_empty,
            "accepted_truncated": self.accepted_truncated,
            "usage_missing": self.usage_missing,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "cached_cost_usd": round(self.cached_cost_usd, 6),
            "not_requested": self.not_requested,
            "from_other_run": self.from_other_run,
            "leases_taken_over": self.taken_over,
            "budget_waits": self.budget_waits,
        }


class Budget:
    """``max_requests`` and ``max_cost`` for one run: caps per run, not running totals (:meth:`per_run`).

    Before each request the worst case is reserved (estimated prompt tokens plus
    ``max_tokens`` of completion); once the answer's usage is known it is charged and the
    reservation released. A request whose worst case does not fit beside the spend and
    the reservations of the requests in flight *waits* for those to settle (most cost far
    less than their worst case); the budget stops only when nothing is in flight and the
    actual spend plus one more worst-case request would pass ``max_cost``. So the cap is
    never passed (as long as prompt estimates are not badly low) and a run ends within one
    request's worst-case cost of it.
    """

    def __init__(self, max_requests: int | None, max_cost: float | None, price: ModelPrice | None, stats: RunStats):
        self.max_requests = max_requests
        self.max_cost = max_cost
        self.price = price
        self.stats = stats
        self.reserved = 0.0  # worst-case cost of the requests in flight
        self.in_flight = 0  # reservations not yet released (a count: float sums never return exactly to 0)
        self.granted = 0  # requests allowed so far (counted when allowed, not when sent: no overshoot in flight)
        self.stopped: str | None = None  # why the run stopped, once it has
        self._settled: asyncio.Event | None = None  # set (and replaced) whenever a reservation is released

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.price.cost(prompt_tokens, completion_tokens) if self.price else 0.0

    async def reserve(self, est_prompt_tokens: int, max_completion_tokens: int) -> float:
        """Allow one more request (waiting for requests in flight to settle if need be) or raise BudgetExhausted."""
        worst = self.cost(est_prompt_tokens, max_completion_tokens)
        counted_wait = False
        while True:
            if self.stopped:
                raise BudgetExhausted(self.stopped)
            if self.max_requests is not None and self.granted >= self.max_requests:
                self.stopped = f"max_requests={self.max_requests:,} reached"
                raise BudgetExhausted(self.stopped)
            if self.max_cost is None or self.stats.cost_usd + self.reserved + worst <= self.max_cost:
                break
            if self.in_flight == 0:
                self.stopped = (
                    f"max_cost={usd(self.max_cost)} reached: one more request could cost up to {usd(worst)} "
                    f"and this run has spent {usd(self.stats.cost_usd)}"
                )
                self._notify()  # the others waiting stop too
                raise BudgetExhausted(self.stopped)
            if not counted_wait:
                self.stats.budget_waits += 1
                counted_wait = True
            if self._settled is None:
                self._settled = asyncio.Event()
            await self._settled.wait()
        self.reserved += worst
        self.in_flight += 1
        self.granted += 1
        return worst

    def per_run(self, field: str) -> str:
        """A sentence for a budget stop: the cap that stopped the run is per run (a rerun pays up to it again)."""
        if self.max_requests is not None and self.granted >= self.max_requests:
            cap, again = "max_requests", f"sends up to {self.max_requests:,} requests more"
        else:
            cap, again = "max_cost", f"spends up to {usd(self.max_cost or 0.0)} more"
        return (f"{field}.{cap} is a cap per run, not a running total: running the same command again continues "
                f"from the cache and {again}")

    def spent_so_far(self) -> str:
        """The total spent on the prompts this run met: its own spend and what its cached answers cost when asked."""
        s = self.stats
        return (f"about {usd(s.cost_usd + s.cached_cost_usd)} spent on these sentences so far ({usd(s.cost_usd)} by "
                f"this run, {usd(s.cached_cost_usd)} by the runs that asked for the {s.cache_hits:,} answers this run "
                f"found in the cache, from the token counts cached with them)")

    def release(self, reserved: float) -> None:
        """End one reservation (after its answer was charged, or its attempt failed)."""
        self.in_flight -= 1
        self.reserved = self.reserved - reserved if self.in_flight else 0.0
        self._notify()

    def charge(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cost_usd += self.cost(prompt_tokens, completion_tokens)

    def _notify(self) -> None:
        if self._settled is not None:
            self._settled.set()
            self._settled = None


def usd(amount: float) -> str:
    """Dollars with the digits that matter: ``$12.3457``, ``$0.2000``, ``$0.000213`` (not ``$0.0002``)."""
    return f"${amount:,.4f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}"
