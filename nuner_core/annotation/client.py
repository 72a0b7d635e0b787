"""The one LLM client: an OpenAI-compatible chat endpoint, rate-limited, retried, accounted.

``openai.AsyncOpenAI`` with its own retries off (``max_retries=0``) is used inside
``async with``; :meth:`LLMClient.complete` retries in one plain ``for`` loop, as
openai-python's ``_base_client.py`` does: send, classify the outcome by type, compute the
wait, go again. The rules:

- retried: 429, 408, 409, 5xx, timeouts, dropped connections, malformed JSON; empty or
  truncated answers when ``on_empty`` / ``on_truncated`` say ``retry``; and *undecodable*
  answers (text no UTF-8 can hold: a lone surrogate, ``"\\ud800"`` in the JSON), which can
  be neither cached nor written, always, counted against ``invalid_retries`` like the others;
- waiting: the server's ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date) when
  given, capped at ``retry_after_cap_s``; otherwise exponential backoff
  ``min(initial * 2^(n-1), max)`` times a random factor in [0.5, 1) (jitter);
- not retried: 400, 401, 403, 404, 422 and any other 4xx. They raise FatalAPIError, which
  stops the whole stage at once with a message saying what is wrong: a bad key must not
  cost a million failed requests.

Each attempt, in order: reserve its worst-case cost in the budget (which may wait for the
requests in flight to settle, or stop the run), be admitted by the rate limiter, send. The
reservation is released in one place, after the answer was charged or the attempt failed,
so every HTTP request counts against the limits and the budget, and waiting for admission
is never itself an attempt. A sentence holds its in-flight slot across its attempts.

The API key is taken from the environment variable whose *name* is configured, is passed
to the client and nowhere else; credentials in ``base_url`` reach the client only (see
``endpoint.py``); every message that leaves this module is redacted, and names the
caller's config fields (``field``: ``annotate``, ``evaluate.llms[gpt]``).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from nuner_core.annotation.accounting import Budget, RunStats
from nuner_core.annotation.config import AnnotateConfig
from nuner_core.annotation.endpoint import client_url, has_userinfo
from nuner_core.annotation.ratelimit import Clock, RateLimiter, RealClock
from nuner_core.redaction import MASK, has_masked_secret, url_secrets

log = logging.getLogger("nuner.annotate")
# The HTTP library logs every request at INFO: a million lines for a million sentences.
for _name in ("httpx", "httpx2"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)
NO_KEY = "no-key"  # sent to endpoints that need none (vLLM, Ollama, llama.cpp without --api-key)
RETRYABLE_STATUS = {408, 409, 429}


class FatalAPIError(Exception):
    """The endpoint refused in a way retrying cannot fix (400/401/403/404/...); stop the stage."""


class AnswerFailed(Exception):
    """No valid answer for this sentence after the allowed attempts."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Answer:
    content: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    served_model: str | None


@dataclass(frozen=True)
class Failure:
    """One attempt that gave no usable answer, classified."""

    reason: str  # transport: rate_limited | server_error | timeout | connection | malformed; answer: empty | truncated | content_filter | undecodable
    detail: str
    retry: bool  # another attempt may fix it
    transport: bool  # counts against max_attempts; an unusable answer counts against invalid_retries
    retry_after_s: float | None = None  # the server's Retry-After, when it sent one


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), or None."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(0.0, email.utils.mktime_tz(parsed) - (now if now is not None else time.time()))


def api_key_from(environ: Mapping[str, str], variable: str | None, field: str) -> str | None:
    """The API key from the variable the config names (None when it names none: a local server without a key).

    ``field`` is the config section the message points at (``annotate``, ``evaluate.llms[name]``).
    """
    if not variable:
        return None
    key = environ.get(variable)
    if not key:
        raise FatalAPIError(
            f"{field} needs an API key: the environment variable {variable} is not set (set it, or set "
            f"{field}.api_key_env to the variable that holds the key, or to null for a local server "
            f"without a key; {field}.offline=true uses the cache only)"
        )
    return key


class LLMClient:
    """``field`` is the config path of ``config`` (``annotate``, ``evaluate.llms[gpt]``): messages name its fields."""

    def __init__(
        self,
        config: AnnotateConfig,
        *,
        field: str,
        api_key: str | None,
        limiter: RateLimiter,
        budget: Budget,
        stats: RunStats,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.field = field
        self._api_key = api_key
        self.limiter = limiter
        self.budget = budget
        self.stats = stats
        self.clock = clock or RealClock()
        self.rng = rng or random.Random()
        self.url = config.base_url or "https://api.openai.com/v1"  # redacted: for messages
        endpoint = config.endpoint()
        self._secrets = ([api_key] if api_key and len(api_key) >= 4 else []) + (url_secrets(endpoint) if endpoint else [])
        self.sampling: dict[str, Any] = config.sampling()  # sent as given: the cache key's sampling, exactly
        self._completion_mean = config.max_tokens / 2  # running mean of completion tokens, for estimates
        self._answers = 0
        self._stack = AsyncExitStack()
        self._client: openai.AsyncOpenAI | None = None
        # Until the endpoint has accepted one request, requests go one at a time: a wrong key,
        # model or base_url then costs one request, not max_in_flight of them.
        self._accepted = asyncio.Event()
        self._first = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> "LLMClient":
        base_url, query = self._endpoint()
        client = openai.AsyncOpenAI(
            api_key=self._api_key or NO_KEY,
            base_url=base_url,
            default_query=query or None,
            max_retries=0,  # complete() retries, in its own loop
            timeout=self.config.request_timeout_s,
        )
        self._client = await self._stack.enter_async_context(client)
        self._client.chat.completions  # noqa: B018 -- the SDK imports this lazily (~40 ms): do it before the first admission
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        self._client = None

    def _endpoint(self) -> tuple[str | None, dict[str, str]]:
        """The client's base URL and query parameters; userinfo only when no key is configured."""
        endpoint = self.config.endpoint()
        if endpoint is None:
            return None, {}
        if has_masked_secret(endpoint):
            raise FatalAPIError(
                f"{self.field}.base_url {endpoint} holds {MASK} where a credential was: credentials in the URL are never "
                f"saved with the config (manifests, flow parameters), so this URL came from a saved copy. Give the full "
                f"URL again, or better, put the key in the variable named by {self.field}.api_key_env."
            )
        if has_userinfo(endpoint) and self._api_key:
            log.warning(
                "%s.base_url %s has credentials in it; they are not sent: the request authenticates with the key "
                "from $%s (Bearer), as configured", self.field, self.url, self.config.api_key_env,
            )
        return client_url(endpoint, keep_userinfo=not self._api_key)

    def redact(self, text: str) -> str:
        """Remove the API key and URL credentials from a message (servers echo keys back in 401 errors)."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    # -- one sentence ----------------------------------------------------------------------
    def estimate_tokens(self, messages: Sequence[Mapping[str, str]]) -> tuple[int, int]:
        """(prompt tokens, prompt + expected completion tokens), estimated before the call."""
        chars = sum(len(m["content"]) for m in messages)
        prompt = max(1, round(chars / self.config.chars_per_token))
        return prompt, prompt + round(self._completion_mean)

    async def complete(self, messages: Sequence[Mapping[str, str]]) -> Answer:
        """A valid answer, or AnswerFailed; FatalAPIError and BudgetExhausted propagate."""
        est_prompt, est_total = self.estimate_tokens(messages)
        transport_failures = invalid_answers = 0
        failure = Failure("not_sent", "no attempt was made", retry=False, transport=True)
        async with self.limiter.slot():
            # The bound is never the reason to stop (the two counts below are), only a guarantee that it ends.
            for attempt in range(1, self.config.max_attempts + self.config.invalid_retries + 1):
                reserved = await self.budget.reserve(est_prompt, self.config.max_tokens)  # may wait; may stop the run
                try:
                    await self.limiter.admit(est_total)
                    outcome = await self._attempt(messages, est_prompt, est_total)
                finally:
                    self.budget.release(reserved)  # an answer is charged already; a failed attempt costs nothing
                if isinstance(outcome, Answer):
                    return outcome
                failure = outcome
                transport_failures += failure.transport
                invalid_answers += not failure.transport
                if (not failure.retry or transport_failures >= self.config.max_attempts
                        or invalid_answers > self.config.invalid_retries):
                    break
                self.stats.retries[failure.reason] += 1
                log.debug("retrying after %s (attempt %d)", failure.reason, attempt)
                await self.clock.sleep(self._wait(failure, attempt))
        if failure.transport:
            raise AnswerFailed(failure.reason, f"gave up after {transport_failures} attempts ({failure.detail})")
        raise AnswerFailed(failure.reason, f"after {invalid_answers} answer(s)")

    def _wait(self, failure: Failure, attempt: int) -> float:
        """Seconds before the next attempt: the server's Retry-After (capped), else backoff with jitter."""
        if failure.retry_after_s is not None:
            return min(failure.retry_after_s, self.config.retry_after_cap_s)
        backoff = min(self.config.backoff_initial_s * 2.0 ** (attempt - 1), self.config.backoff_max_s)
        return backoff * (0.5 + 0.5 * self.rng.random())

    async def _attempt(self, messages: Sequence[Mapping[str, str]], est_prompt: int, est_total: int) -> Answer | Failure:
        """One HTTP request: a usable answer (charged), or what went wrong; FatalAPIError for unfixable errors."""
        assert self._client is not None, "use LLMClient inside `async with`"
        self.stats.requests += 1
        try:
            if self._accepted.is_set():
                response = await self._send(messages)
            else:
                async with self._first:
                    response = await self._send(messages)
                    self._accepted.set()
            answer = self._read(response)
        except openai.APITimeoutError:  # (a subclass of APIConnectionError: first)
            return Failure("timeout", f"no answer within {self.config.request_timeout_s:g} s", retry=True, transport=True)
        except openai.APIConnectionError as exc:
            return Failure("connection", self.redact(str(exc.__cause__ or exc))[:200], retry=True, transport=True)
        except openai.APIStatusError as exc:
            if exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500:
                reason = "rate_limited" if exc.status_code == 429 else "server_error"
                detail = f"HTTP {exc.status_code}: {self._server_message(exc)}"
                return Failure(reason, detail, retry=True, transport=True, retry_after_s=parse_retry_after(exc.response.headers))
            raise FatalAPIError(self._fatal_message(exc)) from None
        except (json.JSONDecodeError, openai.APIResponseValidationError, _Malformed) as exc:
            return Failure("malformed", self.redact(str(exc))[:200], retry=True, transport=True)
        self._account(answer, est_prompt, est_total)
        return self._validate(answer)

    async def _send(self, messages: Sequence[Mapping[str, str]]) -> Any:
        assert self._client is not None, "use LLMClient inside `async with`"
        return await self._client.chat.completions.create(
            model=self.config.model, messages=cast("list[ChatCompletionMessageParam]", list(messages)), **self.sampling
        )

    def _read(self, response: Any) -> Answer:
        try:
            choice = response.choices[0]
            content = choice.message.content
            usage = response.usage
            return Answer(
                content=content if isinstance(content, str) else "",
                prompt_tokens=getattr(usage, "prompt_tokens", None),
                completion_tokens=getattr(usage, "completion_tokens", None),
                finish_reason=choice.finish_reason,
                served_model=getattr(response, "model", None),
            )
        except (AttributeError, IndexError, TypeError) as exc:
            raise _Malformed(f"unexpected answer shape ({type(exc).__name__}: {exc})") from None

    def _account(self, answer: Answer, est_prompt: int, est_total: int) -> None:
        if answer.prompt_tokens is None or answer.completion_tokens is None:
            self.stats.usage_missing += 1
            prompt, completion = est_prompt, max(0, round(len(answer.content) / self.config.chars_per_token))
        else:
            prompt, completion = answer.prompt_tokens, answer.completion_tokens
        self.budget.charge(prompt, completion)
        self.limiter.correct_tokens(est_total, prompt + completion)
        self._answers += 1
        self._completion_mean += (completion - self._completion_mean) / self._answers

    def _validate(self, answer: Answer) -> Answer | Failure:
        """The answer, or why it is unusable (an answer the config accepts as it is counts as usable)."""
        if answer.finish_reason == "content_filter":
            return Failure("content_filter", "the endpoint's content filter withheld the answer", retry=False, transport=False)
        undecodable = _undecodable(answer)
        if undecodable is not None:
            return Failure("undecodable", undecodable, retry=True, transport=False)
        problem, policy = None, "accept"
        if answer.finish_reason == "length":
            problem, policy = "truncated", self.config.on_truncated
        elif not answer.content.strip():
            problem, policy = "empty", self.config.on_empty
        if problem is None or policy == "accept":
            return answer
        return Failure(problem, f"{problem} answer", retry=policy == "retry", transport=False)

    # -- messages --------------------------------------------------------------------------
    def _server_message(self, exc: openai.APIStatusError) -> str:
        body = exc.body
        message = None
        if isinstance(body, dict):
            inner = body.get("error", body)
            message = inner.get("message") if isinstance(inner, dict) else None
        return self.redact(str(message or exc.message))[:300]

    def _fatal_message(self, exc: openai.APIStatusError) -> str:
        status, model, url = exc.status_code, self.config.model, self.url
        server = self._server_message(exc)
        env = f"${self.config.api_key_env}" if self.config.api_key_env else f"(no key configured: {self.field}.api_key_env is null)"
        if status == 401:
            hint = f"the API key from {env} was rejected; put a valid key in that variable (the key itself is never printed)"
        elif status == 403:
            hint = f"the key from {env} has no access to model {model!r} at this endpoint"
        elif status == 404:
            hint = f"model {model!r} or the endpoint path does not exist; check {self.field}.model and {self.field}.base_url (usually ending in /v1)"
        else:
            hint = f"the endpoint rejects the request itself; check {self.field}.model, max_tokens, temperature, top_p and the prompt template"
        return f"{self.field}: stopped: HTTP {status} from {url}: {server} -- {hint}. Retrying cannot fix this, so nothing more was sent."


class _Malformed(Exception):
    pass


def _undecodable(answer: Answer) -> str | None:
    """Why the answer's text cannot be stored (the cache, responses.parquet: UTF-8 only), or None when it can."""
    for name in ("content", "finish_reason", "served_model"):
        text = getattr(answer, name)
        try:
            (text or "").encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"the answer's {name} holds {text[exc.start]!r} at character {exc.start}, which no UTF-8 text can hold"
    return None
