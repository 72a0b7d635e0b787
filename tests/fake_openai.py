"""A local OpenAI-compatible chat-completions server that misbehaves on request.

Used by the tests and the benchmark (never by the stage): real sockets on 127.0.0.1, an
asyncio HTTP/1.1 server with keep-alive in a background thread, so the stage is exercised
through the real ``openai`` client. It can inject, per request:

- ``Fault.status(429, retry_after=7)`` (also ``retry_after_ms``), 500, 503, 400, 401, ...
- ``Fault.slow(seconds)`` (an answer that arrives late, or after the client's timeout)
- ``Fault.drop()`` (the connection is closed without an answer)
- ``Fault.malformed()`` (HTTP 200 with a body that is not JSON)
- ``Fault.empty()`` / ``Fault.truncated()`` (content ``""`` / ``finish_reason="length"``)
- ``Fault.hold()`` (never answers until :meth:`FakeOpenAIServer.release` or stop)
- ``Fault.lone_surrogate()`` (valid JSON whose content holds the escape ``\\ud800``: a lone
  surrogate, which no UTF-8 text can hold)

Faults come from a per-sentence script (the n-th request for a sentence gets the n-th
fault of its list), from ``fault_for(index, sentence)``, or at random with fixed
probabilities (seeded). Every request is logged with its arrival time and outcome (and
its messages). The answer is ``answer(sentence)``, or ``answer_request(messages)`` when
given (a tagger answering from gold labels reads the whole prompt).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

INPUT_MARKER = "Input: "


@dataclass(frozen=True)
class Fault:
    kind: str  # ok | status | slow | drop | malformed | empty | truncated | hold | lone_surrogate
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    message: str = ""

    @staticmethod
    def ok() -> "Fault":
        return Fault("ok")

    @staticmethod
    def status_code(code: int, *, retry_after: float | None = None, retry_after_ms: int | None = None, message: str = "") -> "Fault":
        headers = []
        if retry_after is not None:
            headers.append(("retry-after", f"{retry_after:g}"))
        if retry_after_ms is not None:
            headers.append(("retry-after-ms", str(retry_after_ms)))
        return Fault("status", status=code, headers=tuple(headers), message=message or f"injected {code}")

    @staticmethod
    def slow(seconds: float) -> "Fault":
        return Fault("slow", delay_s=seconds)

    @staticmethod
    def drop() -> "Fault":
        return Fault("drop")

    @staticmethod
    def malformed() -> "Fault":
        return Fault("malformed")

    @staticmethod
    def empty() -> "Fault":
        return Fault("empty")

    @staticmethod
    def truncated() -> "Fault":
        return Fault("truncated")

    @staticmethod
    def hold() -> "Fault":
        return Fault("hold")

    @staticmethod
    def lone_surrogate() -> "Fault":
        return Fault("lone_surrogate")


@dataclass
class RequestRecord:
    t: float  # arrival, time.monotonic() of the server process
    index: int  # 0-based arrival order
    sentence: str
    model: str
    fault: str  # the fault kind applied
    answered: bool = False  # a complete 200 answer with content was written
    target: str = ""  # the request line's target: path and query
    sent: float | None = None  # time.monotonic() once a complete answer was written to the socket
    auth: str = ""  # the Authorization header as received (tests look at its scheme; the key is the test's own)
    messages: list = field(default_factory=list)  # the request's chat messages, as sent


def default_answer(sentence: str) -> str:
    """A deterministic answer in the prompt's format: the sentence's longest word as an entity."""
    word = max(sentence.split() or ["nothing"], key=len).strip(".,;:!?\"'()")
    return f"{word} <> word <> the longest word of the sentence"


def sentence_of(prompt: str) -> str:
    """The sentence inside a rendered prompt: what follows the last ``Input: ``."""
    at = prompt.rfind(INPUT_MARKER)
    return prompt[at + len(INPUT_MARKER):] if at >= 0 else prompt


class FakeOpenAIServer:
    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        answer: Callable[[str], str] = default_answer,
        script: dict[str, list[Fault]] | None = None,
        fault_for: Callable[[int, str], Fault | None] | None = None,
        random_faults: tuple[tuple[float, Fault], ...] = (),
        seed: int = 0,
        api_key: str | None = None,
        models: tuple[str, ...] | None = None,
        hold_after: int | None = None,
        usage: bool = True,
        answer_request: Callable[[list], str] | None = None,
    ):
        self.latency_s = latency_s
        self.answer = answer
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.fault_for = fault_for
        self.random_faults = random_faults
        self.rng = random.Random(seed)
        self.api_key = api_key
        self.models = models
        self.hold_after = hold_after  # answer this many requests normally, hold every later one
        self.usage = usage
        self.answer_request = answer_request
        self.log: list[RequestRecord] = []
        self.port = 0
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        self._arrivals = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._release: asyncio.Event | None = None
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAIServer":
        self._thread = threading.Thread(target=self._serve, name="fake-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        fut.result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def release(self) -> None:
        """Let every held request (and every later one) be answered."""
        self.hold_after = None
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    # -- what happened -----------------------------------------------------------------------
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self.log)

    def requests_per_sentence(self) -> Counter[str]:
        return Counter(r.sentence for r in self.records())

    def answered_per_sentence(self) -> Counter[str]:
        return Counter(r.sentence for r in self.records() if r.answered)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.log)

    # -- serving -----------------------------------------------------------------------------
    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._release = asyncio.Event()

        async def open_server() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
            self.port = self._server.sockets[0].getsockname()[1]

        loop.run_until_complete(open_server())
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None and self._release is not None
        self._server.close()
        self._release.set()
        for writer in list(self._writers):
            writer.close()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _choose(self, sentence: str) -> tuple[int, Fault]:
        with self._lock:
            index = self._arrivals  # arrival order
            self._arrivals += 1
            nth = self._seen[sentence]
            self._seen[sentence] += 1
        fault: Fault | None = None
        scripted = self.script.get(sentence)
        if scripted and nth < len(scripted):
            fault = scripted[nth]
        if fault is None and self.fault_for is not None:
            fault = self.fault_for(index, sentence)
        if fault is None and self.hold_after is not None and index >= self.hold_after:
            fault = Fault.hold()
        if fault is None and self.random_faults:
            with self._lock:
                draw = self.rng.random()
            for p, candidate in self.random_faults:
                if draw < p:
                    fault = candidate
                    break
                draw -= p
        return index, fault or Fault.ok()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep = await self._respond(lines[0], headers, body, reader, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _respond(self, request_line: str, headers: dict[str, str], body: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        arrived = time.monotonic()
        try:
            payload = json.loads(body or b"{}")
        except json.JSONDecodeError:
            payload = {}
        messages = payload.get("messages") or [{"content": ""}]
        prompt = str(messages[-1].get("content", ""))
        sentence = sentence_of(prompt)
        model = str(payload.get("model", ""))
        index, fault = self._choose(sentence)
        target = request_line.split(" ")[1] if request_line.count(" ") >= 2 else ""
        record = RequestRecord(arrived, index, sentence, model, fault.kind, target=target, auth=headers.get("authorization", ""),
                               messages=list(messages))
        with self._lock:
            self.log.append(record)
        try:
            if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
                given = headers.get("authorization", "").removeprefix("Bearer ")
                # Like the real API, the error echoes (part of) the key it was given.
                await self._send_error(writer, 401, f"Incorrect API key provided: {given}", "invalid_api_key")
                return True
            if self.models is not None and model not in self.models:
                await self._send_error(writer, 404, f"The model `{model}` does not exist", "model_not_found")
                return True
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if fault.kind == "hold":
                assert self._release is not None
                await self._release.wait()
                if self._server is None or not self._server.is_serving() or _gone(reader, writer):
                    return False  # the client went away (killed) while we held its request
                fault = Fault.ok()
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay_s)
            if fault.kind == "drop":
                return False
            if fault.kind == "status":
                await self._send_error(writer, fault.status, fault.message, "injected", fault.headers)
                return True
            if fault.kind == "malformed":
                await self._send(writer, 200, b'{"id": "chatcmpl-x", "choices": [{"message": ', (("content-type", "application/json"),))
                return True
            if fault.kind == "empty":
                content = ""
            elif self.answer_request is not None:
                content = self.answer_request(list(messages))
            else:
                content = self.answer(sentence)
            finish = "length" if fault.kind == "truncated" else "stop"
            if fault.kind == "truncated":
                content = content[: max(1, len(content) // 2)]
            if fault.kind == "lone_surrogate":
                content = "\ud800" + content  # json.dumps writes it as the six bytes \ud800, as a broken server would
            result = {
                "id": f"chatcmpl-{index}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            }
            if self.usage:
                prompt_tokens = max(1, sum(len(str(m.get("content", ""))) for m in messages) // 4)  # 4 characters a token
                completion_tokens = max(0, len(content) // 4)
                result["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                }
            await self._send(writer, 200, json.dumps(result).encode(), (("content-type", "application/json"),))
            record.answered = fault.kind in ("ok", "slow") and not _gone(reader, writer)
            record.sent = time.monotonic()
            return True
        except ConnectionError:
            return False

    async def _send_error(self, writer, status: int, message: str, code: str, extra=()) -> None:
        body = json.dumps({"error": {"message": message, "type": "fake_error", "param": None, "code": code}}).encode()
        await self._send(writer, status, body, (("content-type", "application/json"), *extra))

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, headers=()) -> None:
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Status")
        head = [f"HTTP/1.1 {status} {reason}", f"content-length: {len(body)}", "connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in headers]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()


def _gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """The client closed its end (or died): nothing written now reaches it."""
    return reader.at_eof() or writer.transport.is_closing()
