"""The response cache: one complete, valid answer per (model, rendered prompt, sampling).

A diskcache (SQLite in WAL mode) directory shared across runs and processes. An entry is
written only after an answer has been received in full and validated, in one SQLite
transaction, so a ``kill -9`` leaves either the whole entry or none: a rerun requests
exactly the sentences without an entry. The endpoint URL is deliberately not in the key
(the same model behind OpenAI, a proxy or a local server gives the same answer), and
eviction is off: a cache that silently forgot answers would silently cost money.

Values are JSON text (readable with any SQLite client), not pickles.

**Leases.** Runs share the cache, so two runs on the same sentences (two ``nuner run`` at
once, or a rerun started while the first still goes) would each pay for every sentence
neither had cached yet. Before a request, a run takes the sentence's *lease*: an entry
``lease:<key>`` naming the run (id, pid, host), written only if no live lease exists, in
one SQLite transaction, so of two runs exactly one gets it. The other waits for the answer
to appear in the cache. A lease expires ``lease_s`` after it was last renewed (its run
renews it while the request, retries included, goes on): the expiry is stored in the lease
(``leases.py``), in the time of the cache's clock (wall-clock time unless a test gives
another); a holder on this host whose
process is gone is seen as dead at once, so a ``kill -9`` costs no wait on a rerun here.
An answer is written *before* its lease is released, so whoever takes a released lease
finds the answer.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import diskcache

from nuner_core.annotation.leases import Holder, Lease

KEY_VERSION = "r1"
LEASE = "lease:"


class KeyMaker:
    """Cache keys for one model and sampling: sha256 of ``{"model","sampling"}`` + newline + the messages as JSON."""

    def __init__(self, model: str, sampling: Mapping[str, Any]):
        head = json.dumps({"model": model, "sampling": dict(sampling)}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        self._head = hashlib.sha256((head + "\n").encode())

    def key(self, messages: Sequence[Mapping[str, str]]) -> str:
        digest = self._head.copy()
        digest.update(json.dumps(list(messages), separators=(",", ":"), ensure_ascii=False).encode())
        return f"{KEY_VERSION}:{digest.hexdigest()}"


def response_key(model: str, messages: Sequence[Mapping[str, str]], sampling: Mapping[str, Any]) -> str:
    """Hash of everything that determines an answer: model, the rendered messages, sampling."""
    return KeyMaker(model, sampling).key(messages)


@dataclass(frozen=True)
class CachedAnswer:
    response: str  # the raw answer text
    prompt_tokens: int | None = None  # as reported by the endpoint (None: imported, or not reported)
    completion_tokens: int | None = None
    finish_reason: str | None = None  # "stop", "length" (accepted truncation), None for imports
    served_model: str | None = None  # the model name the endpoint reported
    source: str = "api"  # "api" or "import:<file name>"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @staticmethod
    def from_json(text: str) -> "CachedAnswer":
        return CachedAnswer(**json.loads(text))


class ResponseCache:
    """A thin typed wrapper over ``diskcache.Cache``; use it as a context manager.

    ``clock`` gives the time leases are taken, renewed and judged expired in (seconds; wall-clock
    time by default, as every process sharing the cache must agree on it).
    """

    def __init__(self, directory: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._cache = diskcache.Cache(str(self.directory), eviction_policy="none", statistics=False)

    def get(self, key: str) -> CachedAnswer | None:
        value = self._cache.get(key)
        return None if value is None else CachedAnswer.from_json(value)

    def get_many(self, keys: Sequence[str]) -> list[CachedAnswer | None]:
        """Look many keys up in one SQLite transaction (about twice as fast as one by one)."""
        with self._cache.transact():
            return [self.get(key) for key in keys]

    def put(self, key: str, answer: CachedAnswer) -> None:
        self._cache.set(key, answer.to_json())

    def __contains__(self, key: str) -> bool:
        return key in self._cache

    def count_answers(self) -> int:
        return sum(1 for key in self._cache.iterkeys() if str(key).startswith(f"{KEY_VERSION}:"))

    def keys(self) -> Iterator[str]:
        return (str(k) for k in self._cache.iterkeys() if str(k).startswith(f"{KEY_VERSION}:"))

    # -- leases --------------------------------------------------------------------------------
    def lease(self, key: str, holder: Holder, seconds: float) -> Holder | None:
        """Take the lease of ``key`` for ``seconds``; None when taken, else the live holder that has it."""
        with self._cache.transact():
            current = self._holder(key)
            if current is not None and current.run != holder.run and current.alive():
                return current
            self._cache.set(LEASE + key, Lease(holder, self.clock() + seconds).to_json())
        return None

    def holders(self, keys: Sequence[str]) -> list[Holder | None]:
        """The live holder of each key's lease (None: free, expired, or its process is gone)."""
        with self._cache.transact():
            found = [self._holder(key) for key in keys]
        return [h if h is not None and h.alive() else None for h in found]

    def renew(self, keys: Iterable[str], holder: Holder, seconds: float) -> int:
        """Push back the expiry of the leases ``holder`` still has; returns how many."""
        renewed = 0
        with self._cache.transact():
            for key in keys:
                current = self._holder(key)
                if current is not None and current.run == holder.run:
                    self._cache.set(LEASE + key, Lease(holder, self.clock() + seconds).to_json())
                    renewed += 1
        return renewed

    def release(self, key: str, holder: Holder) -> None:
        """Give up the lease of ``key`` if ``holder`` has it (after its answer, if any, was written)."""
        with self._cache.transact():
            current = self._holder(key)
            if current is not None and current.run == holder.run:
                self._cache.delete(LEASE + key)

    def put_and_release(self, key: str, answer: CachedAnswer, holder: Holder) -> None:
        """Write the answer and give up its lease in one transaction: a waiting run sees both or neither."""
        with self._cache.transact():
            self.put(key, answer)
            self.release(key, holder)

    def _holder(self, key: str) -> Holder | None:
        """The holder of ``key``'s lease, None when there is none or it has expired."""
        value = self._cache.get(LEASE + key)
        if value is None:
            return None
        try:
            lease = Lease.from_json(value)
        except (ValueError, TypeError):
            return None  # unreadable: treat as free (the worst case is one duplicate request)
        return lease.holder if lease.expires > self.clock() else None

    def has_marker(self, name: str) -> bool:
        return f"marker:{name}" in self._cache

    def set_marker(self, name: str, value: Mapping[str, Any]) -> None:
        self._cache.set(f"marker:{name}", json.dumps(dict(value)))

    def transact(self) -> AbstractContextManager[Any]:
        transaction: AbstractContextManager[Any] = self._cache.transact()
        return transaction

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
