"""``Gateway``: the facade applications embed.

One object owns the tokenizer (with its L0/L1 cache), the chat template, the worker pool and the
parsers, and runs the pipeline per request::

    request -> validate -> chat template -> encode (cached) -> pool (gRPC) -> token ids
    token ids -> detokenize -> stop rules -> reasoning parser -> tool parser -> chunks

Example:
    >>> async with Gateway(workers=["grpc://127.0.0.1:50051"], tokenizer="path/to/model") as gw:  # doctest: +SKIP
    ...     reply = await gw.chat({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    ...     async for chunk in gw.chat_stream({..., "stream": True}):
    ...         print(chunk.choices[0].delta.content)
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

from smg import _ext
from smg.config import CacheConfig
from smg.engines import GenerateRequest, SamplingOptions
from smg.engines.base import EngineOutput, ModelInfo
from smg.engines.pool import PoolConfig, WorkerPool
from smg.errors import InvalidRequest, SmgError, TokenizerLoadError
from smg.metrics import Metrics
from smg.parsers import ReasoningParser, ToolParser, parser_for_model
from smg.parsers.reasoning import CONTENT, REASONING
from smg.protocols import openai as oa
from smg.stop import StopParams
from smg.tokenizer import Tokenizer
from smg.tokenizer.tokenizer import RESERVED_TEMPLATE_VARIABLES

log = logging.getLogger("smg.gateway")

_NO_CALLS: tuple = ()  # the calls of a piece without tool calls (shared: never appended to)
PlainPump = _ext.load("sse_pump").PlainPump


@dataclass
class GatewayConfig:
    """Everything a Gateway is built from (``Gateway.from_config`` takes it as a dict or file)."""

    workers: list[str] = field(default_factory=list)
    tokenizer: str | None = None
    model: str | None = None
    engine: str = "sglang"
    policy: str = "round_robin"
    reasoning_parser: str | None = None
    tool_parser: str | None = None
    chat_template: str | None = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    max_context_length: int | None = None
    trust_request_chat_template: bool = False


@dataclass
class _Prepared:
    """A validated request turned into engine terms, plus what each choice's pipeline needs."""

    request_id: str
    model: str
    created: int
    prompt_ids: list[int]
    sampling: SamplingOptions
    stop: StopParams
    return_logprob: bool = False
    top_logprobs: int = 0
    reasoning: str | None = None
    in_reasoning: bool | None = None
    tool_parser: str | None = None
    tools: list | None = None
    forced_tool: str | None = None  # tool_choice naming one function: the output is its arguments
    required_tools: bool = False  # tool_choice "required": the output is a JSON array of calls
    prompt_text: str = ""

    @property
    def unparsed(self) -> bool:
        """No reasoning or tool parsing: all of the output is content."""
        return self.reasoning is None and self.tool_parser is None and self.forced_tool is None and not self.required_tools

    @property
    def plain(self) -> bool:
        """One choice without parsers or logprobs: its events are the compiled pump's."""
        return self.sampling.n == 1 and not self.return_logprob and self.unparsed


class _Choice:
    """One sequence's streaming pipeline: detokenizer -> stop rules -> reasoning -> tools."""

    __slots__ = ("index", "detok", "stop", "reasoning", "tools", "forced", "required", "finished", "finish_reason",
                 "matched", "tokens", "role_sent", "content", "reasoning_text", "calls", "logprobs", "forced_open",
                 "required_buf", "plain")

    def __init__(self, index: int, gw: "Gateway", p: _Prepared) -> None:
        self.index = index
        self.detok = gw.tokenizer.decode_stream(skip_special_tokens=p.sampling.skip_special_tokens,
                                                prompt_ids=p.prompt_ids[-8:])
        self.stop = p.stop.checker(gw.eos_token_ids)
        self.reasoning = ReasoningParser.create(p.reasoning, in_reasoning=p.in_reasoning) if p.reasoning else None
        self.tools = ToolParser.create(p.tool_parser, p.tools) if p.tool_parser else None
        self.forced = p.forced_tool
        self.required = p.required_tools
        self.finished = False
        self.finish_reason: str | None = None
        self.matched: int | str | None = None
        self.tokens = 0
        self.role_sent = False
        self.content: list[str] = []
        self.reasoning_text: list[str] = []
        self.calls: dict[int, list] = {}  # index -> [id, name, arguments]
        self.logprobs: list | None = [] if p.return_logprob else None
        self.forced_open = False
        self.required_buf: list[str] = []
        self.plain = p.unparsed

    def _route(self, text: str, final: bool) -> tuple[str, str, list[oa.ToolCallChunk]]:
        """Reasoning / content / call pieces for released text (``final``: flush the parsers)."""
        if self.plain:  # no parser: all of it is content
            return "", text, _NO_CALLS
        reasoning, content = "", text
        if self.reasoning is not None:
            r = self.reasoning.feed(text) if text else None
            last = self.reasoning.finish() if final else None
            reasoning = (r.reasoning if r else "") + (last.reasoning if last else "")
            content = (r.content if r else "") + (last.content if last else "")
        calls: list[oa.ToolCallChunk] = []
        if self.forced is not None:
            if content and not self.forced_open:
                self.forced_open = True
                calls.append(self._call_piece(0, "call_" + uuid.uuid4().hex[:24], self.forced, content))
            elif content:
                calls.append(self._call_piece(0, None, None, content))
            content = ""
        elif self.required:
            self.required_buf.append(content)
            content = ""
            if final:
                content, calls = self._required_calls("".join(self.required_buf))
        elif self.tools is not None:
            t = self.tools.feed(content) if content else None
            last = self.tools.finish() if final else None
            content = (t.content if t else "") + (last.content if last else "")
            for d in (t.calls if t else ()) + (last.calls if last else ()):
                calls.append(self._call_piece(d.index, d.id, d.name, d.arguments))
        return reasoning, content, calls

    def _call_piece(self, index: int, call_id, name, arguments: str) -> oa.ToolCallChunk:
        entry = self.calls.setdefault(index, [call_id, name, ""])
        entry[2] += arguments
        return oa.ToolCallChunk(index=index, id=call_id, type="function" if call_id else None,
                                function=oa.FunctionCall(name=name, arguments=arguments))

    def _required_calls(self, text: str) -> tuple[str, list[oa.ToolCallChunk]]:
        """The calls of a ``tool_choice: required`` output (a JSON array), or the text as content
        when it is not one (an engine that ignored the constraint)."""
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if not isinstance(items, list):
            return text, []
        out = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                args = item.get("parameters", item.get("arguments", {}))
                out.append(self._call_piece(len(self.calls), "call_" + uuid.uuid4().hex[:24], item["name"],
                                            json.dumps(args, ensure_ascii=False)))
        return "", out

    def feed(self, out: EngineOutput, gw: "Gateway") -> tuple[str, str, list] | None:
        """Run one engine message through the pipeline; None when it released nothing."""
        released = ""  # one token per message is the usual case: no list to join
        logprobs = out.logprobs if self.logprobs is not None else None
        for position, token_id in enumerate(out.token_ids):
            self.tokens += 1
            delta = self.stop.step(token_id, self.detok.step(token_id))
            released += delta.text
            if logprobs is not None and position < len(logprobs):
                self.logprobs.append(gw._logprob_entry(logprobs[position]))
            if delta.finished:
                self.finished, self.finish_reason, self.matched = True, delta.finish_reason, delta.matched_stop
                return self._emit(released, final=True)
        return self._emit(released, final=False) if released else None

    def end(self, out: EngineOutput) -> tuple[str, str, list]:
        """The engine finished this sequence: flush held text and parsers."""
        delta = self.stop.finish(self.detok.finish())
        self.finished = True
        if delta.finished:
            self.finish_reason, self.matched = delta.finish_reason, delta.matched_stop
        else:
            self.finish_reason = out.finish_reason if out.finish_reason in ("stop", "length", "abort") else "stop"
            self.matched = out.matched_stop
        return self._emit(delta.text, final=True)

    def _emit(self, text: str, final: bool) -> tuple[str, str, list]:
        reasoning, content, calls = self._route(text, final)
        if reasoning:
            self.reasoning_text.append(reasoning)
        if content:
            self.content.append(content)
        return reasoning, content, calls

    @property
    def openai_finish_reason(self) -> str | None:
        if self.finish_reason == "stop" and self.calls:
            return "tool_calls"
        return self.finish_reason


class Gateway:
    """Tokenizer + chat template + worker pool + parsers behind OpenAI-shaped calls.

    Args:
        workers: engine worker URLs (``grpc://host:port``).
        tokenizer: a tokenizer directory/file; None takes the path the engine reports (or, if that
            path is not on this machine, downloads the engine's tokenizer over ``GetTokenizer``).
        model: the served model name (default: what the engine reports); it also picks the
            reasoning and tool parsers unless ``reasoning_parser``/``tool_parser`` name them.
        engine: the engine protocol (``sglang``, ``vllm``, ``trtllm``).
        policy: worker selection (``round_robin``, ``least_load``, ``random``, ``power_of_two``).
        chat_template: the template for every request (a template, a file path or a named
            template of the tokenizer's config); default the tokenizer's own.
        trust_request_chat_template: let requests bring their own ``chat_template`` (a template
            or a named one, never a file path). Off by default, as in vLLM: a template is code run
            on the gateway, and a request's could read files or spend its memory.
    """

    def __init__(self, workers: Sequence[str] = (), tokenizer: str | Path | Tokenizer | None = None,
                 model: str | None = None, *, engine: str = "sglang", policy: str = "round_robin",
                 reasoning_parser: str | None = None, tool_parser: str | None = None,
                 chat_template: str | None = None, cache: CacheConfig | None = None,
                 pool_config: PoolConfig | None = None, max_context_length: int | None = None,
                 trust_request_chat_template: bool = False) -> None:
        # A copy: the caller's PoolConfig is not changed behind its back.
        pool_config = dataclasses.replace(pool_config or PoolConfig(), policy=policy, default_engine=engine)
        self.pool = WorkerPool(workers, pool_config)
        self._tokenizer_spec = tokenizer
        self._cache = cache
        self.tokenizer: Tokenizer = tokenizer if isinstance(tokenizer, Tokenizer) else None  # type: ignore
        self.model = model
        self._parser_override = (reasoning_parser, tool_parser)
        self.reasoning_parser: str | None = None
        self.tool_parser: str | None = None
        self.chat_template = chat_template
        self.trust_request_chat_template = trust_request_chat_template
        self.max_context_length = max_context_length
        self.eos_token_ids: tuple[int, ...] = ()
        self.metrics = Metrics()
        self._describe_metrics()
        self._started = False
        self._created = int(time.time())
        self._tmp: tempfile.TemporaryDirectory | None = None

    @classmethod
    def from_config(cls, config: GatewayConfig | Mapping[str, Any] | str | Path) -> "Gateway":
        """Build from a :class:`GatewayConfig`, or a dict or JSON file with its keys."""
        if isinstance(config, GatewayConfig):
            config = dataclasses.asdict(config)
        elif not isinstance(config, Mapping):
            try:
                config = json.loads(Path(config).read_text())
            except (OSError, ValueError) as exc:
                raise InvalidRequest(f"cannot read gateway config {config}: {exc}") from exc
        values = dict(config)
        _check_keys(GatewayConfig, "gateway", values)
        cache = _section(CacheConfig, "cache", values.pop("cache", {}))
        pool = _section(PoolConfig, "pool", values.pop("pool", {}))
        return cls(values.pop("workers", []), values.pop("tokenizer", None), values.pop("model", None),
                   cache=cache, pool_config=pool, **values)

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> "Gateway":
        if self._started:
            return self
        await self.pool.start()
        info = self.pool.model_info() or ModelInfo()
        if self.tokenizer is None:
            self.tokenizer = await self._load_tokenizer(info)
        await asyncio.to_thread(self.tokenizer.warm_up, self.chat_template)  # not on the first request's time
        self.model = self.model or info.model_id or "default"
        self.max_context_length = self.max_context_length or info.max_context_length or None
        self.eos_token_ids = tuple(dict.fromkeys([*self.tokenizer.eos_token_ids, *info.eos_token_ids]))
        self.reasoning_parser, self.tool_parser = parser_for_model(self.model, *self._parser_override)
        self.metrics.gauge_source(self._gauges)
        self._started = True
        log.info("gateway for %s: %d worker(s), reasoning=%s tools=%s", self.model, len(self.pool.workers),
                 self.reasoning_parser, self.tool_parser)
        return self

    async def close(self) -> None:
        await self.pool.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._started = False

    async def __aenter__(self) -> "Gateway":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _load_tokenizer(self, info: ModelInfo) -> Tokenizer:
        spec = self._tokenizer_spec
        if spec is not None:
            return Tokenizer.load(spec, self._cache)
        if info.tokenizer_path and Path(info.tokenizer_path).exists():
            return Tokenizer.load(info.tokenizer_path, self._cache)
        for worker in self.pool.healthy_workers():
            stub = getattr(worker.adapter, "stub", None)
            if stub is None or not hasattr(stub, "GetTokenizer"):
                continue
            from smg_grpc_proto.generated import common_pb2

            data = b"".join([chunk.data async for chunk in stub.GetTokenizer(common_pb2.GetTokenizerRequest(),
                                                                               timeout=30)])
            self._tmp = tempfile.TemporaryDirectory(prefix="smg-tokenizer-")
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                archive.extractall(self._tmp.name)
            return Tokenizer.from_dir(self._tmp.name, self._cache)
        raise TokenizerLoadError("no tokenizer: pass tokenizer=, or use an engine that reports one")

    def _require_started(self) -> None:
        if not self._started:
            raise SmgError("the Gateway is not started: use `async with Gateway(...)` or `await gw.start()`")

    # ---- request preparation ---------------------------------------------------------------------

    def _sampling(self, r, prompt_len: int, constraint) -> tuple[SamplingOptions, StopParams]:
        max_tokens = getattr(r, "max_completion_tokens", None) or r.max_tokens
        if self.max_context_length:
            room = self.max_context_length - prompt_len
            if room < 1:
                raise InvalidRequest(f"the prompt has {prompt_len} tokens; the model's context is "
                                     f"{self.max_context_length}")
            if max_tokens is not None and max_tokens > room:
                raise InvalidRequest(f"max_tokens {max_tokens} + prompt {prompt_len} tokens exceed the model's "
                                     f"context of {self.max_context_length}")
            max_tokens = max_tokens or room
        if max_tokens is not None and r.min_tokens > max_tokens:
            raise InvalidRequest("min_tokens must not exceed max_tokens")
        bias = None
        if r.logit_bias:
            try:
                bias = {int(k): float(v) for k, v in r.logit_bias.items()}
            except ValueError:
                raise InvalidRequest("logit_bias keys must be token ids") from None
        sampling = SamplingOptions(
            temperature=1.0 if r.temperature is None else r.temperature, top_p=1.0 if r.top_p is None else r.top_p,
            top_k=-1 if r.top_k is None else r.top_k, min_p=r.min_p or 0.0,
            frequency_penalty=r.frequency_penalty or 0.0, presence_penalty=r.presence_penalty or 0.0,
            repetition_penalty=1.0 if r.repetition_penalty is None else r.repetition_penalty,
            max_new_tokens=max_tokens, min_new_tokens=r.min_tokens, stop_token_ids=tuple(r.stop_token_ids or ()),
            ignore_eos=r.ignore_eos, skip_special_tokens=r.skip_special_tokens,
            spaces_between_special_tokens=r.spaces_between_special_tokens, n=r.n, seed=r.seed, logit_bias=bias,
            constraint=constraint)
        stop = StopParams(stop=r.stop or (), stop_token_ids=tuple(r.stop_token_ids or ()), ignore_eos=r.ignore_eos,
                          min_tokens=r.min_tokens,
                          include_stop_str_in_output=r.include_stop_str_in_output or r.no_stop_trim)
        return sampling, stop

    @staticmethod
    def _format_constraint(r) -> tuple[str, str] | None:
        fmt = r.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return ("json_object", "")
        return ("json_schema", json.dumps(fmt.json_schema.schema))

    async def _encode(self, text: str) -> list[int]:
        """Encode off the event loop when much of it is not cached: the encoder releases the GIL
        on long texts, so the loop keeps streaming other requests (and a second core does the encode)."""
        # the hand-off costs GIL waits that a short encode or a cached prefix does not repay
        limit = self.tokenizer.offload_chars
        if len(text) < limit or self.tokenizer.uncached_chars(text) < limit:
            return self.tokenizer.encode(text)
        return await asyncio.to_thread(self.tokenizer.encode, text)

    async def _prepare_chat(self, r: oa.ChatCompletionRequest) -> _Prepared:
        tools = [oa.to_dict(t) for t in r.tools] if r.tools else None
        choice = r.tool_choice if r.tool_choice is not None else ("auto" if tools else "none")
        kwargs = dict(r.chat_template_kwargs or {})
        reserved = RESERVED_TEMPLATE_VARIABLES.intersection(kwargs)
        if reserved:
            raise InvalidRequest(f"chat_template_kwargs cannot set {sorted(reserved)}: the request's own fields")
        if r.reasoning_effort is not None:
            kwargs.setdefault("reasoning_effort", r.reasoning_effort)
        own_template = r.chat_template is not None
        if own_template and not self.trust_request_chat_template:
            raise InvalidRequest("chat_template in a request is off: start the gateway with "
                                 "trust_request_chat_template=True (smg serve --trust-request-chat-template)")
        messages = [_template_message(m) for m in r.messages]
        prompt = self.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=r.add_generation_prompt,
            chat_template=r.chat_template if own_template else self.chat_template,
            allow_template_file=not own_template, **kwargs)
        prompt_ids = await self._encode(prompt)
        constraint = self._format_constraint(r)
        forced = None
        required = False
        tool_parser = None
        if tools and choice == "auto":
            if self.tool_parser is None:
                raise InvalidRequest(f"tools with tool_choice 'auto' need a tool parser; none is configured for "
                                     f"model {self.model!r} (start the gateway with tool_parser=...)")
            tool_parser = self.tool_parser
        elif isinstance(choice, dict):
            forced = choice["function"]["name"]
            schema = next(t["function"].get("parameters") for t in tools if t["function"]["name"] == forced)
            constraint = ("json_schema", json.dumps(schema or {"type": "object"}))
        elif choice == "required":
            required = True
            constraint = ("json_schema", json.dumps(_required_schema(tools)))
        sampling, stop = self._sampling(r, len(prompt_ids), constraint)
        reasoning = self.reasoning_parser if r.separate_reasoning else None
        return _Prepared(
            request_id="chatcmpl-" + uuid.uuid4().hex, model=r.model or self.model, created=int(time.time()),
            prompt_ids=prompt_ids, sampling=sampling, stop=stop, return_logprob=r.logprobs,
            top_logprobs=r.top_logprobs or 0, reasoning=reasoning,
            in_reasoning=_prompt_opens_reasoning(prompt, reasoning), tool_parser=tool_parser, tools=tools,
            forced_tool=forced, required_tools=required, prompt_text=prompt)

    # ---- running ----------------------------------------------------------------------------------

    async def _run(self, p: _Prepared) -> AsyncIterator[tuple[_Choice, EngineOutput, tuple | None]]:
        """Drive the engine stream through each choice's pipeline; yields (choice, output, piece)."""
        choices = [_Choice(i, self, p) for i in range(p.sampling.n)]
        started = time.perf_counter()
        first, count = None, 0
        async with contextlib.aclosing(self.pool.generate(self._engine_request(p))) as stream:
            async for out in stream:
                if out.index >= len(choices):
                    continue
                choice = choices[out.index]
                if choice.finished:
                    continue
                if out.token_ids:
                    if first is None:
                        first = time.perf_counter()
                        self.metrics.observe("smg_time_to_first_token_seconds", first - started)
                    elif not out.finished:
                        count += len(out.token_ids)
                if out.finished:  # we always stream from the engine: its ids were streamed already
                    piece = choice.end(out)
                else:
                    piece = choice.feed(out, self) if out.token_ids else None
                yield choice, out, piece
                if choice.finished and all(c.finished for c in choices):
                    break  # stop strings may end choices before the engine does: close (aborts it)
        for choice in choices:
            if not choice.finished:  # the stream ended without a complete for this sequence
                ended = EngineOutput(choice.index, [], finished=True, finish_reason="abort")
                yield choice, ended, choice.end(ended)
        self._record(p, started, first, count, sum(c.tokens for c in choices))

    @staticmethod
    def _engine_request(p: _Prepared) -> GenerateRequest:
        return GenerateRequest(p.request_id, p.prompt_ids, p.sampling, stream=True, return_logprob=p.return_logprob,
                               top_logprobs=p.top_logprobs, text=p.prompt_text[:200])

    def _record(self, p: _Prepared, started: float, first: float | None, count: int, tokens: int) -> None:
        """A finished stream's metrics (every route runs through here, streamed or not)."""
        if first is not None and count:  # mean inter-token latency of the stream, one observation
            self.metrics.observe("smg_inter_token_latency_seconds", (time.perf_counter() - first) / count)
        self.metrics.inc("smg_prompt_tokens_total", len(p.prompt_ids))
        self.metrics.inc("smg_completion_tokens_total", tokens)

    def _logprob_entry(self, lp) -> oa.TokenLogprobOut:
        def token(token_id: int) -> tuple[str, list[int]]:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            return text, list(text.encode("utf-8"))

        text, raw = token(lp.token_id)
        tops = []
        for token_id, value in lp.top:
            t, b = token(token_id)
            tops.append(oa.TopLogprob(token=t, logprob=value, bytes=b))
        return oa.TokenLogprobOut(token=text, logprob=lp.logprob, bytes=raw, top_logprobs=tops)

    @staticmethod
    def _usage(prompt: int, completion: int, cached: int) -> oa.Usage:
        return oa.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                        prompt_tokens_details=oa.PromptTokensDetails(cached_tokens=cached))

    async def chat(self, request: Mapping[str, Any] | oa.ChatCompletionRequest | bytes) -> oa.ChatCompletion:
        """OpenAI Chat Completions, non-streaming."""
        self._require_started()
        r = oa.decode_request(request, oa.ChatCompletionRequest)
        p = await self._prepare_chat(r)
        cached = 0
        choices: dict[int, _Choice] = {}
        async for choice, out, _ in self._run(p):
            choices[choice.index] = choice
            cached = max(cached, out.cached_tokens)
        result = []
        for index in sorted(choices):
            c = choices[index]
            calls = [oa.ToolCallOut(id=v[0], function=oa.FunctionCall(name=v[1], arguments=v[2]))
                     for _, v in sorted(c.calls.items())] or None
            message = oa.ChatMessageOut(role="assistant", content="".join(c.content) if (c.content or not calls) else None,
                                        reasoning_content="".join(c.reasoning_text) or None, tool_calls=calls)
            result.append(oa.ChatChoice(index=index, message=message, finish_reason=c.openai_finish_reason,
                                        logprobs=oa.ChoiceLogprobs(content=c.logprobs) if c.logprobs is not None
                                        else None, matched_stop=c.matched))
        usage = self._usage(len(p.prompt_ids), sum(c.tokens for c in choices.values()), cached)
        self.metrics.inc("smg_requests_total", route="chat", stream="false")
        return oa.ChatCompletion(id=p.request_id, created=p.created, model=p.model, choices=result, usage=usage)

    def chat_stream(self, request: Mapping[str, Any] | oa.ChatCompletionRequest | bytes
                    ) -> AsyncIterator[oa.ChatCompletionChunk]:
        """OpenAI Chat Completions, streaming: an async iterator of chunks."""
        return self._stream(request, chat=True, sse=False)

    def chat_sse(self, request: Mapping[str, Any] | oa.ChatCompletionRequest | bytes, *,
                 sink: Callable[[bytes], bool] | None = None) -> AsyncIterator[bytes]:
        """:meth:`chat_stream` as server-sent events: ``data: {chunk}\\n\\n`` each, ``data: [DONE]``
        last; the bytes an HTTP server writes. A plain stream (one choice, no parsers, no logprobs)
        goes from each engine message to its event in one compiled step (``smg._ext.sse_pump``).

        ``sink`` is for servers: a function that writes events now and returns whether it can take
        more. Given one, a plain stream's events after the first are written to it from the engine
        connection's data path as they arrive (no task woken per token; one call holds the events
        of one read of that connection), and only the others are
        yielded: a server writes what is yielded, in order, and waits for its client to drain before
        asking for the next."""
        return self._stream(request, chat=True, sse=True, sink=sink)

    async def _chat_request(self, request) -> tuple[oa.ChatCompletionRequest, _Prepared]:
        self._require_started()
        r = oa.decode_request(request, oa.ChatCompletionRequest)
        p = await self._prepare_chat(r)
        self.metrics.inc("smg_requests_total", route="chat", stream="true")
        return r, p

    def _chat_chunk(self, p: _Prepared, choice: _Choice, piece: tuple | None) -> oa.ChatCompletionChunk | None:
        """The chunk for one step of a choice: ``piece`` is what it released (None: nothing)."""
        delta = None
        if piece is not None:
            reasoning, content, calls = piece
            if reasoning or content or calls or not choice.role_sent:
                delta = oa.Delta(role=None if choice.role_sent else "assistant",
                                 content=content if (content or not choice.role_sent) else None,
                                 reasoning_content=reasoning or None, tool_calls=calls or None)
                choice.role_sent = True
        logprobs = None
        if choice.logprobs:
            logprobs = oa.ChoiceLogprobs(content=choice.logprobs)
            choice.logprobs = []
        if choice.finished:
            return oa.ChatCompletionChunk(id=p.request_id, created=p.created, model=p.model, choices=[
                oa.ChunkChoice(index=choice.index, delta=delta or oa.Delta(), logprobs=logprobs,
                               finish_reason=choice.openai_finish_reason, matched_stop=choice.matched)])
        if delta is not None or logprobs is not None:
            return oa.ChatCompletionChunk(id=p.request_id, created=p.created, model=p.model, choices=[
                oa.ChunkChoice(index=choice.index, delta=delta or oa.Delta(), logprobs=logprobs)])
        return None

    async def _chat_chunks(self, r: oa.ChatCompletionRequest, p: _Prepared) -> AsyncIterator[oa.ChatCompletionChunk]:
        cached = 0
        tokens = 0
        async for choice, out, piece in self._run(p):
            cached = max(cached, out.cached_tokens)
            chunk = self._chat_chunk(p, choice, piece)
            if choice.finished:
                tokens += choice.tokens
            if chunk is not None:
                yield chunk
        if _usage_wanted(r):
            yield oa.ChatCompletionChunk(id=p.request_id, created=p.created, model=p.model, choices=[],
                                         usage=self._usage(len(p.prompt_ids), tokens, cached))

    async def _stream(self, request, chat: bool, sse: bool,
                      sink: Callable[[bytes], bool] | None = None) -> AsyncIterator:
        """A streamed chat (or completions) request's chunks, or with ``sse`` their events' bytes.
        A plain request runs as :meth:`_run` does, but the compiled pump takes each engine message
        through detokenizer and stop rules in one call, and for SSE writes the event too; the last
        event (and the pump's templates, cut from a stand-in) come from the chunk builders. With a
        ``sink``, once an event was yielded the rest are pushed (:func:`_push`) while they can be."""
        if chat:
            r, p = await self._chat_request(request)
            prepared = [p]
        else:
            r, prepared = self._completion_request(request)
            p = prepared[0]
        if len(prepared) > 1 or not p.plain or getattr(r, "echo", False):
            chunks = self._chat_chunks(r, p) if chat else self._completion_chunks(r, prepared)
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    yield _event(chunk) if sse else chunk
            if sse:
                yield SSE_DONE
            return
        # chunk_of builds any chunk; text_chunk, the one most tokens make (text only, after the
        # role), directly: what chunk_of would build for it, without its tests (~0.2 µs a token)
        rid, created, model = p.request_id, p.created, p.model
        if chat:
            def chunk_of(choice, piece):
                return self._chat_chunk(p, choice, piece)

            def text_chunk(text):
                return oa.ChatCompletionChunk(id=rid, created=created, model=model,
                                              choices=[oa.ChunkChoice(index=0, delta=oa.Delta(content=text))])
        else:
            def chunk_of(choice, piece):
                return self._completion_chunk(p, p, 0, choice, piece)

            def text_chunk(text):
                return oa.Completion(id=rid, created=created, model=model,
                                     choices=[oa.CompletionChoice(index=0, text=text, finish_reason=None)])
        choice = _Choice(0, self, p)
        pump = PlainPump(choice.detok, choice.stop, *(_sse_templates(chunk_of) if sse else (b"", b"", b"")))
        request = self._engine_request(p)
        started = time.perf_counter()
        first, count, cached, last = None, 0, 0, None
        calls: list | None = None  # with a sink: the pool's calls, until the push is decided
        push_from = None  # the call whose outputs are pushed after each yielded event
        if sink is not None:
            calls = []

            def pushed(out: EngineOutput) -> bool:
                """An output the push phase hands over (never a finished one): whether to go on."""
                nonlocal cached, count
                if out.cached_tokens > cached:
                    cached = out.cached_tokens
                ids = out.token_ids
                if not ids:
                    return True
                count += len(ids)
                event = pump.feed(ids)
                if event is not None:
                    batch.append(event)
                return not pump.finished

            batch: list[bytes] = []  # the events of one read's outputs, written in one piece

            def flush() -> bool:
                """Write the batch; whether the client takes more."""
                if not batch:
                    return True
                events = batch[0] if len(batch) == 1 else b"".join(batch)
                batch.clear()
                return sink(events)

        async with contextlib.aclosing(self.pool.generate(request, calls=calls)) as stream:
            async for out in stream:
                if out.cached_tokens > cached:
                    cached = out.cached_tokens
                ids = out.token_ids
                if ids:
                    if first is None:
                        first = time.perf_counter()
                        self.metrics.observe("smg_time_to_first_token_seconds", first - started)
                    elif not out.finished:
                        count += len(ids)
                if out.finished:  # its ids were streamed already
                    last = out
                    break
                if ids:
                    if sse:
                        event = pump.feed(ids)
                    else:
                        text = pump.feed_text(ids)
                        if text is None:
                            event = None
                        elif choice.role_sent or not chat:
                            event = text_chunk(text)
                        else:
                            event = chunk_of(choice, ("", text, _NO_CALLS))
                    if event is not None:
                        yield event
                        if calls:  # decided once, at the first event (not re-checked per token)
                            call, calls = calls[-1], None
                            if hasattr(call, "listen"):
                                push_from = call
                        if push_from is not None:  # the server has drained: push the rest
                            await _push(push_from, pushed, flush)
                            if pump.finished:
                                break
                    elif pump.finished:  # (the pump releases no event on the token that ends it)
                        break  # a stop rule ended it before the engine did: closing the stream aborts it
        choice.tokens, choice.role_sent = pump.tokens, pump.started
        if pump.finished:
            choice.finished, choice.finish_reason, choice.matched = True, pump.finish_reason, pump.matched
            piece = choice._emit(pump.text, final=True)
        else:  # the engine finished it, or the stream ended without a complete for it
            piece = choice.end(last or EngineOutput(0, [], finished=True, finish_reason="abort"))
        self._record(p, started, first, count, choice.tokens)
        last_chunks = [chunk_of(choice, piece)]
        if _usage_wanted(r):
            last_chunks.append((oa.ChatCompletionChunk if chat else oa.Completion)(
                id=p.request_id, created=p.created, model=p.model, choices=[],
                usage=self._usage(len(p.prompt_ids), choice.tokens, cached)))
        if sse:  # the stream's end in one piece (one write)
            yield b"".join([*map(_event, last_chunks), SSE_DONE])
        else:
            for chunk in last_chunks:
                yield chunk

    # ---- completions -------------------------------------------------------------------------------

    def _prepare_completion(self, r: oa.CompletionRequest) -> list[_Prepared]:
        prompts: list[list[int]]
        texts: list[str]
        if isinstance(r.prompt, str):
            texts = [r.prompt]
            prompts = [self.tokenizer.encode(r.prompt, add_special_tokens=True)]
        elif all(isinstance(x, int) for x in r.prompt):
            prompts, texts = [list(r.prompt)], [self.tokenizer.decode(r.prompt, skip_special_tokens=False)]
        elif all(isinstance(x, str) for x in r.prompt):
            texts = list(r.prompt)
            prompts = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        else:
            prompts = [list(x) for x in r.prompt]
            texts = [self.tokenizer.decode(x, skip_special_tokens=False) for x in prompts]
        if any(not ids for ids in prompts):
            raise InvalidRequest("prompt must not be empty")
        created = int(time.time())
        out = []
        for ids, text in zip(prompts, texts):
            sampling, stop = self._sampling(r, len(ids), self._format_constraint(r))
            out.append(_Prepared(request_id="cmpl-" + uuid.uuid4().hex, model=r.model or self.model, created=created,
                                 prompt_ids=ids, sampling=sampling, stop=stop, return_logprob=r.logprobs is not None,
                                 top_logprobs=r.logprobs or 0, prompt_text=text))
        return out

    @staticmethod
    def _completion_logprobs(entries: list[oa.TokenLogprobOut], offset: int) -> oa.CompletionLogprobs:
        offsets, position = [], offset
        for e in entries:
            offsets.append(position)
            position += len(e.token)
        return oa.CompletionLogprobs(tokens=[e.token for e in entries], token_logprobs=[e.logprob for e in entries],
                                     top_logprobs=[{t.token: t.logprob for t in e.top_logprobs} for e in entries],
                                     text_offset=offsets)

    async def complete(self, request: Mapping[str, Any] | oa.CompletionRequest | bytes) -> oa.Completion:
        """OpenAI Completions, non-streaming (several prompts run concurrently)."""
        self._require_started()
        r = oa.decode_request(request, oa.CompletionRequest)
        prepared = self._prepare_completion(r)

        async def one(p: _Prepared) -> tuple[_Prepared, dict[int, _Choice], int]:
            choices, cached = {}, 0
            async for choice, out, _ in self._run(p):
                choices[choice.index] = choice
                cached = max(cached, out.cached_tokens)
            return p, choices, cached

        results = await asyncio.gather(*(one(p) for p in prepared))
        out_choices, prompt_tokens, completion_tokens, cached_total = [], 0, 0, 0
        for k, (p, choices, cached) in enumerate(results):
            for index in sorted(choices):
                c = choices[index]
                text = ("".join(c.content))
                prefix = p.prompt_text if r.echo else ""
                out_choices.append(oa.CompletionChoice(
                    index=k * r.n + index, text=prefix + text, finish_reason=c.finish_reason, matched_stop=c.matched,
                    logprobs=self._completion_logprobs(c.logprobs, len(prefix)) if c.logprobs is not None else None))
                completion_tokens += c.tokens
            prompt_tokens += len(p.prompt_ids)
            cached_total += cached
        self.metrics.inc("smg_requests_total", route="completions", stream="false")
        return oa.Completion(id=prepared[0].request_id, created=prepared[0].created, model=prepared[0].model,
                             choices=out_choices, usage=self._usage(prompt_tokens, completion_tokens, cached_total))

    def complete_stream(self, request: Mapping[str, Any] | oa.CompletionRequest | bytes
                        ) -> AsyncIterator[oa.Completion]:
        """OpenAI Completions, streaming (prompts one after another)."""
        return self._stream(request, chat=False, sse=False)

    def complete_sse(self, request: Mapping[str, Any] | oa.CompletionRequest | bytes, *,
                     sink: Callable[[bytes], bool] | None = None) -> AsyncIterator[bytes]:
        """:meth:`complete_stream` as server-sent events, as :meth:`chat_sse` (one plain prompt
        without ``echo``: the compiled pump; ``sink`` as there)."""
        return self._stream(request, chat=False, sse=True, sink=sink)

    def _completion_request(self, request) -> tuple[oa.CompletionRequest, list[_Prepared]]:
        self._require_started()
        r = oa.decode_request(request, oa.CompletionRequest)
        prepared = self._prepare_completion(r)
        self.metrics.inc("smg_requests_total", route="completions", stream="true")
        return r, prepared

    def _completion_chunk(self, first: _Prepared, p: _Prepared, base: int, choice: _Choice,
                          piece: tuple | None) -> oa.Completion | None:
        """The chunk for one step of a choice of prompt ``p`` (choice indexes from ``base``)."""
        text = piece[1] if piece else ""
        logprobs = None
        if choice.logprobs:
            logprobs = self._completion_logprobs(choice.logprobs, 0)
            choice.logprobs = []
        if not (text or choice.finished or logprobs):
            return None
        return oa.Completion(id=first.request_id, created=first.created, model=p.model, choices=[
            oa.CompletionChoice(index=base + choice.index, text=text, logprobs=logprobs,
                                finish_reason=choice.finish_reason if choice.finished else None,
                                matched_stop=choice.matched if choice.finished else None)])

    async def _completion_chunks(self, r: oa.CompletionRequest, prepared: list[_Prepared]
                                 ) -> AsyncIterator[oa.Completion]:
        prompt_tokens = completion_tokens = cached = 0
        first = prepared[0]
        for k, p in enumerate(prepared):
            if r.echo:
                for i in range(r.n):
                    yield oa.Completion(id=first.request_id, created=first.created, model=p.model, choices=[
                        oa.CompletionChoice(index=k * r.n + i, text=p.prompt_text, finish_reason=None)])
            async for choice, out, piece in self._run(p):
                cached = max(cached, out.cached_tokens)
                chunk = self._completion_chunk(first, p, k * r.n, choice, piece)
                if chunk is not None:
                    yield chunk
                if choice.finished:
                    completion_tokens += choice.tokens
            prompt_tokens += len(p.prompt_ids)
        if _usage_wanted(r):
            yield oa.Completion(id=first.request_id, created=first.created, model=first.model, choices=[],
                                usage=self._usage(prompt_tokens, completion_tokens, cached))

    # ---- raw access ------------------------------------------------------------------------------

    async def generate(self, input_ids: Sequence[int] | None = None, text: str | None = None,
                       sampling: SamplingOptions | Mapping[str, Any] | None = None,
                       stream: bool = True) -> AsyncIterator[EngineOutput]:
        """Token-level access: ids (or text, encoded here) in, the engine's outputs out."""
        self._require_started()
        if (input_ids is None) == (text is None):
            raise InvalidRequest("give exactly one of input_ids and text")
        ids = list(input_ids) if input_ids is not None else self.tokenizer.encode(text)
        if not ids:
            raise InvalidRequest("the input is empty")
        if isinstance(sampling, Mapping):
            try:
                sampling = SamplingOptions(**sampling)
            except TypeError as exc:
                raise InvalidRequest(f"invalid sampling options: {exc}") from None
        request = GenerateRequest("gen-" + uuid.uuid4().hex, ids, sampling or SamplingOptions(), stream=stream)
        async with contextlib.aclosing(self.pool.generate(request)) as outputs:
            async for out in outputs:
                yield out

    def models(self) -> oa.ModelList:
        return oa.ModelList(data=[oa.ModelCard(id=self.model or "default", created=self._created,
                                               max_model_len=self.max_context_length)])

    # ---- metrics ---------------------------------------------------------------------------------

    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("smg_requests_total", "counter", "Requests handled, by route and streaming.")
        m.describe("smg_request_errors_total", "counter", "Requests that ended in an error, by type.")
        m.describe("smg_prompt_tokens_total", "counter", "Prompt tokens sent to engines.")
        m.describe("smg_completion_tokens_total", "counter", "Completion tokens returned to clients.")
        m.describe("smg_time_to_first_token_seconds", "histogram", "Time from dispatch to the first token.")
        m.describe("smg_inter_token_latency_seconds", "histogram", "Mean time between tokens, per stream.")
        m.describe("smg_tokenizer_cache_hits_total", "counter", "Tokenizer cache hits by level.")
        m.describe("smg_tokenizer_cache_misses_total", "counter", "Tokenizer cache misses by level.")
        m.describe("smg_client_disconnects_total", "counter", "Streams whose client went away (engine aborted).")
        m.describe("smg_worker_healthy", "gauge", "1 if the worker is in rotation.")
        m.describe("smg_worker_in_flight", "gauge", "Requests in flight on the worker.")

    def _gauges(self):
        if self.tokenizer is not None:
            info = self.tokenizer.cache_info()
            for level, hits, misses in (("l0", info.l0_hits, info.l0_misses), ("l1", info.l1_hits, info.l1_misses)):
                yield "smg_tokenizer_cache_hits_total", {"level": level}, hits
                yield "smg_tokenizer_cache_misses_total", {"level": level}, misses
        for worker in self.pool.workers:
            yield "smg_worker_healthy", {"worker": worker.url}, float(worker.healthy)
            yield "smg_worker_in_flight", {"worker": worker.url}, float(worker.in_flight)


def _check_keys(kind, name: str, values: Mapping[str, Any]) -> None:
    """An InvalidRequest naming the keys of a ``name`` config that dataclass ``kind`` lacks."""
    unknown = set(values) - set(kind.__dataclass_fields__)
    if unknown:
        raise InvalidRequest(f"unknown {name} config keys: {sorted(unknown)}")


def _section(kind, name: str, values: Mapping[str, Any]):
    """A config section's record (an InvalidRequest for what is not one, rather than a TypeError)."""
    if not isinstance(values, Mapping):
        raise InvalidRequest(f"gateway config {name!r} must be an object, got {type(values).__name__}")
    _check_keys(kind, name, values)
    return kind(**values)


SSE_DONE = b"data: [DONE]\n\n"
_STAND_IN_TEXT = "smg-sse-" + uuid.uuid4().hex  # a text no real chunk holds


async def _push(call, handle: Callable[[EngineOutput], bool], flush: Callable[[], bool]) -> None:
    """Hand an h2 call's outputs to ``handle`` from the connection's data path as they arrive (see
    ``StreamCall.listen``), then ``flush()`` once per read (so a read's events for the stream go out
    in one write), until ``handle`` or ``flush`` returns False, an output finishes the sequence
    (put back for the caller's ``async for``) or the call ends (the caller's next step raises or
    stops as it would have). An error ``handle`` raises is raised here."""
    done = asyncio.get_running_loop().create_future()

    def take_all() -> bool:
        """Hand ``handle`` what has arrived; whether the push goes on."""
        while True:
            try:
                out = call.take()
            except BaseException:  # the call's end: kept in the call for the caller's next step
                return False
            if out is None:  # all this read brought
                return True
            if out.finished:
                call.put_back(out)
                return False
            if not handle(out):
                return False

    def listener() -> None:
        if done.done():  # (a cancelled wait, or a call ended from inside take_all)
            return
        error = None
        try:
            more = take_all()
        except BaseException as exc:
            error, more = exc, False
        try:  # the events made so far go out (an error's too, before it is raised)
            more = flush() and more
        except BaseException as exc:
            error, more = error or exc, False
        if more:
            return  # wait for the next read
        call.listen(None)
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    call.listen(listener)
    try:
        listener()  # what arrived with the caller's last output
        await done
    finally:
        call.listen(None)


def _event(chunk) -> bytes:
    """One server-sent event holding ``chunk`` as JSON."""
    return b"data: " + oa.encode(chunk) + b"\n\n"


def _usage_wanted(r) -> bool:
    return bool(r.stream_options and r.stream_options.include_usage)


class _StandInChoice:
    """What a chunk builder reads of a choice, for cutting event templates."""

    __slots__ = ("index", "role_sent", "logprobs", "finished")

    def __init__(self, role_sent: bool) -> None:
        self.index, self.role_sent, self.logprobs, self.finished = 0, role_sent, None, False


def _sse_templates(chunk_of) -> tuple[bytes, bytes, bytes]:
    """(first head, head, tail) of a plain choice's text events: the events of the chunks that
    ``chunk_of`` builds around a stand-in text, cut where the text is (the first: role not sent)."""
    marker = oa.encode(_STAND_IN_TEXT)
    first_head, _, _ = _event(chunk_of(_StandInChoice(False), ("", _STAND_IN_TEXT, _NO_CALLS))).partition(marker)
    head, _, tail = _event(chunk_of(_StandInChoice(True), ("", _STAND_IN_TEXT, _NO_CALLS))).partition(marker)
    return first_head, head, tail


def _template_message(message: Mapping[str, Any]) -> dict:
    """A chat message as templates expect it: text parts joined, tool-call arguments as objects."""
    out = dict(message)
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = "".join(part.get("text", "") for part in content)
    if out.get("tool_calls"):
        calls = []
        for call in out["tool_calls"]:
            call = dict(call)
            fn = dict(call.get("function") or {})
            if isinstance(fn.get("arguments"), str):
                try:
                    fn["arguments"] = json.loads(fn["arguments"])
                except ValueError:
                    pass  # leave malformed arguments as the client sent them
            call["function"] = fn
            calls.append(call)
        out["tool_calls"] = calls
    return out


def _required_schema(tools: list[dict]) -> dict:
    """JSON schema for tool_choice "required": a non-empty array of calls to the given tools."""
    return {"type": "array", "minItems": 1, "items": {"anyOf": [
        {"type": "object", "properties": {"name": {"type": "string", "enum": [t["function"]["name"]]},
                                          "parameters": t["function"].get("parameters") or {"type": "object"}},
         "required": ["name", "parameters"]} for t in tools]}}


def _prompt_opens_reasoning(prompt: str, reasoning: str | None) -> bool | None:
    """Whether the rendered prompt already opened (True) or closed (False) the reasoning block;
    None leaves the family default (e.g. Qwen3 with ``enable_thinking=False`` ends the prompt with
    an empty ``<think></think>``, DeepSeek-V3.1 thinking ends it with ``<think>``)."""
    if reasoning is None:
        return None
    from smg.parsers.registry import reasoning_format

    table = reasoning_format(reasoning).table
    tail = prompt.rstrip()
    if any(tail.endswith(m) for m, nxt, _ in table[0] if nxt == REASONING):
        return True
    if any(tail.endswith(m) for m, nxt, _ in table[1] if nxt == CONTENT):
        return False
    return None
