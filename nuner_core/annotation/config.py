"""Annotate stage config: which model at which endpoint, how fast, how much, and the cache.

Fields that change how the stage runs but not what it produces (endpoint, key variable,
limits, retries, budget, cache location, prices) are declared with ``run_only``: changing
them reuses the artifact. The cache key of one answer is model + rendered prompt +
sampling parameters (see ``cache.response_key``); the endpoint URL is not part of it.

Credentials in ``base_url`` never leave the config: the field holds the redacted URL (what
every dump, repr, manifest and message shows) and ``endpoint()`` the URL as given, for the
client only (see ``endpoint.py``).
"""

from __future__ import annotations

import os
from typing import Iterable, Literal

from pydantic import Field, PrivateAttr, model_validator

from nuner_core.basemodel import Float, Int, StrictModel, run_only
from nuner_core.redaction import redact_url

# The base_url of each LLM endpoint with its credentials (several: separated by whitespace, which a URL
# cannot hold), for a config rebuilt from a redacted copy: see endpoint() and hand_over().
ENDPOINT_ENV = "NUNER_ANNOTATE_BASE_URL"


class ModelPrice(StrictModel):
    input_per_mtok: Float = Field(ge=0)  # USD per million prompt tokens
    output_per_mtok: Float = Field(ge=0)  # USD per million completion tokens

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


# OpenAI list prices (USD per million tokens, standard tier) as published in 2025; check
# https://openai.com/api/pricing before trusting a budget, and add your own models here.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    name: ModelPrice(input_per_mtok=i, output_per_mtok=o)
    for name, (i, o) in {
        "gpt-3.5-turbo": (0.50, 1.50),
        "gpt-3.5-turbo-0125": (0.50, 1.50),
        "gpt-4": (30.00, 60.00),
        "gpt-4-turbo": (10.00, 30.00),
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
    }.items()
}

OnInvalid = Literal["retry", "accept", "fail"]


class AnnotateConfig(StrictModel):
    # --- what is asked (part of the artifact key; model + prompt + sampling key the cache) ---
    model: str = "gpt-4o-mini"  # model name sent to the endpoint
    prompt_template: str | None = None  # file with a [INPUT SENTENCE] placeholder; None: the paper's Figure 2 prompt
    temperature: Float = Field(default=0.0, ge=0, le=2)  # sampling temperature
    max_tokens: Int = Field(default=512, ge=1)  # completion length cap; an answer that hits it is truncated
    top_p: Float | None = Field(default=None, gt=0, le=1)  # nucleus sampling; None: the endpoint's default
    on_empty: OnInvalid = "retry"  # an empty answer: ask again (then fail), accept it as "no entity", or fail at once
    on_truncated: OnInvalid = "retry"  # an answer cut at max_tokens: ask again (then fail), accept it, or fail at once
    allow_partial: bool = False  # publish even when offline answers are missing (their response is null)
    import_responses: str | None = None  # JSON lines {text, response} imported into the cache first (idempotent); ${assets} expands

    # --- where and how (not part of any key) ---
    # OpenAI-compatible endpoint; None: api.openai.com; credentials in it are shown as ***
    base_url: str | None = run_only(None)
    api_key_env: str | None = run_only("OPENAI_API_KEY")  # NAME of the env var holding the key; None: no key
    request_timeout_s: Float = run_only(60.0, gt=0)  # one HTTP request: connecting, sending, and each wait for data
    requests_per_minute: Float = run_only(500.0, gt=0)  # never exceeded in any window
    tokens_per_minute: Float | None = run_only(200_000.0, gt=0)  # estimated before, corrected after; None: no limit
    max_in_flight: Int = run_only(32, ge=1)  # sentences being requested at once (a retrying one keeps its slot)
    chars_per_token: Float = run_only(4.0, gt=0)  # prompt-token estimate before a call
    max_attempts: Int = run_only(8, ge=1)  # HTTP attempts per sentence on 429 / 5xx / timeouts / dropped connections
    invalid_retries: Int = run_only(2, ge=0)  # extra attempts for an empty / truncated answer (on_* = retry)
    backoff_initial_s: Float = run_only(1.0, gt=0)  # first backoff; doubles per attempt, with jitter
    backoff_max_s: Float = run_only(60.0, gt=0)  # longest backoff without a Retry-After
    retry_after_cap_s: Float = run_only(120.0, gt=0)  # a server's Retry-After is honoured up to this
    max_failed_share: Float = run_only(0.01, ge=0, le=1)  # more failed sentences than this share fails the stage
    max_cost: Float | None = run_only(None, ge=0)  # USD per run (not a running total); stop cleanly when reached
    max_requests: Int | None = run_only(None, ge=0)  # HTTP requests (retries included) per run
    offline: bool = run_only(False)  # no network: every answer must come from the cache
    cache_dir: str | None = run_only(None)  # response cache; None: <artifact root>/cache/llm-responses
    # A sentence in flight is leased in the shared cache this long, renewed while its run lives;
    # a dead run's leases lapse after it.
    lease_s: Float = run_only(60.0, ge=1)
    shard_size: Int = run_only(20_000, ge=1)  # rows per row group of responses.parquet (bounds memory)
    prices: dict[str, ModelPrice] = run_only(default_factory=lambda: dict(DEFAULT_PRICES))  # per-model USD prices

    # base_url as given, credentials included; never dumped (a private attribute), read by endpoint()
    _endpoint: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _hide_url_credentials(self) -> "AnnotateConfig":
        if self.base_url is not None:
            shown = redact_url(self.base_url)
            if shown != self.base_url:
                self._endpoint = self.base_url
                self.__dict__["base_url"] = shown  # frozen model: set once, during validation
        return self

    def endpoint(self) -> str | None:
        """The endpoint URL as configured, credentials included: for the HTTP client, never for display.

        A config rebuilt from a redacted copy (a flow run's parameters) finds the URL in
        ``$NUNER_ANNOTATE_BASE_URL`` when that redacts to the same text: ``nuner run`` puts it
        there, so the credentials reach the client but never the Prefect database.
        """
        if self._endpoint is not None and redact_url(self._endpoint) == self.base_url:
            return self._endpoint
        for secret in os.environ.get(ENDPOINT_ENV, "").split():
            if self.base_url is not None and redact_url(secret) == self.base_url:
                return secret
        return self.base_url  # no credentials (or a copy made with another base_url)

    @model_validator(mode="after")
    def _budget_needs_price(self) -> "AnnotateConfig":
        if self.max_cost is not None and not self.offline and self.model not in self.prices:
            raise ValueError(
                f"annotate.max_cost is set but annotate.prices has no entry for model {self.model!r}; "
                f"add annotate.prices.{self.model}.input_per_mtok / output_per_mtok"
            )
        return self

    def sampling(self) -> dict[str, float | int]:
        """The sampling parameters sent with each request (and part of the cache key)."""
        params: dict[str, float | int] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.top_p is not None:
            params["top_p"] = self.top_p
        return params

    def price(self) -> ModelPrice | None:
        return self.prices.get(self.model)


def endpoint_urls(found: Iterable[tuple[str, str]], *, deployment: str | None = None) -> tuple[str, ...]:
    """The credentialed URLs of ``found`` (where, URL) that :func:`hand_over` can give to an LLM's client.

    A flow's parameters are stored in Prefect's database, so they hold the redacted URLs; the
    real ones reach the flow run (in this process) through ``$NUNER_ANNOTATE_BASE_URL``. Refused
    (``ValueError``): credentials in any field but an LLM's ``base_url`` (nothing would receive
    them), two URLs that differ only in their credentials (nothing could tell them apart), and any
    for runs of a ``deployment`` (on other machines, which only Prefect's database reaches).
    """
    urls: dict[str, str] = {}  # redacted -> as given
    hint = "put the key in the variable named by api_key_env (sent as a Bearer token) instead"
    for where, url in found:
        shown = redact_url(url)
        if where.rsplit(".", 1)[-1] != "base_url":
            raise ValueError(f"{where}: {shown} carries credentials, which would be stored in clear "
                             f"(only an LLM's base_url is handed over without being stored); {hint}")
        if deployment:
            raise ValueError(f"{where}: {shown} carries credentials, which cannot reach runs of {deployment} "
                             f"without being stored in Prefect's database; {hint}, on its workers")
        if urls.setdefault(shown, url) != url:
            raise ValueError(f"{where}: two URLs differ only in their credentials ({shown}), which are never "
                             f"stored, so the runs could not tell them apart; {hint}")
    return tuple(urls.values())


def hand_over(urls: Iterable[str]) -> None:
    """Make ``urls`` (from :func:`endpoint_urls`) what :meth:`AnnotateConfig.endpoint` finds in this process."""
    given = {redact_url(u): u for u in urls}
    if given:
        kept = [u for u in os.environ.get(ENDPOINT_ENV, "").split() if redact_url(u) not in given]
        os.environ[ENDPOINT_ENV] = " ".join([*kept, *given.values()])
