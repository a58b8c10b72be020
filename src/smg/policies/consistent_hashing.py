"""``consistent_hashing``: a request's routing key (the ``X-SMG-Routing-Key`` header, else its
``user``) on a consistent-hash ring; without one, the prompt's first ids as ``prefix_hash`` does.
About 1/N of the keys move when one of N workers leaves or joins."""
from __future__ import annotations

from smg.policies.base import RequestView
from smg.policies.prefix_hash import PrefixHash


class ConsistentHashing(PrefixHash):
    name = "consistent_hashing"

    def ring_key(self, request: RequestView) -> bytes | None:
        if request.routing_key is not None:
            return b"k" + request.routing_key.encode()
        prefix = super().ring_key(request)
        return None if prefix is None else b"p" + prefix
