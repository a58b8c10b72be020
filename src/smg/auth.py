"""Who may call: the gateway's API keys (``api_keys`` in the config; ``smg serve --api-key`` /
``--api-keys-file``).

A request carries its key as ``Authorization: Bearer KEY`` (OpenAI's SDKs) or ``x-api-key: KEY``
(Anthropic's). Keys are looked up by their SHA-256 digest, so no comparison runs over the key's
own bytes and the gateway holds no key in the table it consults per request. A missing or unknown
key is a 401, a model the key may not use a 403, each in the route's API's error shape. The
health probes (``/health``, ``/readiness``) need no key. A key's ``priority`` orders its requests
in admission queues (:mod:`smg.admission`); a key with ``priority_header`` lets each request set
its own (``X-SMG-Priority``).
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from smg.config import ApiKeyConfig
from smg.errors import Forbidden, InvalidRequest, ModelNotFound, Unauthorized

OPEN_PATHS = frozenset({"/health", "/readiness"})  # probes: load balancers and kubelets carry no key


PRIORITY_HEADER = "x-smg-priority"


@dataclass(frozen=True)
class Caller:
    """Who a request's key says is calling: the key's name, the models it may use (None: all), its
    requests' priority in admission queues, and whether a request may set its own."""

    name: str
    models: frozenset[str] | None
    priority: int = 0
    priority_header: bool = False

    def priority_of(self, headers: Mapping[str, str]) -> int:
        """The request's priority: its ``X-SMG-Priority`` header when the key allows one."""
        given = headers.get(PRIORITY_HEADER) if self.priority_header else None
        if given is None:
            return self.priority
        try:
            return int(given)
        except ValueError:
            raise InvalidRequest(f"{PRIORITY_HEADER} must be an integer, got {given!r}") from None


class _ModelField(msgspec.Struct):
    model: str = ""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class ApiKeys:
    """The gateway's keys, by digest."""

    def __init__(self, keys: Sequence[ApiKeyConfig]) -> None:
        self._callers = {_digest(k.key): Caller(k.name, frozenset(k.models) if k.models else None, k.priority,
                                                k.priority_header) for k in keys}

    def caller(self, headers: Mapping[str, str]) -> Caller:
        """The request's caller; :class:`Unauthorized` without a known key."""
        caller = self._callers.get(_digest(sent_key(headers)))
        if caller is None:
            raise Unauthorized("invalid API key")
        return caller


def sent_key(headers: Mapping[str, str]) -> str:
    """The key a request carries (``x-api-key``, else a Bearer token); :class:`Unauthorized` for none."""
    key = headers.get("x-api-key")
    if key is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    if not key:
        raise Unauthorized("no API key: send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'")
    return key


class AdminKey:
    """The admin API's key (``admin_key``): compared by digest, in constant time."""

    def __init__(self, key: str) -> None:
        self._digest = _digest(key)

    def check(self, headers: Mapping[str, str]) -> None:
        if not hmac.compare_digest(_digest(sent_key(headers)), self._digest):
            raise Unauthorized("invalid admin key")


def check_model(caller: Caller, body: bytes, models) -> None:
    """:class:`Forbidden` when the body's ``model`` is served but outside the caller's models (by
    the model's name or any alias). A body that is not JSON, or a model not served, is left to the
    route to answer."""
    if caller.models is None:
        return
    try:
        name = msgspec.json.decode(body, type=_ModelField).model
        served = models.resolve(name)[0]
    except (msgspec.DecodeError, ModelNotFound):
        return
    if served.name not in caller.models and not caller.models.intersection(served.aliases):
        raise Forbidden(f"the API key {caller.name!r} may not use model {name or served.name!r}")
