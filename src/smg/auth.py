"""Who may call: the gateway's API keys (``api_keys`` in the config; ``smg serve --api-key`` /
``--api-keys-file``) and JWT bearer tokens of configured issuers (``jwt_issuers``).

A request carries its key as ``Authorization: Bearer KEY`` (OpenAI's SDKs) or ``x-api-key: KEY``
(Anthropic's). Keys are looked up by their SHA-256 digest, so no comparison runs over the key's
own bytes and the gateway holds no key in the table it consults per request. A missing or unknown
key is a 401, a model the key may not use a 403, each in the route's API's error shape. The
health probes (``/health``, ``/readiness``) need no key. A key's ``priority`` orders its requests
in admission queues (:mod:`smg.admission`); a key with ``priority_header`` lets each request set
its own (``X-SMG-Priority``).

A bearer token shaped as a JWT, when issuers are configured, is verified instead: its issuer's key
(from a JWKS file or URL, by ``kid``), signature, ``iss``, ``aud``, ``exp`` and ``nbf``; its
claims give the caller's name, models and priority as a key's fields do.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from smg.config import ApiKeyConfig, ConfigError, JwtIssuerConfig
from smg.errors import Forbidden, InvalidRequest, ModelNotFound, Unauthorized
from smg.rate_limit import KeyLimits
from smg.shared_state import SharedState

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
    limits: KeyLimits | None = field(default=None, compare=False)  # its rate limits (smg.rate_limit)

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

    def __init__(self, keys: Sequence[ApiKeyConfig], shared: SharedState | None = None) -> None:
        self._callers = {
            _digest(k.key): Caller(k.name, frozenset(k.models) if k.models else None, k.priority, k.priority_header,
                                   KeyLimits(k.name, k.requests_per_minute, k.tokens_per_minute, shared)
                                   if k.requests_per_minute or k.tokens_per_minute else None)
            for k in keys}

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


class _Issuer:
    """One JWT issuer: its keys by ``kid``, loaded from its JWKS file, or fetched from its URL
    (again after ``jwks_ttl``, or when a token names a key it lacks, at most every few seconds)."""

    REFETCH_FLOOR = 5.0  # seconds between fetches a stream of unknown kids can cause

    def __init__(self, config: JwtIssuerConfig) -> None:
        self.config = config
        self.keys: dict[str | None, object] = {}
        self.fetched_at = float("-inf")
        self._fetch: asyncio.Lock | None = None
        if config.jwks_file is not None:
            try:
                with open(config.jwks_file, encoding="utf-8") as handle:
                    self.keys = self._parse(handle.read())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"JWT issuer {config.issuer!r}: cannot read {config.jwks_file}: {exc}") from None

    @staticmethod
    def _parse(text: str) -> dict:
        import jwt

        keys = {}
        for entry in json.loads(text).get("keys", []):
            try:
                keys[entry.get("kid")] = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # (a key of a type or algorithm this gateway does not take)
        return keys

    async def key(self, kid: str | None):
        config = self.config
        if config.jwks_url is not None:
            now = time.monotonic()
            stale = now - self.fetched_at > config.jwks_ttl
            if stale or kid not in self.keys and now - self.fetched_at > self.REFETCH_FLOOR:
                self._fetch = self._fetch or asyncio.Lock()
                async with self._fetch:
                    if self.fetched_at < now:  # (not fetched by another request meanwhile)
                        await self._refetch()
        found = self.keys.get(kid) or (next(iter(self.keys.values())) if kid is None and len(self.keys) == 1
                                       else None)
        if found is None:
            raise Unauthorized(f"the token's key {kid!r} is not one of its issuer's")
        return found

    async def _refetch(self) -> None:
        import httpx

        self.fetched_at = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                reply = await client.get(self.config.jwks_url)
                reply.raise_for_status()
                self.keys = self._parse(reply.text)
        except (httpx.HTTPError, ValueError) as exc:
            if not self.keys:  # (with keys from before, they serve until the URL answers again)
                raise Unauthorized(f"the issuer's keys cannot be fetched: {type(exc).__name__}") from None


class JwtIssuers:
    """The configured issuers, by ``iss``; the rate limits of the callers their tokens name."""

    MAX_CALLERS = 100_000  # callers whose buckets are kept (the least recently seen forgotten)

    def __init__(self, issuers: Sequence[JwtIssuerConfig], shared: SharedState | None = None) -> None:
        self._issuers = {config.issuer: _Issuer(config) for config in issuers}
        self._shared = shared
        self._limits: OrderedDict[tuple[str, str], KeyLimits] = OrderedDict()

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        return token.count(".") == 2

    async def caller(self, token: str) -> Caller:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthorized("invalid bearer token") from None
        issuer = self._issuers.get(unverified.get("iss"))
        if issuer is None:
            raise Unauthorized("the token's issuer is not one this gateway takes")
        config = issuer.config
        key = await issuer.key(header.get("kid"))
        try:
            claims = jwt.decode(token, key, algorithms=config.algorithms, issuer=config.issuer,
                                audience=config.audience, leeway=config.leeway,
                                options={"require": ["exp", "iss"], "verify_aud": config.audience is not None})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from None
        models = claims.get(config.models_claim)
        priority = claims.get(config.priority_claim, 0)
        if models is not None and not (isinstance(models, list) and all(isinstance(m, str) for m in models)):
            raise Unauthorized(f"the token's {config.models_claim!r} claim must be a list of model names")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise Unauthorized(f"the token's {config.priority_claim!r} claim must be an integer")
        name = str(claims.get(config.name_claim, ""))
        return Caller(name, frozenset(models) if models is not None else None, priority,
                      limits=self._caller_limits(config, name, claims))

    def _caller_limits(self, config: JwtIssuerConfig, name: str, claims: dict) -> KeyLimits | None:
        """The caller's buckets (kept across its tokens), from the issuer's limits or its token's."""
        rates = []
        for claim, default in ((config.requests_per_minute_claim, config.requests_per_minute),
                               (config.tokens_per_minute_claim, config.tokens_per_minute)):
            value = claims.get(claim, default)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise Unauthorized(f"the token's {claim!r} claim must be a positive integer")
            rates.append(value)
        if not any(rates):
            return None
        key = (config.issuer, name)
        limits = self._limits.get(key)
        if limits is None or limits.rates != tuple(rates):  # (new, or its token grants other rates)
            limits = self._limits[key] = KeyLimits(f"{name} ({config.issuer})", *rates, self._shared)
            if len(self._limits) > self.MAX_CALLERS:
                self._limits.popitem(last=False)
        self._limits.move_to_end(key)
        return limits


class Callers:
    """Who a request is: by its API key, or its JWT when issuers are configured."""

    def __init__(self, keys: Sequence[ApiKeyConfig], issuers: Sequence[JwtIssuerConfig],
                 shared: SharedState | None = None) -> None:
        self.keys = ApiKeys(keys, shared)
        self.issuers = JwtIssuers(issuers, shared) if issuers else None

    async def caller(self, headers: Mapping[str, str]) -> Caller:
        token = sent_key(headers)
        if self.issuers is not None and JwtIssuers.looks_like_jwt(token):
            return await self.issuers.caller(token)
        return self.keys.caller(headers)


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
