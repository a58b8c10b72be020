"""Per-key rate limits (an API key's ``requests_per_minute`` and ``tokens_per_minute``): token buckets
that refill continuously, one pair per key name.

A request takes one from its key's request bucket when it is authorised; an empty bucket is a 429
whose ``Retry-After`` says when the next one is there. Tokens are charged as the request's engine
streams end, with the prompt and output tokens they used (at most prompt + max output), so the
bucket may go into debt by one request's worth; a key whose token bucket is in debt is refused
until it refills above zero.

When a server's worker processes share their limits (:mod:`smg.shared_state`), a key's buckets
live in the shared file: the key's rates are the server's, whichever process a request lands on.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from smg.errors import Overloaded
from smg.shared_state import SharedBucket

if TYPE_CHECKING:
    from smg.shared_state import SharedState


class TokenBucket:
    """``per_minute`` units, refilled continuously; holds at most a minute's worth."""

    __slots__ = ("capacity", "rate", "level", "stamp")

    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, amount: float = 1.0) -> float:
        """Take ``amount`` now, or the seconds until it can be taken (nothing taken)."""
        self._refill()
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / self.rate

    def in_debt(self) -> float:
        """0 when the bucket holds something, else the seconds until it does."""
        self._refill()
        return 0.0 if self.level > 0 else (-self.level + 1e-9) / self.rate

    def charge(self, amount: float) -> None:
        self._refill()
        self.level -= amount


class SharedTokenBucket(TokenBucket):
    """A :class:`TokenBucket` whose level and stamp are kept in a server's shared state: each
    operation loads them, runs as the local bucket does, and stores them, under the state's lock."""

    __slots__ = ("shared",)

    def __init__(self, per_minute: float, shared: SharedBucket) -> None:
        super().__init__(per_minute)
        self.shared = shared

    def _locked(self, operation, *args):
        with self.shared.values(self.capacity) as values:
            self.level, self.stamp = values
            result = operation(self, *args)
            values[:] = (self.level, self.stamp)
        return result

    def take(self, amount: float = 1.0) -> float:
        return self._locked(TokenBucket.take, amount)

    def in_debt(self) -> float:
        return self._locked(TokenBucket.in_debt)

    def charge(self, amount: float) -> None:
        self._locked(TokenBucket.charge, amount)


class KeyLimits:
    """One key's buckets (either may be None: no limit); ``shared``: the server's state, when its
    processes share the limits."""

    __slots__ = ("name", "rates", "requests", "tokens")

    def __init__(self, name: str, requests_per_minute: int | None, tokens_per_minute: int | None,
                 shared: "SharedState | None" = None) -> None:
        self.name = name
        self.rates = (requests_per_minute, tokens_per_minute)
        self.requests = self._bucket(f"{name}:requests", requests_per_minute, shared)
        self.tokens = self._bucket(f"{name}:tokens", tokens_per_minute, shared)

    @staticmethod
    def _bucket(name: str, per_minute: int | None, shared: "SharedState | None") -> TokenBucket | None:
        if not per_minute:
            return None
        return TokenBucket(per_minute) if shared is None else SharedTokenBucket(per_minute, SharedBucket(shared, name))

    def admit(self) -> None:
        """Take a request; :class:`Overloaded` (429) when the key is over a limit."""
        if self.tokens is not None:
            wait = self.tokens.in_debt()
            if wait:
                raise Overloaded(f"the API key {self.name!r} is over its tokens per minute; retry later",
                                 retry_after=wait)
        if self.requests is not None:
            wait = self.requests.take()
            if wait:
                raise Overloaded(f"the API key {self.name!r} is over its requests per minute; retry later",
                                 retry_after=wait)

    def charge(self, tokens: int) -> None:
        if self.tokens is not None:
            self.tokens.charge(tokens)
