"""The in-process Gateway API: requests as dicts or models, tool_choice modes, constraints,
tokenizer discovery, raw generation and errors."""
import asyncio
import json

import pytest

from smg import ChatCompletionRequest, Gateway
from smg.engine import EngineServer, ReferenceEngine
from smg.engines import ModelInfo, SamplingOptions
from smg.errors import InvalidRequest, NoHealthyWorker, SmgError, UnsupportedFeature
from smg.tokenizer.templates import template_path

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
USER = [{"role": "user", "content": "Weather in Paris?"}]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def with_gateway(engine_or_server, body, **kwargs):
    server = engine_or_server.server() if isinstance(engine_or_server, ReferenceEngine) else engine_or_server
    port = await server.start()
    try:
        kwargs.setdefault("chat_template", str(template_path("chatml_qwen3")))
        async with Gateway([f"grpc://127.0.0.1:{port}"], **kwargs) as gw:
            return await body(gw)
    finally:
        await server.stop()


def test_typed_and_dict_requests_agree(llama, llama_dir):
    engine = ReferenceEngine(llama, tokenizer_dir=llama_dir)

    async def body(gw):
        a = await gw.chat({"model": "smg-reference", "messages": USER, "max_tokens": 5, "seed": 2})
        b = await gw.chat(ChatCompletionRequest(model="smg-reference", messages=USER, max_tokens=5, seed=2))
        c = await gw.chat(json.dumps({"model": "smg-reference", "messages": USER, "max_tokens": 5, "seed": 2}).encode())
        return a, b, c

    a, b, c = run(with_gateway(engine, body))
    assert a.choices[0].message.content == b.choices[0].message.content == c.choices[0].message.content


def test_start_builds_the_detokenizer_table_and_template_before_the_first_request(llama, llama_dir, tmp_path):
    """Built lazily they cost the first request ~0.5 s, and stall every request served beside it."""
    import shutil

    from smg.tokenizer import Tokenizer

    async def body(gw):
        return gw.tokenizer._detokenizers._built, len(gw.tokenizer._templates)

    # a file no other tokenizer in this process has loaded (what a file's text builds is shared)
    fresh = shutil.copytree(llama_dir, tmp_path / "model")
    with open(fresh / "tokenizer.json", "a") as file:
        file.write("\n")
    tokenizer = Tokenizer.from_dir(fresh)
    assert not tokenizer._detokenizers._built and not tokenizer._templates
    assert run(with_gateway(ReferenceEngine(llama, tokenizer_dir=llama_dir), body, tokenizer=tokenizer)) == (True, 1)
    tokenizer.warm_up(chat_template="{% if %}")  # a broken template fails the chat requests, not start
    assert len(tokenizer._templates) == 1


def test_tokenizer_from_engine_path_and_from_get_tokenizer(llama, llama_dir):
    reported = ReferenceEngine(llama, tokenizer_dir=llama_dir)  # reports a local path
    remote = ReferenceEngine(llama, tokenizer_dir=llama_dir)
    remote.model_info = ModelInfo(**{**remote.model_info.__dict__, "tokenizer_path": "/not/on/this/machine"})

    async def body(gw):
        reply = await gw.chat({"model": "smg-reference", "messages": USER, "max_tokens": 3})
        return gw.tokenizer.vocab_size, reply.usage.completion_tokens

    assert run(with_gateway(reported, body, tokenizer=None)) == (llama.vocab_size, 3)
    server = EngineServer(remote.generate, remote.model_info, llama_dir)  # serves GetTokenizer
    assert run(with_gateway(server, body, tokenizer=None)) == (llama.vocab_size, 3)


def test_named_tool_choice_streams_arguments(llama, llama_dir):
    engine = ReferenceEngine(llama, mode="script", scripts=['{"city": "Paris"}'], model_id="Qwen/Qwen3-8B",
                             tokenizer_dir=llama_dir)
    seen = []

    async def body(gw):
        request = {"model": "Qwen/Qwen3-8B", "messages": USER, "tools": TOOLS,
                   "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
        whole = await gw.chat(request)
        chunks = [c async for c in gw.chat_stream({**request, "stream": True})]
        seen.extend(chunks)
        return whole

    whole = run(with_gateway(engine, body))
    call = whole.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert whole.choices[0].finish_reason == "tool_calls" and whole.choices[0].message.content is None
    pieces = [tc for c in seen for tc in (c.choices[0].delta.tool_calls or [])]
    assert pieces[0].function.name == "get_weather" and len(pieces) > 2
    assert json.loads("".join(p.function.arguments for p in pieces)) == {"city": "Paris"}


def test_required_tool_choice_and_constraints_reach_the_engine(llama, llama_dir):
    output = '[{"name": "search", "parameters": {"q": "x"}}, {"name": "get_weather", "parameters": {"city": "Oslo"}}]'
    reference = ReferenceEngine(llama, mode="script", scripts=[output], tokenizer_dir=llama_dir)
    constraints = []

    async def recording(request):
        constraints.append(request.sampling.constraint)
        async for chunk in reference.generate(request):
            yield chunk

    async def body(gw):
        reply = await gw.chat({"model": "smg-reference", "messages": USER, "tools": TOOLS, "tool_choice": "required"})
        await gw.chat({"model": "smg-reference", "messages": USER, "max_tokens": 2, "response_format": {"type": "json_object"}})
        await gw.chat({"model": "smg-reference", "messages": USER, "max_tokens": 2, "response_format": {
            "type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}})
        return reply

    reply = run(with_gateway(EngineServer(recording, reference.model_info), body, tokenizer=llama_dir))
    calls = reply.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("search", {"q": "x"}), ("get_weather", {"city": "Oslo"})]
    kind, schema = constraints[0]
    assert kind == "json_schema" and json.loads(schema)["type"] == "array"
    # SGLang's proto has no json_object: the adapter sends the equivalent schema
    assert constraints[1] == ("json_schema", '{"type": "object"}') == constraints[2]


def test_enable_thinking_false_means_no_reasoning(llama, llama_dir):
    engine = ReferenceEngine(llama, mode="script", scripts=["Plain answer."], model_id="Qwen/Qwen3-8B",
                             tokenizer_dir=llama_dir)

    async def body(gw):
        return await gw.chat({"model": "Qwen/Qwen3-8B", "messages": USER,
                              "chat_template_kwargs": {"enable_thinking": False}})

    reply = run(with_gateway(engine, body))
    assert reply.choices[0].message.content == "Plain answer." and reply.choices[0].message.reasoning_content is None


def test_raw_generate_and_completions_with_token_prompts(llama, llama_dir):
    engine = ReferenceEngine(llama, tokenizer_dir=llama_dir)

    async def body(gw):
        outs = [o async for o in gw.generate(text="hello", sampling={"max_new_tokens": 4})]
        completion = await gw.complete({"model": "smg-reference", "prompt": [[1, 2, 3], [4, 5]], "max_tokens": 3, "n": 2})
        return outs, completion

    outs, completion = run(with_gateway(engine, body))
    assert sum(len(o.token_ids) for o in outs if not o.finished) == 4 and outs[-1].finish_reason == "length"
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert completion.usage.completion_tokens == 12 and completion.usage.prompt_tokens == 5


@pytest.mark.parametrize("body, error", [
    ({"model": "smg-reference", "messages": USER, "stop": [""]}, InvalidRequest),
    ({"model": "smg-reference", "messages": USER, "top_logprobs": 2}, InvalidRequest),
    ({"model": "smg-reference", "messages": USER, "logit_bias": {"abc": 1.0}}, InvalidRequest),
    ({"model": "smg-reference", "messages": USER, "tool_choice": "required"}, InvalidRequest),
    ({"model": "smg-reference", "messages": USER, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "no"}}},
     InvalidRequest),
    ({"model": "smg-reference", "messages": USER, "min_tokens": 9, "max_tokens": 2}, InvalidRequest),
    ({"model": "smg-reference", "prompt": "hi", "suffix": "tail"}, UnsupportedFeature),
    ({"model": "smg-reference", "messages": USER, "chat_template_kwargs": {"messages": []}}, InvalidRequest),
    ({"model": "smg-reference", "messages": USER, "chat_template_kwargs": {"special_tokens": {}}}, InvalidRequest),
    ({"model": "smg-reference", "messages": USER, "chat_template_kwargs": {"allow_template_file": True}}, InvalidRequest),
])
def test_bad_requests_raise_typed_errors(llama, llama_dir, body, error):
    engine = ReferenceEngine(llama, tokenizer_dir=llama_dir)

    async def check(gw):
        call = gw.complete if "prompt" in body else gw.chat
        with pytest.raises(error):
            await call(body)
        # the gateway still serves the next request
        return (await gw.chat({"model": "smg-reference", "messages": USER, "max_tokens": 2})).usage.completion_tokens

    assert run(with_gateway(engine, check)) == 2


def test_gateway_without_healthy_workers_and_before_start(llama_dir):
    async def main():
        gw = Gateway(["grpc://127.0.0.1:1"], tokenizer=llama_dir, model="smg-reference",
                     chat_template=str(template_path("llama3")))
        with pytest.raises(SmgError, match="not started"):
            await gw.chat({"model": "smg-reference", "messages": USER})
        async with gw:
            with pytest.raises(NoHealthyWorker):
                await gw.chat({"model": "smg-reference", "messages": USER})

    run(main())


def test_from_config(tmp_path, llama_dir):
    path = tmp_path / "gw.json"
    path.write_text(json.dumps({"workers": ["grpc://127.0.0.1:1"], "tokenizer": str(llama_dir), "policy": "least_load",
                                "cache": {"l0_max_bytes": 1024}, "pool": {"health_interval": 1.0}}))
    gw = Gateway.from_config(path)
    assert gw.pool.policy.name == "least_load" and gw.pool.config.health_interval == 1.0
    from smg import GatewayConfig

    typed = Gateway.from_config(GatewayConfig(workers=["grpc://127.0.0.1:1"], tokenizer=str(llama_dir),
                                              engine="vllm"))
    assert typed.pool.config.default_engine == "vllm" and typed.pool.workers == []  # workers join on start
    with pytest.raises(InvalidRequest, match="unknown field `wrokers`"):
        Gateway.from_config({"wrokers": []})
    with pytest.raises(InvalidRequest, match=r"unknown field `read_intervall` - at `\$.pool`"):
        Gateway.from_config({"pool": {"read_intervall": 0}})
    with pytest.raises(InvalidRequest, match=r"unknown field `l2_max_bytes` - at `\$.cache`"):
        Gateway.from_config({"cache": {"l2_max_bytes": 0}})
    with pytest.raises(InvalidRequest, match=r"Expected `object`, got `str` - at `\$.pool`"):
        Gateway.from_config({"pool": "fast"})
    assert Gateway.from_config({"pool": {"read_interval": 0}}).pool.config.read_interval == 0


def test_sampling_defaults_reach_the_engine(llama, llama_dir):
    reference = ReferenceEngine(llama, tokenizer_dir=llama_dir)
    seen: list[SamplingOptions] = []

    async def recording(request):
        seen.append(request.sampling)
        async for chunk in reference.generate(request):
            yield chunk

    async def body(gw):
        await gw.chat({"model": "smg-reference", "messages": USER, "max_tokens": 2})
        await gw.chat({"model": "smg-reference", "messages": USER, "max_completion_tokens": 3, "temperature": 0.2, "top_k": 5,
                       "min_p": 0.1, "repetition_penalty": 1.2, "seed": 9, "stop_token_ids": [7], "ignore_eos": True})

    run(with_gateway(EngineServer(recording, reference.model_info), body, tokenizer=llama_dir))
    first, second = seen
    assert (first.temperature, first.top_p, first.top_k, first.repetition_penalty, first.max_new_tokens) == (
        1.0, 1.0, -1, 1.0, 2)
    assert (second.top_k, second.max_new_tokens, second.seed, second.stop_token_ids, second.ignore_eos) == (
        5, 3, 9, (7,), True)
    assert abs(second.temperature - 0.2) < 1e-6 and abs(second.min_p - 0.1) < 1e-6


def test_required_tool_choice_with_an_unconstrained_engine_returns_text(llama, llama_dir):
    engine = ReferenceEngine(llama, mode="script", scripts=["I would rather chat."], tokenizer_dir=llama_dir)

    async def body(gw):
        request = {"model": "smg-reference", "messages": USER, "tools": TOOLS, "tool_choice": "required"}
        whole = await gw.chat(request)
        chunks = [c async for c in gw.chat_stream({**request, "stream": True})]
        return whole, "".join(c.choices[0].delta.content or "" for c in chunks)

    whole, streamed = run(with_gateway(engine, body))
    assert whole.choices[0].message.content == streamed == "I would rather chat."
    assert whole.choices[0].message.tool_calls is None and whole.choices[0].finish_reason == "stop"


def test_gateway_speaks_the_vllm_protocol_too(llama, llama_dir):
    engine = ReferenceEngine(llama, tokenizer_dir=llama_dir)

    async def body(gw):
        whole = await gw.chat({"model": "smg-reference", "messages": USER, "max_tokens": 6, "n": 2, "logprobs": True})
        streamed = [c async for c in gw.chat_stream({"model": "smg-reference", "messages": USER, "max_tokens": 6,
                                                     "stream": True, "stream_options": {"include_usage": True}})]
        return whole, streamed

    whole, streamed = run(with_gateway(engine, body, engine="vllm"))
    assert [c.finish_reason for c in whole.choices] == ["length", "length"]
    assert all(len(c.logprobs.content) == 6 for c in whole.choices)
    assert streamed[-1].usage.completion_tokens == 6


def test_token_counters_count_every_route(llama, llama_dir):
    engine = ReferenceEngine(llama, tokenizer_dir=llama_dir)

    async def body(gw):
        counts = []
        calls = [
            lambda: gw.chat({"model": "smg-reference", "messages": USER, "max_tokens": 3}),
            lambda: _drain(gw.chat_stream({"model": "smg-reference", "messages": USER, "max_tokens": 4, "stream": True})),
            lambda: gw.complete({"model": "smg-reference", "prompt": "hi", "max_tokens": 5}),
            lambda: _drain(gw.complete_stream({"model": "smg-reference", "prompt": "hi", "max_tokens": 6, "stream": True})),
        ]
        for call in calls:
            before = gw.metrics.counter("smg_completion_tokens_total")
            await call()
            counts.append(gw.metrics.counter("smg_completion_tokens_total") - before)
        return counts

    async def _drain(stream):
        async for _ in stream:
            pass

    assert run(with_gateway(engine, body)) == [3, 4, 5, 6]  # streams without include_usage count too


SSE_REQUESTS = [
    ("chat", {"max_tokens": 20, "stream_options": {"include_usage": True}}),
    ("chat", {"max_tokens": 40, "stop": ["numbers back", "XYZ"]}),
    ("chat", {"max_tokens": 40, "stop": ["oken"], "include_stop_str_in_output": True}),
    ("chat", {"max_tokens": 6, "n": 2}),  # not plain: the general path
    ("chat", {"max_tokens": 6, "logprobs": True}),
    ("completions", {"max_tokens": 15, "stream_options": {"include_usage": True}}),
    ("completions", {"max_tokens": 30, "stop": ["little as"]}),
    ("completions", {"max_tokens": 5, "echo": True}),
    ("completions", {"max_tokens": 5, "prompt": ["one", "two"]}),
]


@pytest.mark.parametrize("tokens_per_chunk", [1, 3])
@pytest.mark.parametrize("route,fields", SSE_REQUESTS)
def test_streams_are_the_general_pipelines(llama, llama_dir, route, fields, tokens_per_chunk):
    """chat_stream/complete_stream (chunk objects) and chat_sse/complete_sse (event bytes) take the
    compiled pump for plain requests; both give exactly the general pipeline's chunks (``_run``
    through the chunk builders), but for each request's own id and time. So does chat_sse with a
    server's sink (a plain stream's events then go to it from the data path), also when the sink
    says every other time that its client is full (the stream goes back to yielding)."""
    import re

    from smg.api import openai_chat, openai_completions
    from smg.protocols import openai as oa

    engine = ReferenceEngine(llama, tokens_per_chunk=tokens_per_chunk, tokenizer_dir=llama_dir)
    base = {"model": "smg-reference", "stream": True, "seed": 3, **fields}
    base.setdefault("messages", USER) if route == "chat" else base.setdefault("prompt", "Once upon a time")

    def event(chunk):
        return b"data: " + oa.encode(chunk) + b"\n\n"

    async def body(gw):
        if route == "chat":
            sse, stream = gw.chat_sse, gw.chat_stream
            general = openai_chat.chunks(gw, *await openai_chat.prepare(gw, dict(base), None))
        else:
            sse, stream = gw.complete_sse, gw.complete_stream
            general = openai_completions.chunks(gw, *openai_completions.prepare(gw, dict(base), None))
        events = [e async for e in sse(dict(base))]
        chunks = [event(c) async for c in stream(dict(base))]
        expected = [event(c) async for c in general]
        pushed, sunk = {}, 0
        for full_every in (0, 2):
            written = []

            def sink(piece):
                nonlocal sunk
                sunk += 1
                written.append(piece)
                return not full_every or len(written) % full_every != 0

            async for piece in sse(dict(base), sink=sink):
                written.append(piece)
            pushed[full_every] = written
        return events, chunks, expected, (pushed, sunk), gw.pool.stats()[0]

    events, chunks, expected, (pushed, sunk), stats = run(with_gateway(engine, body))
    plain = "n" not in fields and "echo" not in fields and "logprobs" not in fields and "prompt" not in fields
    if not plain:
        assert sunk == 0
    elif "stop" not in fields:  # (a stop string may end a stream before anything is pushed)
        assert sunk > 0
    if "stop" not in fields:  # a stop string ends a stream early: the engine is aborted, not served out
        assert stats["served"] == 5 * (len(base["prompt"]) if isinstance(base.get("prompt"), list) else 1)
    assert stats["in_flight"] == 0

    def same_ids(items):
        return [re.sub(rb'"created":\d+', b"", re.sub(rb'"id":"[a-z]+-[0-9a-f]+"', b"", e)) for e in items]

    # an SSE piece may hold several events (a stream's end: last event, usage, [DONE]): the events are the contract
    def split(pieces):
        return [e + b"\n\n" for e in b"".join(pieces).split(b"\n\n") if e]

    assert same_ids(split(events)) == same_ids(expected + [b"data: [DONE]\n\n"])
    for written in pushed.values():
        assert same_ids(split(written)) == same_ids(expected + [b"data: [DONE]\n\n"])
    assert same_ids(chunks) == same_ids(expected)
    assert len(expected) >= 2


@pytest.mark.parametrize("fields", [{}, {"n": 2}])
def test_the_asgi_stream_ends_its_body_with_the_done_event(llama, llama_dir, fields):
    """The ASGI app sends the SSE pieces as they come; the one ending in [DONE] ends the body
    (one write for the server), and nothing is sent after it."""
    from smg.asgi import create_app

    engine = ReferenceEngine(llama, tokenizer_dir=llama_dir)
    request = json.dumps({"model": "smg-reference", "messages": USER, "max_tokens": 12, "stream": True, **fields}).encode()

    async def body(gw):
        sent, requested = [], [{"type": "http.request", "body": request, "more_body": False}]

        async def receive():
            if requested:
                return requested.pop()
            await asyncio.Event().wait()  # the client stays

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
        await create_app(gw)(scope, receive, send)
        return sent

    sent = run(with_gateway(engine, body))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    bodies = sent[1:]
    assert all(m["type"] == "http.response.body" for m in bodies)
    assert [m["more_body"] for m in bodies] == [True] * (len(bodies) - 1) + [False]
    assert bodies[-1]["body"].endswith(b"data: [DONE]\n\n")
    if not fields:  # a plain stream's last event and [DONE] are one piece
        assert bodies[-1]["body"].startswith(b"data: {")
    events = b"".join(m["body"] for m in bodies).split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""] and sum(e.startswith(b"data: {") for e in events) >= 3


def test_a_requests_own_chat_template_needs_trust_and_is_never_a_file(llama, llama_dir, tmp_path):
    """As vLLM: a request's chat_template is refused unless the gateway trusts them; trusted, it is
    a template (or a named one), never a path to read, whether or not the file exists."""
    from smg.errors import ChatTemplateError

    engine = ReferenceEngine(llama, mode="script", scripts=["ok"], tokenizer_dir=llama_dir)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for requests")

    async def body(gw):
        template = "{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}"
        usage = (await gw.chat({"model": "smg-reference", "messages": USER, "chat_template": template})).usage
        default_usage = (await gw.chat({"model": "smg-reference", "messages": USER})).usage
        for path in (str(secret), str(tmp_path / "missing.txt"), ""):  # "": not the gateway's own template either
            with pytest.raises(ChatTemplateError, match="neither a template nor a known name") as info:
                await gw.chat({"model": "smg-reference", "messages": USER, "chat_template": path})
            assert "file" not in str(info.value)  # nor whether such a file exists
        return usage.prompt_tokens, default_usage.prompt_tokens

    async def untrusted(gw):
        with pytest.raises(InvalidRequest, match="trust_request_chat_template"):
            await gw.chat({"model": "smg-reference", "messages": USER, "chat_template": "{{ messages }}"})

    run(with_gateway(engine, untrusted))
    # the gateway's own template given as its text, so that "" taking it would render, not fail
    own, default = run(with_gateway(engine, body, trust_request_chat_template=True,
                                    chat_template=template_path("chatml_qwen3").read_text()))
    assert own == len(llama.encode("<<" + USER[0]["content"] + ">>", add_special_tokens=False)) != default
