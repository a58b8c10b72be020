"""OpenAI Chat Completions and Completions: request, response and chunk models.

msgspec, not pydantic: requests are decoded straight from JSON bytes into typed structs (one pass,
no intermediate dict), and a chunk is built and encoded per token on the hot path, 7x cheaper than
with pydantic v2 models of the same shape (``benchmarks/bench_protocol.py``). Requests forbid unknown fields, so a misspelled or
unsupported field is a 400 that names it, never silently ignored. vLLM/SGLang extensions
(``top_k``, ``min_p``, ``repetition_penalty``, ``stop_token_ids``, ``ignore_eos``, ``min_tokens``,
``skip_special_tokens``, ``include_stop_str_in_output``/``no_stop_trim``, ``chat_template_kwargs``,
``separate_reasoning``) are accepted as those servers accept them.
"""
from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

from smg.errors import InvalidRequest, UnsupportedFeature


class _Request(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    pass


class _Response(msgspec.Struct, omit_defaults=True, kw_only=True):
    pass


# ---- requests -----------------------------------------------------------------------------------

class FunctionDef(_Request, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Request, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionDef


class StreamOptions(_Request, kw_only=True):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class JsonSchemaFormat(_Request, kw_only=True):
    name: str = "response"
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(_Request, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class _ConstraintFields(_Request, kw_only=True):
    """Structured-output fields vLLM and SGLang accept besides ``response_format`` (one at most)."""

    regex: str | None = None
    ebnf: str | None = None
    structural_tag: Union[str, dict[str, Any], None] = None
    guided_json: Union[str, dict[str, Any], None] = None
    guided_regex: str | None = None
    guided_grammar: str | None = None
    guided_choice: list[str] | None = None


class SamplingFields(_ConstraintFields, kw_only=True):
    model: str = ""
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    logit_bias: dict[str, float] | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    no_stop_trim: bool = False
    user: str | None = None


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Union[str, dict[str, Any], None] = None
    parallel_tool_calls: bool = True
    logprobs: bool = False
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    reasoning_effort: str | None = None
    separate_reasoning: bool = True


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: Union[str, list[Any]]  # str | list[str] | list[int] | list[list[int]], checked in _validate
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None
    response_format: ResponseFormat | None = None


_CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "ipython", "function"})


def decode_request(data: bytes | str | dict | msgspec.Struct, kind: type[msgspec.Struct]):
    """A request from JSON bytes, a dict or an instance, validated; ``InvalidRequest`` otherwise."""
    try:
        if isinstance(data, kind):
            request = data
        elif isinstance(data, (bytes, bytearray, memoryview, str)):
            request = msgspec.json.decode(data, type=kind)
        elif isinstance(data, dict):
            request = msgspec.convert(data, type=kind)
        else:
            raise InvalidRequest(f"a request must be a JSON object, got {type(data).__name__}")
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec's error for bad UTF-8 inside a string
        raise InvalidRequest(f"request body is not valid UTF-8: {exc}") from None
    except RecursionError:  # nested deeper than the decoder's stack (it unwinds cleanly)
        raise InvalidRequest("the request is nested too deeply") from None
    if isinstance(request, SamplingFields):
        _validate(request)
    return request


def _check_image_part(part: dict, where: str) -> None:
    """An ``image_url`` part's shape: ``{"url": str, "detail": "auto" | "low" | "high"}`` (or the URL
    as a plain string, as some clients send it)."""
    image = part.get("image_url")
    if isinstance(image, str):
        image = {"url": image}
    if not isinstance(image, dict) or not isinstance(image.get("url"), str) or not image["url"]:
        raise InvalidRequest(f"{where}: an image_url part needs image_url.url, a non-empty string")
    if image.get("detail", "auto") not in ("auto", "low", "high"):
        raise InvalidRequest(f"{where}: image_url.detail must be 'auto', 'low' or 'high'")


def _check_range(name: str, value, low, high, inclusive_low: bool = True) -> None:
    if value is None:
        return
    ok = (value >= low if inclusive_low else value > low) and (high is None or value <= high)
    if not ok:
        raise InvalidRequest(f"{name} must be in {'[' if inclusive_low else '('}{low}, {high if high is not None else 'inf'}], got {value}")


def validate_sampling(r: SamplingFields) -> None:
    """The sampling fields' ranges (every API's requests map onto them)."""
    _check_range("n", r.n, 1, 128)
    _check_range("temperature", r.temperature, 0, 2)
    _check_range("top_p", r.top_p, 0, 1, inclusive_low=False)
    _check_range("min_p", r.min_p, 0, 1)
    _check_range("frequency_penalty", r.frequency_penalty, -2, 2)
    _check_range("presence_penalty", r.presence_penalty, -2, 2)
    _check_range("repetition_penalty", r.repetition_penalty, 0, 2, inclusive_low=False)
    _check_range("max_tokens", r.max_tokens, 1, None)
    _check_range("min_tokens", r.min_tokens, 0, None)
    if r.top_k is not None and r.top_k != -1 and r.top_k < 1:
        raise InvalidRequest("top_k must be -1 (disabled) or a positive integer")
    stops = [r.stop] if isinstance(r.stop, str) else (r.stop or [])
    if r.stream_options is not None and r.stream_options.continuous_usage_stats:
        raise UnsupportedFeature("stream_options.continuous_usage_stats is not supported (include_usage is)")
    if any(not s for s in stops):
        raise InvalidRequest("stop strings must be non-empty")
    if len(stops) > 64:
        raise InvalidRequest("at most 64 stop strings")


def _validate(r) -> None:
    validate_sampling(r)
    if isinstance(r, ChatCompletionRequest):
        _check_range("max_completion_tokens", r.max_completion_tokens, 1, None)
        _check_range("top_logprobs", r.top_logprobs, 0, 20)
        if r.top_logprobs and not r.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs=true")
        if not r.messages:
            raise InvalidRequest("messages must not be empty")
        for i, message in enumerate(r.messages):
            role = message.get("role")
            if role not in _CHAT_ROLES:
                raise InvalidRequest(f"messages[{i}].role must be one of {sorted(_CHAT_ROLES)}, got {role!r}")
            content = message.get("content")
            if content is not None and not isinstance(content, (str, list)):
                raise InvalidRequest(f"messages[{i}].content must be a string or a list of parts")
            for part in content if isinstance(content, list) else ():
                if not isinstance(part, dict) or "type" not in part:
                    raise InvalidRequest(f"messages[{i}].content parts must be objects with a type")
                if part["type"] == "image_url":
                    _check_image_part(part, f"messages[{i}].content")
                elif part["type"] not in ("text", "input_text"):
                    raise UnsupportedFeature(f"content part type {part['type']!r} is not supported (text and "
                                             f"image_url are)")
        if isinstance(r.tool_choice, str) and r.tool_choice not in ("none", "auto", "required"):
            raise InvalidRequest("tool_choice must be 'none', 'auto', 'required' or a named function")
        if r.tool_choice not in (None, "none", "auto") and not r.tools:
            raise InvalidRequest("tool_choice needs tools")
        if isinstance(r.tool_choice, dict):
            name = (r.tool_choice.get("function") or {}).get("name")
            if name not in {t.function.name for t in r.tools or ()}:
                raise InvalidRequest(f"tool_choice names a function not in tools: {name!r}")
    else:
        _check_range("logprobs", r.logprobs, 0, 20)
        if r.suffix:
            raise UnsupportedFeature("suffix (fill-in-the-middle) is not supported")
        if r.best_of is not None and r.best_of != r.n:
            raise UnsupportedFeature("best_of other than n is not supported")
        if isinstance(r.prompt, list):
            if not r.prompt:
                raise InvalidRequest("prompt must not be empty")
            ints = all(isinstance(x, int) and not isinstance(x, bool) for x in r.prompt)
            strs = all(isinstance(x, str) for x in r.prompt)
            lists = all(isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
                        for x in r.prompt)
            if not (ints or strs or lists):
                raise InvalidRequest("prompt must be a string, a list of strings, a list of token ids or a list "
                                     "of token-id lists")
    if r.response_format is not None and r.response_format.type == "json_schema" and (
            r.response_format.json_schema is None or r.response_format.json_schema.schema is None):
        raise InvalidRequest("response_format json_schema needs json_schema.schema")


# ---- responses ----------------------------------------------------------------------------------

class FunctionCall(_Response, kw_only=True):
    arguments: str  # always present, "" in a call's first streamed piece, as OpenAI sends it
    name: str | None = None


class ToolCallOut(msgspec.Struct, kw_only=True):
    id: str
    function: FunctionCall
    type: str = "function"


class ToolCallChunk(_Response, kw_only=True):
    index: int
    function: FunctionCall
    id: str | None = None
    type: str | None = None


class TopLogprob(_Response, kw_only=True):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(_Response, kw_only=True):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(_Response, kw_only=True):
    content: list[TokenLogprobOut] | None = None


class ChatMessageOut(_Response, kw_only=True):
    role: str  # no default: always encoded
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(msgspec.Struct, kw_only=True):
    index: int
    message: ChatMessageOut
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None
    matched_stop: Union[int, str, None] = None


class PromptTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0


class CompletionTokensDetails(_Response, kw_only=True):
    reasoning_tokens: int = 0


class Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    object: str = "chat.completion"


class Delta(_Response, kw_only=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallChunk] | None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None
    matched_stop: Union[int, str, None] = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    object: str = "chat.completion.chunk"


class CompletionLogprobs(msgspec.Struct, kw_only=True):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None
    matched_stop: Union[int, str, None] = None


class Completion(msgspec.Struct, kw_only=True):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    object: str = "text_completion"


class ModelCard(msgspec.Struct, kw_only=True):
    id: str
    created: int
    owned_by: str = "smg"
    root: str | None = None
    parent: str | None = None  # a LoRA adapter's base model
    max_model_len: int | None = None
    object: str = "model"


class ModelList(msgspec.Struct, kw_only=True):
    data: list[ModelCard]
    object: str = "list"


# ---- vLLM's and SGLang's tokenizer routes ------------------------------------------------------

class TokenizeRequest(_Request, kw_only=True):
    """``/v1/tokenize``: a ``prompt`` (a string or strings) or chat ``messages`` (rendered with the
    model's template first)."""

    model: str = ""
    prompt: Union[str, list[str], None] = None
    messages: list[dict[str, Any]] | None = None
    tools: list[Tool] | None = None
    add_special_tokens: bool | None = None  # default: True for a prompt, False for messages (as vLLM)
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False


class TokenizeResponse(_Response, kw_only=True):
    tokens: list[Any]  # ids, or a list of ids per prompt
    count: Union[int, list[int]]
    max_model_len: int | None = None
    token_strs: list[str] | None = None


class DetokenizeRequest(_Request, kw_only=True):
    model: str = ""
    tokens: list[Any]  # ids, or lists of ids (checked by the route)
    skip_special_tokens: bool = False


class DetokenizeResponse(msgspec.Struct, kw_only=True):
    """vLLM answers ``prompt``, SGLang ``text``: both are given."""

    prompt: Union[str, list[str]]
    text: Union[str, list[str]]


encode = msgspec.json.encode  # JSON bytes of a model (an alias: no wrapper frame per streamed chunk)


def to_dict(value) -> dict:
    return msgspec.to_builtins(value)
