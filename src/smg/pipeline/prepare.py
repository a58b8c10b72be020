"""Stage ``prepare``: an API's request -> messages -> chat template -> token ids (cached), with
its sampling and stop parameters, tool-choice and structured-output constraints.

Front ends call :func:`prepare_chat` (a chat: messages, tools, template) or
:func:`prepare_prompts` (raw prompts) and get :class:`Prepared` requests, which the ``run`` stage
takes to the engine and the ``choice`` stage's pipelines read.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from smg.access_log import CURRENT as ACCESS
from smg.engines import GenerateRequest, MultimodalTensors, SamplingOptions
from smg.errors import ChatTemplateError, ContextLengthExceeded, InvalidRequest, UnsupportedFeature
from smg.models import ServedModel
from smg.parsers.reasoning import prompt_opens_reasoning
from smg.stop import StopParams
from smg.tokenizer.tokenizer import RESERVED_TEMPLATE_VARIABLES
from smg.waiting import wait_within


@dataclass
class Prepared:
    """A validated request turned into engine terms, plus what each choice's pipeline needs."""

    served: ServedModel
    request_id: str  # the response's id
    engine_request_id: str  # the engine's (an X-Request-Id header's value is its prefix)
    model: str  # the name the request used (echoed)
    created: int
    prompt_ids: list[int]
    sampling: SamplingOptions
    stop: StopParams
    lora_id: str | None = None
    return_logprob: bool = False
    top_logprobs: int = 0
    reasoning: str | None = None
    in_reasoning: bool | None = None
    tool_parser: str | None = None
    tools: list | None = None
    forced_tool: str | None = None  # tool_choice naming one function: the output is its arguments
    required_tools: bool = False  # tool_choice "required": the output is a JSON array of calls
    single_tool_call: bool = False  # parallel_tool_calls false: at most one call is returned
    prompt_text: str = ""
    multimodal: MultimodalTensors | None = None
    routing_key: str | None = None

    @property
    def unparsed(self) -> bool:
        """No reasoning or tool parsing: all of the output is content."""
        return self.reasoning is None and self.tool_parser is None and self.forced_tool is None and not self.required_tools

    @property
    def plain(self) -> bool:
        """One choice without parsers or logprobs: its events are the compiled pump's."""
        return self.sampling.n == 1 and not self.return_logprob and self.unparsed

    def engine_request(self) -> GenerateRequest:
        return GenerateRequest(self.engine_request_id, self.prompt_ids, self.sampling, stream=True,
                               return_logprob=self.return_logprob, top_logprobs=self.top_logprobs,
                               lora_id=self.lora_id, text=self.prompt_text[:200], multimodal=self.multimodal,
                               routing_key=self.routing_key)


@dataclass(frozen=True)
class RequestIds:
    """A request's response id and engine request id, and the routing key its client gave."""

    response: str
    engine: str
    routing_key: str | None = None

    def routing_key_or(self, user: str | None) -> str | None:
        """The ``X-SMG-Routing-Key`` header's key, else the request's ``user``."""
        return self.routing_key if self.routing_key is not None else (user or None)


def request_ids(kind: str, prefix: str | None = None, routing_key: str | None = None,
                separator: str = "-") -> RequestIds:
    """Fresh ids (``kind``: ``chatcmpl``, ``cmpl``, ``resp``...; ``kind``, ``separator``, hex);
    ``prefix`` (a client's X-Request-Id) starts the engine's id, so engine logs find the client's
    request."""
    suffix = uuid.uuid4().hex
    response = f"{kind}{separator}{suffix}"
    return RequestIds(response, f"{prefix}-{suffix[:16]}" if prefix else response, routing_key)


# ---- sampling, stops and constraints -----------------------------------------------------------

def sampling_options(served: ServedModel, r, prompt_len: int, constraint: tuple[str, str] | None
                     ) -> tuple[SamplingOptions, StopParams]:
    """The engine's sampling options and the gateway's stop rules for a request with OpenAI's
    sampling fields (``r``); ``max_tokens`` is bounded by the model's context."""
    max_tokens = getattr(r, "max_completion_tokens", None) or r.max_tokens
    context = served.max_context_length
    if context:
        room = context - prompt_len
        if room < 1:
            raise ContextLengthExceeded(f"the prompt has {prompt_len} tokens; the model's context is {context}")
        if max_tokens is not None and max_tokens > room:
            raise ContextLengthExceeded(f"max_tokens {max_tokens} + prompt {prompt_len} tokens exceed the model's "
                                 f"context of {context}")
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


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _choice_regex(choices: Sequence[str]) -> str:
    """A regex matching exactly one of ``choices`` (vLLM's ``guided_choice``)."""
    if not choices or not all(isinstance(c, str) for c in choices):
        raise InvalidRequest("guided_choice must be a non-empty list of strings")
    return "(" + "|".join(re.escape(c) for c in choices) + ")"


# request field -> (constraint kind, how its value becomes the constraint's text)
_CONSTRAINT_FIELDS = {
    "regex": ("regex", str), "guided_regex": ("regex", str),
    "ebnf": ("ebnf", str), "guided_grammar": ("ebnf", str),
    "guided_json": ("json_schema", _json_text),
    "structural_tag": ("structural_tag", _json_text),
    "guided_choice": ("regex", _choice_regex),
}


def output_constraint(r) -> tuple[str, str] | None:
    """The one structured-output constraint a request names: ``response_format`` or one of the
    vLLM/SGLang fields (``regex``, ``ebnf``, ``structural_tag``, ``guided_json``, ``guided_regex``,
    ``guided_grammar``, ``guided_choice``); two of them are a 400."""
    named: list[tuple[str, tuple[str, str]]] = []
    fmt = r.response_format
    if fmt is not None and fmt.type != "text":
        if fmt.type == "json_object":
            named.append(("response_format", ("json_object", "")))
        else:
            named.append(("response_format", ("json_schema", json.dumps(fmt.json_schema.schema))))
    for name, (kind, text_of) in _CONSTRAINT_FIELDS.items():
        value = getattr(r, name)
        if value is not None:
            named.append((name, (kind, text_of(value))))
    if len(named) > 1:
        raise InvalidRequest(f"a request may name one output constraint, got {', '.join(n for n, _ in named)}")
    return named[0][1] if named else None


# ---- chats -------------------------------------------------------------------------------------

TemplateLimits = tuple[float, int]  # (seconds, characters) a request's own template may take and produce


# the templates' thinking switches: Qwen3's enable_thinking, DeepSeek V3.1's thinking
THINKING_SWITCHES = ("enable_thinking", "thinking")


def thinking_kwargs(on: bool) -> dict:
    """Template variables turning a model's thinking on or off (an API's reasoning switch)."""
    return {switch: on for switch in THINKING_SWITCHES}


def template_kwargs(chat_template_kwargs: Mapping[str, Any] | None, reasoning_effort: str | None = None) -> dict:
    """A request's extra template variables; the request's own fields cannot be set through them."""
    kwargs = dict(chat_template_kwargs or {})
    reserved = RESERVED_TEMPLATE_VARIABLES.intersection(kwargs)
    if reserved:
        raise InvalidRequest(f"chat_template_kwargs cannot set {sorted(reserved)}: the request's own fields")
    if reasoning_effort is not None:
        kwargs.setdefault("reasoning_effort", reasoning_effort)
    return kwargs


async def render_chat(served: ServedModel, messages: list, tools: list | None, kwargs: dict,
                      add_generation_prompt: bool = True, own_template: str | None = None,
                      limits: TemplateLimits | None = None) -> str:
    """The chat as the model's prompt. The model's template renders on the loop (compiled once,
    ~5 µs for a short chat); a request's ``own_template`` (allowed only with ``limits``: the
    gateway trusts requests' templates) renders in a thread within ``limits``, so a hostile one is
    a 400 and never stalls other requests."""
    tokenizer = served.tokenizer
    if own_template is None:
        return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                             chat_template=served.chat_template, **kwargs)
    if limits is None:
        raise InvalidRequest("chat_template in a request is off: start the gateway with "
                             "trust_request_chat_template=True (smg serve --trust-request-chat-template)")

    def render() -> str:
        return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                             chat_template=own_template, allow_template_file=False, limits=limits,
                                             **kwargs)

    try:
        return await wait_within(asyncio.to_thread(render), limits[0])
    except asyncio.TimeoutError:  # (the render's own checks stop it; this bounds the wait in any case)
        raise ChatTemplateError(f"the request's chat template took more than {limits[0]:g} s to render") from None


@dataclass
class ChatSpec:
    """A chat as every front end hands it to this stage (each maps its own request onto it)."""

    messages: list  # OpenAI-style chat messages: content a string or parts, assistant tool_calls
    sampling: Any  # OpenAI's sampling fields (``oa.SamplingFields`` or a request that has them)
    model: str = ""
    tools: list | None = None  # OpenAI function tools: {"type": "function", "function": {...}}
    # tools the parser recognises but the template does not offer (MCP tools outside allowed_tools:
    # a call to one is refused with a tool error, not taken for text)
    unoffered_tools: list | None = None
    tool_choice: Any = None  # "auto" | "none" | "required" | {"type": "function", "function": {"name"}}
    parallel_tool_calls: bool = True
    template_kwargs: dict = field(default_factory=dict)
    own_template: str | None = None
    add_generation_prompt: bool = True
    separate_reasoning: bool = True
    constraint: tuple[str, str] | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    user: str | None = None


async def prepare_chat(served: ServedModel, chat: ChatSpec, ids: RequestIds, lora_id: str | None,
                       template_limits: TemplateLimits | None) -> Prepared:
    """A chat as a :class:`Prepared`; ``template_limits`` bound a request's own chat template
    (None: requests may not bring one)."""
    tools = chat.tools or None
    choice = chat.tool_choice if chat.tool_choice is not None else ("auto" if tools else "none")
    messages = [template_message(m) for m in chat.messages]
    refs = image_refs(chat.messages)
    if refs and served.images is None:
        raise UnsupportedFeature(f"model {served.name!r} does not take images (serve it with an image_processor)")
    # the images are fetched and preprocessed while the prompt renders and encodes
    images = asyncio.ensure_future(served.images.process(refs)) if refs else None
    multimodal = None
    try:
        rendering = time.monotonic()
        prompt = await render_chat(served, messages, tools, chat.template_kwargs, chat.add_generation_prompt,
                                   chat.own_template, template_limits)
        prompt_ids = await served.encode(prompt)
        access = ACCESS.get()
        if access is not None:  # (the chat template rendered, then encoded)
            access.stage("tokenize", rendering, time.monotonic())
        if images is not None:
            prompt_ids, multimodal = served.images.expand(prompt_ids, await images)
    finally:
        if images is not None:
            if not images.done():
                images.cancel()
            elif not images.cancelled():
                images.exception()  # (retrieved: when the render failed too, its error is the one answered)
    constraint = chat.constraint
    forced = None
    required = False
    tool_parser = None
    if tools and choice == "auto":
        if served.tool_parser is None:
            raise InvalidRequest(f"tools with tool_choice 'auto' need a tool parser; none is configured for "
                                 f"model {served.name!r} (start the gateway with tool_parser=...)")
        tool_parser = served.tool_parser
    elif isinstance(choice, dict) or choice == "required":
        if constraint is not None:
            raise InvalidRequest("tool_choice 'required' or a named function constrains the output: it cannot "
                                 "be combined with response_format or another output constraint")
        if isinstance(choice, dict):
            forced = choice["function"]["name"]
            schema = next(t["function"].get("parameters") for t in tools if t["function"]["name"] == forced)
            constraint = ("json_schema", json.dumps(schema or {"type": "object"}))
        else:
            required = True
            constraint = ("json_schema", json.dumps(required_schema(tools, single=not chat.parallel_tool_calls)))
    sampling, stop = sampling_options(served, chat.sampling, len(prompt_ids), constraint)
    reasoning = served.reasoning_parser if chat.separate_reasoning else None
    return Prepared(
        served=served, request_id=ids.response, engine_request_id=ids.engine, model=chat.model or served.name,
        created=int(time.time()), prompt_ids=prompt_ids, sampling=sampling, stop=stop, lora_id=lora_id,
        return_logprob=chat.logprobs, top_logprobs=chat.top_logprobs, reasoning=reasoning,
        in_reasoning=prompt_opens_reasoning(prompt, reasoning) if reasoning else None, tool_parser=tool_parser,
        tools=tools + chat.unoffered_tools if tools and chat.unoffered_tools else tools, forced_tool=forced,
        required_tools=required, single_tool_call=not chat.parallel_tool_calls,
        prompt_text=prompt, multimodal=multimodal, routing_key=ids.routing_key_or(chat.user))


def image_refs(messages: Sequence[Mapping[str, Any]]) -> list:
    """The ``image_url`` parts of a chat, in order, each named for error messages."""
    from smg.multimodal.stage import ImageRef

    refs = []
    for i, message in enumerate(messages):
        content = message.get("content")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if part.get("type") == "image_url":
                image = part["image_url"] if isinstance(part["image_url"], dict) else {"url": part["image_url"]}
                refs.append(ImageRef(image["url"], image.get("detail", "auto"),
                                     f"image {len(refs) + 1} (messages[{i}].content[{j}])"))
    return refs


def template_message(message: Mapping[str, Any]) -> dict:
    """A chat message as templates expect it: text parts joined (or, beside images, kept as
    ``{"type": "text"}`` parts with ``{"type": "image"}`` where each image goes), tool-call
    arguments as objects."""
    out = dict(message)
    content = out.get("content")
    if isinstance(content, list):
        if any(part.get("type") == "image_url" for part in content):
            out["content"] = [{"type": "image"} if part.get("type") == "image_url"
                              else {"type": "text", "text": part.get("text", "")} for part in content]
        else:
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


def required_schema(tools: list[dict], single: bool = False) -> dict:
    """JSON schema for tool_choice "required": a non-empty array of calls to the given tools (of
    exactly one with ``single``: parallel_tool_calls false)."""
    schema = {"type": "array", "minItems": 1, "items": {"anyOf": [
        {"type": "object", "properties": {"name": {"type": "string", "enum": [t["function"]["name"]]},
                                          "parameters": t["function"].get("parameters") or {"type": "object"}},
         "required": ["name", "parameters"]} for t in tools]}}
    if single:
        schema["maxItems"] = 1
    return schema


# ---- raw prompts -------------------------------------------------------------------------------

def prepare_prompts(served: ServedModel, r, ids: RequestIds, lora_id: str | None) -> list[Prepared]:
    """A completions request (``prompt``: a string, strings, token ids or lists of them) as one
    :class:`Prepared` per prompt (sharing the response id)."""
    tokenizer = served.tokenizer
    prompts: list[list[int]]
    texts: list[str]
    encoding = time.monotonic()
    if isinstance(r.prompt, str):
        texts = [r.prompt]
        prompts = [tokenizer.encode(r.prompt, add_special_tokens=True)]
    elif all(isinstance(x, int) for x in r.prompt):
        prompts, texts = [list(r.prompt)], [tokenizer.decode(r.prompt, skip_special_tokens=False)]
    elif all(isinstance(x, str) for x in r.prompt):
        texts = list(r.prompt)
        prompts = tokenizer.encode_batch(texts, add_special_tokens=True)
    else:
        prompts = [list(x) for x in r.prompt]
        texts = [tokenizer.decode(x, skip_special_tokens=False) for x in prompts]
    if any(not p for p in prompts):
        raise InvalidRequest("prompt must not be empty")
    access = ACCESS.get()
    if access is not None:
        access.stage("tokenize", encoding, time.monotonic())
    created = int(time.time())
    constraint = output_constraint(r)
    out = []
    for k, (prompt_ids, text) in enumerate(zip(prompts, texts)):
        sampling, stop = sampling_options(served, r, len(prompt_ids), constraint)
        engine_id = ids.engine if len(prompts) == 1 else f"{ids.engine}-{k}"
        out.append(Prepared(served=served, request_id=ids.response, engine_request_id=engine_id,
                            model=r.model or served.name, created=created, prompt_ids=prompt_ids, sampling=sampling,
                            stop=stop, lora_id=lora_id, return_logprob=r.logprobs is not None,
                            top_logprobs=r.logprobs or 0, prompt_text=text, routing_key=ids.routing_key_or(r.user)))
    return out
