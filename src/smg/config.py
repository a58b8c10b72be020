"""Every configuration record, in one place: the gateway, its models, their pools, the tokenizer
cache, storage, MCP servers, API keys and the HTTP server.

Records are frozen msgspec structs: ``GatewayConfig.load(path_or_mapping)`` reads a TOML or JSON
file (or a dict) with the same keys, and any unknown key or bad value is a :class:`ConfigError`
naming it (``... - at `$.models[0].policy```), before anything starts. Constructing a record in
Python validates it the same way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import msgspec

from smg.errors import InvalidRequest

MiB = 1 << 20

ENGINES = ("sglang", "vllm", "trtllm")
# Protocols whose GenerateRequest carries a LoRA adapter id (vLLM's and TRT-LLM's gRPC requests do not)
LORA_ENGINES = ("sglang",)


class ConfigError(InvalidRequest, ValueError):
    """A configuration key or value that cannot be used (a ValueError, so that msgspec reports it
    with the path of the key)."""


def check_lora_engine(model: str | None, adapters, engine: str) -> None:
    """A ConfigError when a model lists LoRA adapters but its engine protocol cannot name one."""
    if adapters and engine not in LORA_ENGINES:
        raise ConfigError(f"model {model!r}: the {engine} protocol carries no LoRA adapter id (lora_adapters "
                          f"needs engine {' or '.join(LORA_ENGINES)})")


class _Record(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


def _number(owner: str, name: str, value, low: float, high: float | None = None, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or value < low or (high is not None and value > high):
        kind = "an int" if integer else "a number"
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{owner}.{name} must be {kind} {bound}, got {value!r}")


def _admission_limits(owner: str, record) -> None:
    if record.max_concurrent_requests is not None:
        _number(owner, "max_concurrent_requests", record.max_concurrent_requests, 1, integer=True)
    if record.max_queue_size is not None:
        _number(owner, "max_queue_size", record.max_queue_size, 0, integer=True)
    if record.queue_timeout is not None:
        _number(owner, "queue_timeout", record.queue_timeout, 0.001)


class CacheConfig(_Record, frozen=True):
    """Bounds of the tokenizer's two caches.

    Attributes:
        l0_max_bytes: memory for exact-match entries (whole input -> ids); 0 disables L0.
        l1_max_bytes: memory for prefix entries cut at special tokens; 0 disables L1.
    """

    l0_max_bytes: int = 64 * MiB
    l1_max_bytes: int = 128 * MiB

    def __post_init__(self) -> None:
        for name in ("l0_max_bytes", "l1_max_bytes"):
            _number("CacheConfig", name, getattr(self, name), 0, integer=True)


class RoutingConfig(_Record, frozen=True):
    """The routing policies' settings (see smg.policies).

    Attributes:
        cache_threshold: ``cache_aware`` routes to the longest match only when it covers more than
            this fraction of the prompt.
        balance_abs_threshold, balance_rel_threshold: the balance guard. Workers are imbalanced
            when the busiest has more than ``abs`` requests over the idlest and more than ``rel``
            times its load; then load decides. The defaults let a burst of users of one prefix
            pile up to 32 requests on its worker before it spills.
        max_tree_tokens: prompt tokens ``cache_aware`` remembers per worker (LRU beyond; memory
            per token in docs/routing.md).
        max_routing_keys: routing keys pinned to workers, the least recently used forgotten.
        prefix_hash_tokens: how many leading ids ``prefix_hash`` hashes.
        virtual_nodes: points per worker on the consistent-hash ring.
        bucket_window: recent prompt lengths ``bucket`` draws its bands from.
        load_records: follow every worker's ``SubscribeKvEvents`` for the load records on its
            batches (the engine's queue at every scheduler step), not only ``GetLoads`` on the
            health interval. ``kv_events`` always does; for the others it costs a stream per
            worker and the parsing of its event batches, so it is off by default.
    """

    cache_threshold: float = 0.5
    balance_abs_threshold: int = 32
    balance_rel_threshold: float = 1.5
    max_tree_tokens: int = 1 << 20
    max_routing_keys: int = 100_000
    prefix_hash_tokens: int = 256
    virtual_nodes: int = 160
    bucket_window: int = 1000
    load_records: bool = False

    def __post_init__(self) -> None:
        _number("RoutingConfig", "cache_threshold", self.cache_threshold, 0, 1)
        _number("RoutingConfig", "balance_abs_threshold", self.balance_abs_threshold, 0, integer=True)
        _number("RoutingConfig", "balance_rel_threshold", self.balance_rel_threshold, 1)
        for name in ("max_tree_tokens", "max_routing_keys", "prefix_hash_tokens", "virtual_nodes", "bucket_window"):
            _number("RoutingConfig", name, getattr(self, name), 1, integer=True)


class PoolConfig(_Record, frozen=True):
    """A model's worker pool: health probing, retries, the policy and the stream transport."""

    health_interval: float = 5.0
    health_timeout: float = 2.0
    request_timeout: float | None = None  # whole-stream deadline per attempt
    # a streamed attempt that waits longer for its first token, or between two, ends (the worker
    # is taken out of rotation until a health probe passes; an attempt with nothing sent yet is
    # retried on another worker); None: no limit. h2 transport only.
    first_token_timeout: float | None = None
    inter_token_timeout: float | None = None
    connect_timeout: float = 5.0  # TCP connect + HTTP/2 handshake of an engine connection
    max_attempts: int = 2  # attempts per request while nothing has been sent yet
    policy: str = "cache_aware"
    routing: RoutingConfig = RoutingConfig()
    default_engine: str = "sglang"
    # Generate's transport: "h2", smg's HTTP/2 client on the event loop (no thread hand-off per
    # token message), or "grpc.aio"
    stream_transport: str = "h2"
    # h2's read pacing: an engine connection whose messages come more often than every
    # 2 * read_interval seconds is read at most every read_interval (a message waits that long at
    # most; see smg.engines.h2); 0: read whenever data arrives
    read_interval: float = 0.001

    def __post_init__(self) -> None:
        from smg.policies import POLICIES

        if self.stream_transport not in ("h2", "grpc.aio"):
            raise ConfigError(f"stream_transport must be 'h2' or 'grpc.aio', got {self.stream_transport!r}")
        if (not isinstance(self.read_interval, (int, float)) or isinstance(self.read_interval, bool)
                or not 0 <= self.read_interval <= 1):
            raise ConfigError(f"read_interval must be seconds in [0, 1], got {self.read_interval!r}")
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; known: {', '.join(POLICIES)}")
        if self.default_engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.default_engine!r}; known: {', '.join(ENGINES)}")
        _number("PoolConfig", "health_interval", self.health_interval, 0.01)
        _number("PoolConfig", "health_timeout", self.health_timeout, 0.01)
        _number("PoolConfig", "connect_timeout", self.connect_timeout, 0.01)
        _number("PoolConfig", "max_attempts", self.max_attempts, 1, integer=True)
        for name in ("request_timeout", "first_token_timeout", "inter_token_timeout"):
            if getattr(self, name) is not None:
                _number("PoolConfig", name, getattr(self, name), 0.001)
        if self.stream_transport != "h2" and (self.first_token_timeout or self.inter_token_timeout):
            raise ConfigError("first_token_timeout and inter_token_timeout need stream_transport 'h2'")


def _is_network(entry: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_network(entry, strict=False)
        return True
    except ValueError:
        return False


class MediaConfig(_Record, frozen=True):
    """Image inputs: where they may come from and how big they may be (the SSRF allow-list is the
    gateway's ``url_allow_list``, shared by every outbound fetch)."""

    allowed_dirs: list[str] = []  # file:// URLs must point inside one of these (none: file:// is off)
    fetch_timeout: float = 10.0
    max_image_bytes: int = 20 * MiB
    max_image_pixels: int = 50_000_000
    max_images: int = 16  # per request
    # each image-preprocessing thread bound to its own CPU (Linux: elsewhere the model's start refuses it;
    # see smg.multimodal.stage.image_threads)
    pin_threads: bool = False

    def __post_init__(self) -> None:
        _number("MediaConfig", "fetch_timeout", self.fetch_timeout, 0.001)
        for name in ("max_image_bytes", "max_image_pixels", "max_images"):
            _number("MediaConfig", name, getattr(self, name), 1, integer=True)


STORAGE_SCHEMES = ("memory", "sqlite", "postgresql", "postgres")  # smg.storage.BACKENDS


class StorageConfig(_Record, frozen=True):
    """Where stored responses and conversations live (``smg.storage``): ``memory`` (lost at exit),
    ``sqlite:///relative/file`` or ``sqlite:////absolute/file`` (WAL; calls run off the event loop),
    or ``postgresql://user@host:port/db`` (asyncpg, a pool of ``pool_size``; the schema is created
    or migrated at start)."""

    url: str = "memory"
    pool_size: int = 8
    timeout: float = 10.0  # seconds one storage call may take before it is a 503

    def __post_init__(self) -> None:
        if self.url.split(":", 1)[0] not in STORAGE_SCHEMES:
            raise ConfigError(f"storage url must start with one of {', '.join(STORAGE_SCHEMES)}, got {self.url!r}")
        _number("StorageConfig", "pool_size", self.pool_size, 1, integer=True)
        _number("StorageConfig", "timeout", self.timeout, 0.001)


class McpServerConfig(_Record, frozen=True):
    """An MCP server the operator configures (``mcp_servers``; ``smg serve --mcp-server LABEL=URL``):
    a request names it by ``server_label`` alone. ``url``: streamable HTTP, or SSE when its path
    ends in ``/sse``; or ``command`` + ``args``: a stdio server the gateway starts. ``headers`` go
    with every HTTP request to it (a request's own headers add to them)."""

    label: str
    url: str | None = None
    command: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}  # stdio: extra environment for the server process
    headers: dict[str, str] = {}

    def __post_init__(self) -> None:
        if not self.label or not self.label.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"mcp server labels are letters, digits, '_' and '-', got {self.label!r}")
        if (self.url is None) == (self.command is None):
            raise ConfigError(f"mcp server {self.label!r}: give url (HTTP) or command (stdio), one of them")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"mcp server {self.label!r}: url must be http(s)://, got {self.url!r}")


DISCOVERY_KINDS = ("file", "dns", "kubernetes")
WORKER_ROLES = ("regular", "prefill", "decode")


class DiscoveryConfig(_Record, frozen=True):
    """Where engine workers are found while serving (``smg.discovery``).

    ``file``: ``path`` to a JSON or TOML file listing workers (``{"workers": [{"url", "model",
    "role", "engine"}]}`` or the bare list), read again when it changes. ``dns``: ``name`` resolved
    every ``interval`` seconds, each address a worker on ``port`` of ``model`` (a Kubernetes
    headless service's name, say). ``kubernetes``: the ready pods ``label_selector`` selects in
    ``namespace``, watched."""

    kind: str
    path: str | None = None
    name: str | None = None
    port: int | None = None
    model: str | None = None  # dns: the model its workers serve (default: the gateway's first)
    role: str = "regular"  # dns: regular, prefill or decode
    engine: str | None = None  # dns: the engine protocol (default: the model's)
    interval: float | None = None  # seconds between looks (default: file 1, dns 10, kubernetes 1)
    # kubernetes: pods of namespace selected by label_selector, their port from the annotation
    # (else port); the API server and token of the pod's service account, unless given
    namespace: str = "default"
    label_selector: str | None = None
    port_annotation: str = "smg.ai/port"
    api_server: str | None = None
    token_file: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DISCOVERY_KINDS:
            raise ConfigError(f"discovery kind must be one of {', '.join(DISCOVERY_KINDS)}, got {self.kind!r}")
        if self.kind == "file" and not self.path:
            raise ConfigError("file discovery needs a path")
        if self.kind == "dns" and (not self.name or self.port is None):
            raise ConfigError("dns discovery needs a name and a port")
        if self.kind == "kubernetes" and not self.label_selector:
            raise ConfigError("kubernetes discovery needs a label_selector (app=sglang, say)")
        if self.port is not None:
            _number("DiscoveryConfig", "port", self.port, 1, 65535, integer=True)
        if self.role not in WORKER_ROLES:
            raise ConfigError(f"a worker's role is one of {', '.join(WORKER_ROLES)}, got {self.role!r}")
        if self.engine is not None and self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; known: {', '.join(ENGINES)}")
        if self.interval is not None:
            _number("DiscoveryConfig", "interval", self.interval, 0.01)


class McpConfig(_Record, frozen=True):
    """The MCP tool loop's limits (``smg.mcp``)."""

    call_timeout: float = 60.0  # seconds one tool call may take (then the model gets a tool error)
    max_calls: int = 16  # tool calls one response may make (then it ends incomplete)
    max_output_bytes: int = 1 * MiB  # a larger tool result is a tool error
    connect_timeout: float = 10.0  # connecting to a server and listing its tools
    tools_ttl: float = 60.0  # a session's tool list is listed again after this many seconds
    idle_timeout: float = 300.0  # a pooled session unused this long is closed

    def __post_init__(self) -> None:
        for name in ("call_timeout", "connect_timeout", "tools_ttl", "idle_timeout"):
            _number("McpConfig", name, getattr(self, name), 0.001)
        _number("McpConfig", "max_calls", self.max_calls, 1, integer=True)
        _number("McpConfig", "max_output_bytes", self.max_output_bytes, 1, integer=True)


class ApiKeyConfig(_Record, frozen=True):
    """A key clients send (``Authorization: Bearer KEY`` or ``x-api-key: KEY``): its name (what logs
    and metrics show, never the key), the key, and the models it may use (names or aliases; none:
    every model)."""

    name: str
    key: str
    models: list[str] = []
    priority: int = 0  # its requests' place in admission queues (higher first)
    priority_header: bool = False  # its requests may set their own priority (X-SMG-Priority)
    requests_per_minute: int | None = None  # rate limits (smg.rate_limit); None: none
    tokens_per_minute: int | None = None  # prompt + output tokens, charged as they are used

    def __post_init__(self) -> None:
        if not self.name or not self.key or any(c.isspace() for c in self.key):
            raise ConfigError(f"API key {self.name!r}: a key needs a name and a non-empty key without spaces")
        for name in ("requests_per_minute", "tokens_per_minute"):
            if getattr(self, name) is not None:
                _number(f"API key {self.name!r}", name, getattr(self, name), 1, integer=True)


class JwtIssuerConfig(_Record, frozen=True):
    """An issuer whose JWT bearer tokens the gateway takes instead of API keys (``jwt_issuers``):
    its ``iss``, its keys (a JWKS file, or a URL fetched and refreshed every ``jwks_ttl`` seconds
    and when a token names a key it lacks), the audience tokens must name, and the claims that
    map onto what an API key says (the caller's name, its models, its priority)."""

    issuer: str
    jwks_file: str | None = None
    jwks_url: str | None = None
    audience: str | None = None
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256", "ES256"])
    leeway: float = 30.0  # seconds of clock skew allowed on exp / nbf
    jwks_ttl: float = 300.0
    name_claim: str = "sub"
    models_claim: str = "models"  # a list of model names (absent: every model)
    priority_claim: str = "priority"
    # rate limits per caller (its name claim), as an API key's; a token's claims of these names
    # (integers) override them
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    requests_per_minute_claim: str = "requests_per_minute"
    tokens_per_minute_claim: str = "tokens_per_minute"

    def __post_init__(self) -> None:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ConfigError(f"JWT issuer {self.issuer!r}: give jwks_file or jwks_url, one of them")
        if not self.algorithms or any(a.upper().startswith("HS") or a.lower() == "none" for a in self.algorithms):
            raise ConfigError(f"JWT issuer {self.issuer!r}: algorithms are public-key ones (RS256, ES256, ...)")
        _number("JwtIssuerConfig", "leeway", self.leeway, 0)
        for name in ("requests_per_minute", "tokens_per_minute"):
            if getattr(self, name) is not None:
                _number("JwtIssuerConfig", name, getattr(self, name), 1, integer=True)
        _number("JwtIssuerConfig", "jwks_ttl", self.jwks_ttl, 1)


class ModelConfig(_Record, frozen=True):
    """One served model: the name requests use (and aliases), its workers and how to talk to them,
    its tokenizer, chat template and parsers. Unset values come from the gateway's defaults or
    from what the engine reports (model id, context length, tokenizer path)."""

    name: str | None = None  # default: the model id the engine reports
    aliases: list[str] = []
    workers: list[str] = []
    # prefill/decode disaggregation (instead of workers; SGLang engines): the two sides' workers,
    # the prefill engines' KV handover (bootstrap) port, and each side's policy (default: policy)
    prefill: list[str] = []
    decode: list[str] = []
    bootstrap_port: int = 8998
    prefill_policy: str | None = None
    decode_policy: str | None = None
    engine: str | None = None  # default: the gateway's pool.default_engine
    tokenizer: str | None = None  # a directory/file, or a bundled name; default: the engine's
    chat_template: str | None = None  # a template, a file, or a bundled/named template
    reasoning_parser: str | None = None  # default: picked from the model name
    tool_parser: str | None = None
    policy: str | None = None  # default: the gateway's pool.policy
    context_length: int | None = None  # default: the engine's max_context_length
    lora_adapters: list[str] = []
    cache: CacheConfig | None = None  # default: the gateway's
    image_processor: str | None = None  # a family of smg.multimodal (qwen2_vl, llava, ...): takes images
    preprocessor_config: str | None = None  # default: the tokenizer directory's preprocessor_config.json
    # admission control for this model (smg.admission; the queue's size and timeout default to the gateway's)
    max_concurrent_requests: int | None = None
    max_queue_size: int | None = None
    queue_timeout: float | None = None

    def __post_init__(self) -> None:
        from smg.policies import POLICIES

        if self.engine is not None and self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; known: {', '.join(ENGINES)}")
        for policy in (self.policy, self.prefill_policy, self.decode_policy):
            if policy is not None and policy not in POLICIES:
                raise ConfigError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        if bool(self.prefill) != bool(self.decode):
            raise ConfigError("prefill/decode disaggregation needs both prefill and decode workers")
        if self.prefill and self.workers:
            raise ConfigError("give either workers or prefill and decode workers, not both")
        if self.prefill and self.engine not in (None, "sglang"):
            raise ConfigError(f"prefill/decode disaggregation takes SGLang engines, not {self.engine}")
        _number("ModelConfig", "bootstrap_port", self.bootstrap_port, 1, 65535, integer=True)
        if self.context_length is not None:
            _number("ModelConfig", "context_length", self.context_length, 1, integer=True)
        for name in [self.name, *self.aliases, *self.lora_adapters]:
            if name is not None and (not name or ":" in name):
                raise ConfigError(f"model names, aliases and adapter names must be non-empty and hold no ':', "
                                  f"got {name!r}")
        if self.engine is not None:
            check_lora_engine(self.name, self.lora_adapters, self.engine)
        _admission_limits("ModelConfig", self)
        if self.image_processor is not None:
            from smg.multimodal import FAMILIES

            if self.image_processor not in FAMILIES:
                raise ConfigError(f"unknown image_processor {self.image_processor!r}; known: {', '.join(FAMILIES)}")


class GatewayConfig(_Record, frozen=True):
    """A whole gateway: its models and the defaults they share, and (for ``smg serve``) the HTTP
    server. The top-level single-model keys (``workers``, ``tokenizer``, ``model``, ``engine``,
    ``policy``, ...) are a shorthand for one entry of ``models``."""

    models: list[ModelConfig] = []
    # single-model shorthand
    workers: list[str] = []
    prefill: list[str] = []
    decode: list[str] = []
    bootstrap_port: int = 8998
    tokenizer: str | None = None
    model: str | None = None
    engine: str | None = None
    policy: str | None = None
    reasoning_parser: str | None = None
    tool_parser: str | None = None
    chat_template: str | None = None
    max_context_length: int | None = None
    lora_adapters: list[str] = []
    image_processor: str | None = None
    # shared by every model
    cache: CacheConfig = CacheConfig()
    pool: PoolConfig = msgspec.field(default_factory=PoolConfig)  # (built when used: its check imports smg.policies)
    trust_request_chat_template: bool = False
    # outbound fetches (image URLs): hosts or CIDR networks opened despite resolving to private,
    # loopback or link-local addresses
    url_allow_list: list[str] = []
    media: MediaConfig = MediaConfig()
    storage: StorageConfig = StorageConfig()
    # MCP servers requests may name by label, and the tool loop's limits
    mcp_servers: list[McpServerConfig] = []
    mcp: McpConfig = McpConfig()
    discovery: list[DiscoveryConfig] = []  # engine workers found while serving (smg.discovery)
    # API keys (smg serve --api-key / --api-keys-file); none: the APIs are open
    api_keys: list[ApiKeyConfig] = []
    admin_key: str | None = None  # opens the admin API (/admin/...; smg serve --admin-key); none: it is off
    jwt_issuers: list[JwtIssuerConfig] = []  # JWT bearer tokens taken beside the API keys
    access_log: bool = False
    tracing: bool = False  # OpenTelemetry spans per request (smg.tracing; the [tracing] extra)  # a JSON line per request on the smg.access logger (smg serve --access-log)
    # admission control of generation requests (smg.admission): at most this many at once, this
    # many more waiting at most this long (then a 429); None: no limit
    max_concurrent_requests: int | None = None
    max_queue_size: int = 128
    queue_timeout: float = 30.0
    # a request's own chat template: time and output-size bounds of its rendering
    template_timeout: float = 5.0
    template_max_chars: int = 16 * MiB
    # the HTTP server (smg serve)
    host: str = "127.0.0.1"
    port: int = 8000
    server: str = "smg"
    keep_alive: float = 75.0
    request_head_timeout: float = 30.0
    request_body_timeout: float = 60.0
    response_write_timeout: float = 60.0  # a client that reads none of its stream this long is closed
    max_connections: int = 10_000

    def __post_init__(self) -> None:
        shorthand = (self.workers or self.prefill or self.decode or self.tokenizer or self.model or self.lora_adapters
                     or self.image_processor)
        for entry in self.url_allow_list:
            if not entry or "/" in entry and not _is_network(entry):
                raise ConfigError(f"url_allow_list entries are host names or CIDR networks, got {entry!r}")
        if self.models and shorthand:
            raise ConfigError("give either models or the single-model keys (workers, tokenizer, model, ...), "
                              "not both")
        if self.server not in ("smg", "uvicorn"):
            raise ConfigError(f"server must be 'smg' or 'uvicorn', got {self.server!r}")
        _number("GatewayConfig", "port", self.port, 0, 65535, integer=True)
        _number("GatewayConfig", "max_connections", self.max_connections, 1, integer=True)
        _number("GatewayConfig", "template_max_chars", self.template_max_chars, 1, integer=True)
        for name in ("keep_alive", "request_head_timeout", "request_body_timeout", "response_write_timeout",
                     "template_timeout"):
            _number("GatewayConfig", name, getattr(self, name), 0.001)
        _admission_limits("GatewayConfig", self)
        if self.admin_key is not None and (not self.admin_key or any(c.isspace() for c in self.admin_key)
                                           or self.admin_key in {k.key for k in self.api_keys}):
            raise ConfigError("admin_key must be a non-empty key without spaces, and not an API key")
        for what, values in (("names", [k.name for k in self.api_keys]), ("keys", [k.key for k in self.api_keys])):
            if len(set(values)) != len(values):
                raise ConfigError(f"API key {what} must be unique")
        labels = [server.label for server in self.mcp_servers]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"mcp server labels must be unique, got {labels}")
        names: set[str] = set()
        for model in self.model_configs():
            for name in filter(None, [model.name, *model.aliases]):
                if name in names:
                    raise ConfigError(f"model name or alias {name!r} is given twice")
                names.add(name)

    def model_configs(self) -> list[ModelConfig]:
        """The models, with the single-model shorthand as one entry."""
        if self.models:
            return list(self.models)
        return [ModelConfig(name=self.model, workers=list(self.workers), prefill=list(self.prefill),
                            decode=list(self.decode), bootstrap_port=self.bootstrap_port, engine=self.engine,
                            tokenizer=self.tokenizer, chat_template=self.chat_template,
                            reasoning_parser=self.reasoning_parser, tool_parser=self.tool_parser,
                            policy=self.policy, context_length=self.max_context_length,
                            lora_adapters=list(self.lora_adapters), image_processor=self.image_processor)]

    @classmethod
    def load(cls, source: "GatewayConfig | Mapping[str, Any] | str | Path") -> "GatewayConfig":
        """A config from a record, a mapping, or a TOML (``.toml``) or JSON file."""
        if isinstance(source, GatewayConfig):
            return source
        if not isinstance(source, Mapping):
            source = read_config_file(source, "gateway config")
        return convert(source, cls, "gateway config")


def read_config_file(path: "str | Path", what: str) -> Any:
    """A TOML (``.toml``) or JSON file's value; a :class:`ConfigError` naming ``what`` otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


def convert(values: Any, kind: type, what: str):
    """``values`` as a record of ``kind``; a :class:`ConfigError` naming the bad key otherwise."""
    try:
        return msgspec.convert(values, kind)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid {what}: {exc}") from None


def replace(record, **changes):
    """A copy of a frozen record with ``changes`` (validated again)."""
    return msgspec.structs.replace(record, **changes)
