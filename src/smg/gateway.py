"""``Gateway``: the facade applications embed.

One object serves one or many models (:mod:`smg.models`: each with its pool, tokenizer + L0/L1
cache, chat template and parsers) and runs each request through the pipeline's stages
(:mod:`smg.pipeline`) for the API that asked (:mod:`smg.api`)::

    request -> model registry -> prepare (chat template -> encode, cached) -> pool (gRPC) -> token ids
    token ids -> choice (detokenize -> stop rules -> reasoning parser -> tool parser) -> the API's chunks

Example:
    >>> async with Gateway(workers=["grpc://127.0.0.1:50051"], tokenizer="path/to/model", model="m") as gw:  # doctest: +SKIP
    ...     reply = await gw.chat({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    ...     async for chunk in gw.chat_stream({..., "stream": True}):
    ...         print(chunk.choices[0].delta.content)
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Sequence

import msgspec

from smg.api import anthropic, openai_chat, openai_completions, responses
from smg.config import (CacheConfig, GatewayConfig, McpServerConfig, ModelConfig, PoolConfig, StorageConfig,
                        convert)
from smg.engines import GenerateRequest, SamplingOptions
from smg.engines.base import EngineOutput
from smg.discovery import Discovery
from smg.engines.disaggregated import DisaggregatedPool
from smg.engines.pool import WorkerPool
from smg.policies.siblings import SiblingRoutes
from smg.errors import InvalidRequest, SmgError
from smg.mcp import McpServers
from smg.metrics import PUBLISH_INTERVAL, Metrics
from smg.models import ModelRegistry, ServedModel
from smg.multimodal.media import MediaPolicy
from smg.pipeline.plain import Sink
from smg.storage import Storage, open_storage
from smg.protocols import openai as oa
from smg.tokenizer import Tokenizer

log = logging.getLogger("smg.gateway")

class Gateway:
    """Models (tokenizer + chat template + worker pool + parsers each) behind OpenAI-shaped calls.

    One model, the short way: the arguments below. Many models: ``Gateway(models=[ModelConfig(...)
    or a dict, ...])`` or :meth:`from_config`; a request's ``model`` picks one by name, alias or
    ``name:adapter`` (a LoRA adapter), and an empty ``model`` the first.

    Args:
        workers: engine worker URLs (``grpc://host:port``).
        tokenizer: a tokenizer directory/file, a bundled name or a :class:`Tokenizer`; None takes
            the path the engine reports (or downloads the engine's tokenizer over ``GetTokenizer``).
        model: the served model name (default: what the engine reports); it also picks the
            reasoning and tool parsers unless ``reasoning_parser``/``tool_parser`` name them.
        engine: the engine protocol (``sglang``, ``vllm``, ``trtllm``); default ``pool_config``'s.
        policy: worker selection, a name in ``smg.policies.POLICIES`` (default ``cache_aware``);
            default ``pool_config``'s.
        chat_template: the template for every request (a template, a file path, a bundled name or
            a named template of the tokenizer's config); default the tokenizer's own.
        lora_adapters: LoRA adapters the workers serve (requests name them ``model:adapter``).
        trust_request_chat_template: let requests bring their own ``chat_template`` (a template
            or a named one, never a file path), rendered off the event loop within
            ``config.template_timeout`` seconds and ``config.template_max_chars``. Off by default,
            as in vLLM: a template is code run on the gateway.
        storage: where stored responses and conversations live (``smg.storage``): ``memory``
            (the default here), ``sqlite:///file`` or ``postgresql://...``.
        mcp_servers: MCP servers requests may name by ``server_label`` (``McpServerConfig`` or
            dicts: ``label`` and ``url``, or ``command`` + ``args`` for stdio).
        url_allow_list: hosts or CIDR networks the gateway may connect to although they are
            private, loopback or link-local (image URLs, a request's MCP ``server_url``).
    """

    def __init__(self, workers: Sequence[str] = (), tokenizer: str | Path | Tokenizer | None = None,
                 model: str | None = None, *, engine: str | None = None, policy: str | None = None,
                 reasoning_parser: str | None = None, tool_parser: str | None = None,
                 chat_template: str | None = None, cache: CacheConfig | None = None,
                 pool_config: PoolConfig | None = None, max_context_length: int | None = None,
                 trust_request_chat_template: bool = False, lora_adapters: Sequence[str] = (),
                 models: Sequence[ModelConfig | Mapping[str, Any]] | None = None,
                 storage: str | StorageConfig | None = None,
                 mcp_servers: Sequence[McpServerConfig | Mapping[str, Any]] | None = None,
                 url_allow_list: Sequence[str] = (), config: GatewayConfig | None = None) -> None:
        own_tokenizer = tokenizer if isinstance(tokenizer, Tokenizer) else None
        if config is None:
            values: dict[str, Any] = {
                "workers": list(workers), "tokenizer": None if tokenizer is None or own_tokenizer else str(tokenizer),
                "model": model, "engine": engine, "policy": policy, "reasoning_parser": reasoning_parser,
                "tool_parser": tool_parser, "chat_template": chat_template, "max_context_length": max_context_length,
                "trust_request_chat_template": trust_request_chat_template, "lora_adapters": list(lora_adapters),
                "models": [m if isinstance(m, Mapping) else msgspec.to_builtins(m) for m in models or ()],
                "cache": cache, "pool": pool_config,
                "url_allow_list": list(url_allow_list),
                "mcp_servers": [m if isinstance(m, Mapping) else msgspec.to_builtins(m) for m in mcp_servers or ()],
                "storage": StorageConfig(url=storage) if isinstance(storage, str) else storage}  # (records given as objects are taken as they are)
            config = convert({k: v for k, v in values.items() if v not in (None, [])}, GatewayConfig,
                             "gateway arguments")
        self.config = config
        # what bounds a request's own chat template (None: requests may not bring one)
        self.template_limits = ((config.template_timeout, config.template_max_chars)
                                if config.trust_request_chat_template else None)
        self.metrics = Metrics()
        self._describe_metrics()
        self.metrics.gauge_source(self._gauges)  # (once: they read the models served at render time)
        self.models = ModelRegistry()
        self._pending = [ServedModel(m, config.pool, config.cache, own_tokenizer if i == 0 else None,
                                     *self._media_policy())
                         for i, m in enumerate(config.model_configs())]
        self.storage: Storage = open_storage(config.storage)
        self.background = responses.BackgroundRuns()
        self.mcp = McpServers(config.mcp_servers, config.url_allow_list, config.mcp)
        self._started = False
        self._publishing: asyncio.Task | None = None  # (multiprocess metrics: see smg.metrics)
        self._siblings = SiblingRoutes.for_server()  # (None in one process)
        self._discovery = Discovery.from_config(self) if config.discovery else None
        self._created = int(time.time())

    @classmethod
    def from_config(cls, config: GatewayConfig | Mapping[str, Any] | str | Path) -> "Gateway":
        """Build from a :class:`GatewayConfig`, a dict, or a TOML/JSON file with its keys."""
        return cls(config=GatewayConfig.load(config))

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> "Gateway":
        """Connect every model's workers and load its tokenizer (the models concurrently). A
        Gateway starts once; one that failed to start, or was closed, is replaced by a new one."""
        if self._started:
            return self
        if not self._pending:
            raise SmgError("this Gateway was closed (or failed to start): make a new one")
        pending, self._pending = self._pending, []
        results = await asyncio.gather(self.storage.start(), *(m.start() for m in pending), return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        try:
            if failed is not None:
                raise failed
            for model in pending:  # in the configured order: the first is the default
                self.models.add(model)
                self._share_routes(model)
        except BaseException:
            await asyncio.gather(self.storage.close(), *(m.close() for m in pending), return_exceptions=True)
            raise
        self._started = True
        if self._discovery is not None:
            await self._discovery.start()
        if self._siblings is not None:
            self._siblings.start()
        if self.metrics.multiprocess:
            self._publishing = asyncio.create_task(self._publish_metrics(), name="smg-metrics-publish")
        return self

    async def _publish_metrics(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL)
            self.metrics.publish()

    def _share_routes(self, served: ServedModel) -> None:
        """Worker processes of one server: the model's routes are shared (smg.policies.siblings)."""
        if self._siblings is not None and isinstance(served.pool, WorkerPool):
            self._siblings.attach(served.name, served.pool.policy, served.pool.has_worker)

    async def close(self) -> None:
        if self._discovery is not None:
            await self._discovery.close()
        if self._siblings is not None:
            self._siblings.close()
        if self._publishing is not None:
            self._publishing.cancel()
            self._publishing = None
        await self.background.close()
        await asyncio.gather(self.storage.close(), self.mcp.close(), *(m.close() for m in self.models), return_exceptions=True)
        self._started = False

    async def __aenter__(self) -> "Gateway":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _media_policy(self) -> tuple[MediaPolicy, int, bool]:
        """Where image inputs may come from, how many one request may hold, and whether their
        threads are pinned to CPUs (from the config)."""
        media = self.config.media
        return MediaPolicy(url_allow_list=tuple(self.config.url_allow_list), allowed_dirs=tuple(media.allowed_dirs),
                           fetch_timeout=media.fetch_timeout, max_bytes=media.max_image_bytes,
                           max_pixels=media.max_image_pixels), media.max_images, media.pin_threads

    def require_started(self) -> None:
        if not self._started:
            raise SmgError("the Gateway is not started: use `async with Gateway(...)` or `await gw.start()`")

    # ---- models and workers while serving ---------------------------------------------------------

    async def add_model(self, model: ModelConfig | Mapping[str, Any], tokenizer: Tokenizer | None = None
                        ) -> ServedModel:
        """Serve one more model (its workers are connected and its tokenizer loaded first)."""
        self.require_started()
        config = model if isinstance(model, ModelConfig) else convert(dict(model), ModelConfig, "model config")
        served = ServedModel(config, self.config.pool, self.config.cache, tokenizer, *self._media_policy())
        await served.start()
        try:
            self.models.add(served)
        except SmgError:
            await served.close()
            raise
        self._share_routes(served)
        return served

    async def remove_model(self, name: str) -> None:
        """Stop serving a model: new requests for it are a 404; requests in flight finish first."""
        served = self.models.remove(name)
        if self._siblings is not None:
            self._siblings.detach(served.name)
        await served.pool.drain()
        await served.close()

    async def add_worker(self, model: str, url: str, engine: str | None = None, role: str = "regular") -> None:
        """Add an engine worker to a model's pool (it takes requests once healthy); ``role``:
        prefill or decode for a disaggregated model, else regular."""
        pool = self.models.get(model).pool
        if isinstance(pool, DisaggregatedPool) != (role != "regular"):
            raise InvalidRequest(f"model {model!r} takes {'prefill or decode' if role == 'regular' else 'regular'} "
                                 f"workers, not {role}")
        await (pool.add_worker(url, engine, role) if isinstance(pool, DisaggregatedPool)
               else pool.add_worker(url, engine))

    async def remove_worker(self, model: str, url: str) -> None:
        """Take a worker out of a model's rotation; its requests in flight finish, then it closes."""
        await self.models.get(model).pool.remove_worker(url)

    def list_models(self) -> oa.ModelList:
        return oa.ModelList(data=[card for m in self.models for card in m.cards(self._created)])

    # The one-model shorthand: the default (first) model's parts.
    @property
    def default_model(self) -> ServedModel:
        model = self.models.default or next(iter(self._pending), None)
        if model is None:
            raise SmgError("the gateway serves no model")
        return model

    @property
    def pool(self) -> WorkerPool:
        return self.default_model.pool

    @property
    def tokenizer(self) -> Tokenizer:
        return self.default_model.tokenizer

    @property
    def model(self) -> str | None:
        return self.default_model.name

    # ---- the APIs ---------------------------------------------------------------------------------

    async def chat(self, request: Mapping[str, Any] | oa.ChatCompletionRequest | bytes, *,
                   request_id: str | None = None, routing_key: str | None = None) -> oa.ChatCompletion:
        """OpenAI Chat Completions, non-streaming. ``request_id`` prefixes the engine's request id;
        ``routing_key`` (else the request's ``user``) is what sticky policies route by."""
        return await openai_chat.chat(self, request, request_id, routing_key)

    def chat_stream(self, request: Mapping[str, Any] | oa.ChatCompletionRequest | bytes, *,
                    request_id: str | None = None, routing_key: str | None = None
                    ) -> AsyncIterator[oa.ChatCompletionChunk]:
        """OpenAI Chat Completions, streaming: an async iterator of chunks."""
        return openai_chat.stream(self, request, sse=False, request_id=request_id, routing_key=routing_key)

    def chat_sse(self, request: Mapping[str, Any] | oa.ChatCompletionRequest | bytes, *,
                 sink: Sink | None = None, request_id: str | None = None,
                 routing_key: str | None = None) -> AsyncIterator[bytes]:
        """:meth:`chat_stream` as server-sent events: ``data: {chunk}\\n\\n`` each, ``data: [DONE]``
        last; the bytes an HTTP server writes. A plain stream (one choice, no parsers, no logprobs)
        goes from each engine message to its event in one compiled step (``smg._ext.sse_pump``).

        ``sink`` is for servers: a function that writes events now and returns whether it can take
        more. Given one, a plain stream's events after the first are written to it from the engine
        connection's data path as they arrive (no task woken per token; one call holds the events
        of one read of that connection), and only the others are yielded: a server writes what is
        yielded, in order, and waits for its client to drain before asking for the next."""
        return openai_chat.stream(self, request, sse=True, sink=sink, request_id=request_id, routing_key=routing_key)

    async def complete(self, request: Mapping[str, Any] | oa.CompletionRequest | bytes, *,
                       request_id: str | None = None, routing_key: str | None = None) -> oa.Completion:
        """OpenAI Completions, non-streaming (several prompts run concurrently)."""
        return await openai_completions.complete(self, request, request_id, routing_key)

    def complete_stream(self, request: Mapping[str, Any] | oa.CompletionRequest | bytes, *,
                        request_id: str | None = None, routing_key: str | None = None
                        ) -> AsyncIterator[oa.Completion]:
        """OpenAI Completions, streaming (prompts one after another)."""
        return openai_completions.stream(self, request, sse=False, request_id=request_id, routing_key=routing_key)

    def complete_sse(self, request: Mapping[str, Any] | oa.CompletionRequest | bytes, *,
                     sink: Sink | None = None, request_id: str | None = None,
                     routing_key: str | None = None) -> AsyncIterator[bytes]:
        """:meth:`complete_stream` as server-sent events, as :meth:`chat_sse` (one plain prompt
        without ``echo``: the compiled pump; ``sink`` as there)."""
        return openai_completions.stream(self, request, sse=True, sink=sink, request_id=request_id,
                                         routing_key=routing_key)

    async def responses(self, request: Mapping[str, Any] | bytes, *, request_id: str | None = None,
                        routing_key: str | None = None) -> dict:
        """OpenAI Responses, non-streaming: the response object (stored in :attr:`storage`
        unless ``store`` is false; ``background`` returns it queued)."""
        return await responses.create(self, request, request_id, routing_key)

    def responses_sse(self, request: Mapping[str, Any] | bytes, *, sink: Sink | None = None,
                      request_id: str | None = None, routing_key: str | None = None) -> AsyncIterator[bytes]:
        """OpenAI Responses, streaming: the SSE events (``event: TYPE\ndata: {...}``); a plain
        response (no parsers) through the compiled pump, ``sink`` as for :meth:`chat_sse`."""
        return responses.stream(self, request, request_id, routing_key, sink)

    async def messages(self, request: Mapping[str, Any] | bytes, *, request_id: str | None = None,
                       routing_key: str | None = None) -> dict:
        """Anthropic Messages, non-streaming: the message object."""
        return await anthropic.create(self, request, request_id, routing_key)

    def messages_sse(self, request: Mapping[str, Any] | bytes, *, sink: Sink | None = None,
                     request_id: str | None = None, routing_key: str | None = None) -> AsyncIterator[bytes]:
        """Anthropic Messages, streaming: the SSE events (as :meth:`responses_sse`)."""
        return anthropic.stream(self, request, request_id, routing_key, sink)

    async def generate(self, input_ids: Sequence[int] | None = None, text: str | None = None,
                       sampling: SamplingOptions | Mapping[str, Any] | None = None,
                       stream: bool = True, model: str = "") -> AsyncIterator[EngineOutput]:
        """Token-level access: ids (or text, encoded here) in, the engine's outputs out."""
        self.require_started()
        served, lora = self.models.resolve(model)
        if (input_ids is None) == (text is None):
            raise InvalidRequest("give exactly one of input_ids and text")
        ids = list(input_ids) if input_ids is not None else served.tokenizer.encode(text)
        if not ids:
            raise InvalidRequest("the input is empty")
        if isinstance(sampling, Mapping):
            try:
                sampling = SamplingOptions(**sampling)
            except TypeError as exc:
                raise InvalidRequest(f"invalid sampling options: {exc}") from None
        request = GenerateRequest("gen-" + uuid.uuid4().hex, ids, sampling or SamplingOptions(), stream=stream,
                                  lora_id=lora)
        async with contextlib.aclosing(served.pool.generate(request)) as outputs:
            async for out in outputs:
                yield out

    # ---- metrics ---------------------------------------------------------------------------------

    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("smg_requests_total", "counter", "Requests handled, by route and streaming.")
        m.describe("smg_request_errors_total", "counter", "Requests that ended in an error, by type.")
        m.describe("smg_prompt_tokens_total", "counter", "Prompt tokens sent to engines, by model.")
        m.describe("smg_completion_tokens_total", "counter", "Completion tokens returned to clients.")
        m.describe("smg_time_to_first_token_seconds", "histogram",
                   "Time from dispatch to the first token, by model and worker.")
        m.describe("smg_inter_token_latency_seconds", "histogram",
                   "Mean time between tokens, one per stream, by model and worker.")
        m.describe("smg_tokenizer_cache_hits_total", "counter", "Tokenizer cache hits by level.")
        m.describe("smg_tokenizer_cache_misses_total", "counter", "Tokenizer cache misses by level.")
        m.describe("smg_client_disconnects_total", "counter", "Streams whose client went away (engine aborted).")
        m.describe("smg_queue_wait_seconds", "histogram", "Time a request waited in an admission queue.")
        m.describe("smg_admission_rejected_total", "counter", "Requests refused by admission control (429), by gate "
                   "and reason.")
        # (over worker processes: 1 only while every process has the worker in rotation)
        m.describe("smg_worker_healthy", "gauge", "1 if the worker is in rotation.", multiprocess_mode="livemin")
        m.describe("smg_worker_in_flight", "gauge", "Requests in flight on the worker.")
        m.describe("smg_worker_consecutive_failures", "gauge", "Failures in a row (the worker's circuit: open, "
                   "out of rotation, while smg_worker_healthy is 0; probed again after 1 s doubling to 30 s).",
                   multiprocess_mode="livemax")
        m.describe("smg_retries_total", "counter", "Requests tried again on another worker (nothing sent yet).")
        m.describe("smg_responses_total", "counter", "Responses by HTTP status (a stream counts at its start).")
        m.describe("smg_e2e_latency_seconds", "histogram", "From the engine dispatch to a stream's end, by model and worker.")

    def _gauges(self):
        for served in self.models:
            model = {"model": served.name}
            info = served.tokenizer.cache_info()
            for level, hits, misses in (("l0", info.l0_hits, info.l0_misses), ("l1", info.l1_hits, info.l1_misses)):
                yield "smg_tokenizer_cache_hits_total", {"level": level, **model}, hits
                yield "smg_tokenizer_cache_misses_total", {"level": level, **model}, misses
            for worker in served.pool.workers:
                yield "smg_worker_healthy", {"worker": worker.url, **model}, float(worker.healthy)
                yield "smg_worker_in_flight", {"worker": worker.url, **model}, float(worker.in_flight)
                yield "smg_worker_consecutive_failures", {"worker": worker.url, **model}, float(worker.failures)
            yield "smg_retries_total", model, float(served.pool.retries)
