"""Per-key rate limits (an API key's ``requests_per_minute`` and ``tokens_per_minute``): token buckets
that refill continuously, one pair per key name.

A request takes one from its key's request bucket when it is authorised; an empty bucket is a 429
whose ``Retry-After`` says when the next one is there. Tokens are charged as the request's engine
streams end, with the prompt and output tokens they used (at most prompt + max output), so the
bucket may go into debt by one request's worth; a key whose token bucket is in debt is refused
until it refills above zero.
"""
from __future__ import annotations

import time

from smg.errors import Overloaded


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


class KeyLimits:
    """One key's buckets (either may be None: no limit)."""

    __slots__ = ("name", "requests", "tokens")

    def __init__(self, name: str, requests_per_minute: int | None, tokens_per_minute: int | None) -> None:
        self.name = name
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None

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
