"""The HTTP surface around the APIs, through the ASGI app (httpx's ASGI transport): tokenize and
detokenize, structured-output fields, parallel_tool_calls, reasoning tokens, readiness, request
ids, and hostile input (deep nesting, a request's own chat template)."""
import asyncio
import json
import time

import httpx
import pytest

from smg import Gateway
from smg.asgi import create_app
from smg.engine import EngineServer, ReferenceEngine
from smg.tokenizer.templates import template_path

USER = [{"role": "user", "content": "Weather in Paris?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
TWO_CALLS = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
THINKING = "<think>\nThe user asks about the weather in Paris today.\n</think>\n\nIt is sunny."


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def serving(engine, body, generate=None, **gateway_kwargs):
    """Run ``body(client, gateway)`` against the ASGI app of a gateway in front of ``engine``."""
    server = EngineServer(generate or engine.generate, engine.model_info, engine._tokenizer_dir)
    port = await server.start()
    gateway_kwargs.setdefault("chat_template", str(template_path("chatml_qwen3")))
    gateway = Gateway([f"grpc://127.0.0.1:{port}"], **gateway_kwargs)
    try:
        async with gateway, httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(gateway)),
                                              base_url="http://smg") as client:
            return await body(client, gateway)
    finally:
        await server.stop()


def test_tokenize_and_detokenize_in_vllm_and_sglang_shapes(llama, llama_dir):
    engine = ReferenceEngine(llama, tokenizer_dir=llama_dir, max_context_length=4096)

    async def body(client, gw):
        post = client.post
        single = (await post("/v1/tokenize", json={"model": "smg-reference", "prompt": "Hello world"})).json()
        bare = (await post("/tokenize", json={"prompt": "Hello world", "add_special_tokens": False,
                                              "return_token_strs": True})).json()
        batch = (await post("/v1/tokenize", json={"prompt": ["a b", "c"]})).json()
        chat = (await post("/v1/tokenize", json={"messages": USER})).json()
        text = (await post("/v1/detokenize", json={"tokens": single["tokens"]})).json()
        texts = (await post("/detokenize", json={"tokens": [[9906], [1917]]})).json()
        errors = [await post("/v1/detokenize", json={"tokens": [-1]}),
                  await post("/v1/detokenize", json={"tokens": [10**9]}),
                  await post("/v1/tokenize", json={"prompt": "x", "messages": USER}),
                  await post("/v1/tokenize", json={"model": "nope", "prompt": "x"}),
                  await post("/v1/tokenize", json={"messages": USER, "chat_template_kwargs": {"tools": []}})]
        return single, bare, batch, chat, text, texts, errors

    single, bare, batch, chat, text, texts, errors = run(serving(engine, body, tokenizer=llama_dir))
    ids = llama.encode("Hello world", add_special_tokens=True)
    assert single == {"tokens": ids, "count": len(ids), "max_model_len": 4096}
    plain = llama.encode("Hello world")
    assert bare["tokens"] == plain and bare["token_strs"] == [llama.id_to_token(i) for i in plain]
    assert batch["tokens"] == [llama.encode("a b", add_special_tokens=True), llama.encode("c", add_special_tokens=True)]
    assert batch["count"] == [len(t) for t in batch["tokens"]]
    prompt = llama.apply_chat_template(USER, chat_template=str(template_path("chatml_qwen3")))
    assert chat["tokens"] == llama.encode(prompt) and chat["count"] == len(chat["tokens"])
    assert text["prompt"] == text["text"] == llama.decode(ids, skip_special_tokens=False)
    assert texts["text"] == [llama.decode([9906]), llama.decode([1917])]
    assert [e.status_code for e in errors] == [400, 400, 400, 404, 400]  # (the last was a 500: a reserved kwarg)
    assert errors[3].json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("fields,constraint", [
    ({"response_format": {"type": "json_object"}}, ("json_schema", '{"type": "object"}')),
    ({"regex": "[0-9]+"}, ("regex", "[0-9]+")),
    ({"guided_regex": "a|b"}, ("regex", "a|b")),
    ({"ebnf": 'root ::= "x"'}, ("ebnf", 'root ::= "x"')),
    ({"guided_grammar": 'root ::= "y"'}, ("ebnf", 'root ::= "y"')),
    ({"guided_json": {"type": "object"}}, ("json_schema", '{"type": "object"}')),
    ({"guided_json": '{"type": "array"}'}, ("json_schema", '{"type": "array"}')),
    ({"structural_tag": {"structures": []}}, ("structural_tag", '{"structures": []}')),
    ({"guided_choice": ["yes", "no?"]}, ("regex", r"(yes|no\?)")),
])
def test_structured_output_fields_reach_the_engine_as_its_constraint(llama, llama_dir, fields, constraint):
    engine = ReferenceEngine(llama, mode="script", scripts=["42"], tokenizer_dir=llama_dir)
    seen = []

    async def generate(request):
        seen.append(request.sampling.constraint)
        async for chunk in engine.generate(request):
            yield chunk

    async def body(client, gw):
        chat = await client.post("/v1/chat/completions", json={"messages": USER, **fields})
        completion = await client.post("/v1/completions", json={"prompt": "x", **fields})
        return chat.status_code, completion.status_code

    assert run(serving(engine, body, generate, tokenizer=llama_dir)) == (200, 200)
    assert seen == [constraint, constraint]


@pytest.mark.parametrize("fields", [
    {"regex": "a", "ebnf": "b"},
    {"response_format": {"type": "json_object"}, "guided_json": {}},
    {"guided_choice": []},
    {"tools": TOOLS, "tool_choice": "required", "regex": "a"},
    {"stream": True, "stream_options": {"continuous_usage_stats": True}},
])
def test_conflicting_or_unsupported_output_options_are_a_400(llama, llama_dir, fields):
    engine = ReferenceEngine(llama, mode="script", scripts=["42"], tokenizer_dir=llama_dir)

    async def body(client, gw):
        reply = await client.post("/v1/chat/completions", json={"messages": USER, **fields})
        return reply.status_code, reply.json()["error"]

    status, error = run(serving(engine, body, tokenizer=llama_dir))
    assert status == 400 and error["type"] in ("invalid_request_error", "unsupported_feature"), error


def test_parallel_tool_calls_false_returns_at_most_one_call(llama, llama_dir):
    engine = ReferenceEngine(llama, mode="script", scripts=[TWO_CALLS], model_id="Qwen/Qwen3-8B",
                             tokenizer_dir=llama_dir)

    async def body(client, gw):
        base = {"messages": USER, "tools": TOOLS}
        both = (await client.post("/v1/chat/completions", json=base)).json()
        one = (await client.post("/v1/chat/completions", json={**base, "parallel_tool_calls": False})).json()
        stream = await client.post("/v1/chat/completions", json={**base, "parallel_tool_calls": False, "stream": True})
        events = [json.loads(line[6:]) for line in stream.text.split("\n\n") if line.startswith("data: {")]
        return both, one, events

    both, one, events = run(serving(engine, body, tokenizer=llama_dir))
    assert [json.loads(c["function"]["arguments"])["city"] for c in both["choices"][0]["message"]["tool_calls"]] == [
        "Paris", "Oslo"]
    calls = one["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"])["city"] for c in calls] == ["Paris"]
    streamed = [tc for e in events for c in e["choices"] for tc in c["delta"].get("tool_calls") or []]
    assert {tc["index"] for tc in streamed} == {0}
    assert json.loads("".join(tc["function"]["arguments"] for tc in streamed)) == {"city": "Paris"}


def test_usage_counts_reasoning_tokens_when_a_reasoning_parser_ran(llama, llama_dir):
    engine = ReferenceEngine(llama, mode="script", scripts=[THINKING], model_id="Qwen/Qwen3-8B",
                             tokenizer_dir=llama_dir)

    async def body(client, gw):
        whole = (await client.post("/v1/chat/completions", json={"messages": USER})).json()
        stream = await client.post("/v1/chat/completions", json={"messages": USER, "stream": True,
                                                                  "stream_options": {"include_usage": True}})
        last = json.loads([line for line in stream.text.split("\n\n") if line.startswith("data: {")][-1][6:])
        off = (await client.post("/v1/chat/completions", json={"messages": USER, "separate_reasoning": False})).json()
        return whole, last, off

    whole, last, off = run(serving(engine, body, tokenizer=llama_dir))
    reasoning = whole["usage"]["completion_tokens_details"]["reasoning_tokens"]
    thinking = len(llama.encode("<think>\nThe user asks about the weather in Paris today.\n</think>"))
    assert thinking - 3 <= reasoning <= thinking + 1 and reasoning < whole["usage"]["completion_tokens"]
    assert last["usage"]["completion_tokens_details"]["reasoning_tokens"] == reasoning
    assert "completion_tokens_details" not in off["usage"]


def test_readiness_names_the_model_without_a_healthy_worker(llama, llama_dir):
    engine = ReferenceEngine(llama, tokenizer_dir=llama_dir)

    async def main():
        server = engine.server()
        port = await server.start()
        gateway = Gateway(models=[{"name": "up", "workers": [f"grpc://127.0.0.1:{port}"], "tokenizer": str(llama_dir)},
                                  {"name": "down", "workers": ["grpc://127.0.0.1:1"], "tokenizer": str(llama_dir)}],
                          chat_template=None)
        try:
            async with gateway, httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(gateway)),
                                                  base_url="http://smg") as client:
                health = await client.get("/health")
                ready = await client.get("/readiness")
                generate = await client.get("/health_generate")
                await gateway.remove_model("down")
                ready_after = await client.get("/readiness")
                generate_after = await client.get("/health_generate")
                return health, ready, generate, ready_after, generate_after
        finally:
            await server.stop()

    health, ready, generate, ready_after, generate_after = run(main())
    assert health.status_code == 200
    assert ready.status_code == 503 and ready.json()["not_ready"] == ["down"]
    assert generate.status_code == 503 and list(generate.json()["failed"]) == ["down"]
    assert ready_after.status_code == 200 and generate_after.json() == {"status": "ok", "failed": {}}


def test_the_asgi_app_echoes_or_makes_a_request_id_and_prefixes_the_engine_id(llama, llama_dir):
    engine = ReferenceEngine(llama, mode="script", scripts=["ok"], tokenizer_dir=llama_dir)
    ids = []

    async def generate(request):
        ids.append(request.request_id)
        async for chunk in engine.generate(request):
            yield chunk

    async def body(client, gw):
        given = await client.post("/v1/chat/completions", json={"messages": USER}, headers={"X-Request-Id": "abc-1"})
        made = await client.post("/v1/chat/completions", json={"messages": USER, "stream": True})
        refused = await client.post("/v1/chat/completions", json={"messages": USER},
                                    headers={"X-Request-Id": "x" * 500})
        return given.headers["x-request-id"], made.headers["x-request-id"], refused.headers["x-request-id"]

    given, made, refused = run(serving(engine, body, generate, tokenizer=llama_dir))
    assert given == "abc-1" and ids[0].startswith("abc-1-")
    assert made and made != given and refused != "x" * 500  # too long for an engine id: a fresh one


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("where", ["content", "tool parameters", "response_format"])
def test_deeply_nested_json_is_a_400_not_a_500(llama, llama_dir, where):
    engine = ReferenceEngine(llama, mode="script", scripts=["ok"], tokenizer_dir=llama_dir)
    deep = _nested(100_000)
    if where == "content":
        body = '{"messages": [{"role": "user", "content": %s}]}' % deep
    elif where == "tool parameters":
        body = ('{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": '
                '{"name": "f", "parameters": {"a": %s}}}]}' % deep)
    else:
        body = ('{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", '
                '"json_schema": {"name": "r", "schema": {"a": %s}}}}' % deep)

    async def main(client, gw):
        bad = await client.post("/v1/chat/completions", content=body.encode())
        good = await client.post("/v1/chat/completions", json={"messages": USER})
        return bad, good

    bad, good = run(serving(engine, main, tokenizer=llama_dir))
    assert bad.status_code == 400 and "nested too deeply" in bad.json()["error"]["message"]
    assert good.status_code == 200


@pytest.mark.parametrize("template,fragment", [
    ("{{ 'a' * 1000000000 }}", "more than"),
    ("{% for i in range(100000000) %}{% endfor %}", "range"),
    ("{% for i in range(99999) %}{% for j in range(99999) %}{{ i }}{% endfor %}{% endfor %}", "more than"),
    # the sandbox's operation count or the time limit, whichever a loaded machine reaches first
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% set x = j %}{% endfor %}{% endfor %}",
     ("too long", "took more than 1 s")),
    ("{{ 10 ** 100000000 }}", "exponent"),
])
def test_a_requests_own_template_renders_off_the_loop_within_limits(llama, llama_dir, template, fragment):
    """A hostile template of a request is a 400 within the configured time and output size, and
    a concurrent request is served meanwhile."""
    engine = ReferenceEngine(llama, mode="script", scripts=["ok"], tokenizer_dir=llama_dir)

    async def body(client, gw):
        started = time.monotonic()
        hostile = asyncio.create_task(client.post("/v1/chat/completions",
                                                  json={"messages": USER, "chat_template": template}))
        await asyncio.sleep(0.05)
        good = await client.post("/v1/chat/completions", json={"messages": USER})
        good_at = time.monotonic() - started
        bad = await hostile
        return bad, good, good_at, time.monotonic() - started

    from smg import GatewayConfig

    # 64 KiB of output is reached in ~13k loop turns, far within the second even on a loaded
    # machine, so the output-size cases never race the time limit
    config = GatewayConfig(workers=[], trust_request_chat_template=True, template_timeout=1.0,
                           template_max_chars=1 << 16)

    async def main():
        server = engine.server()
        port = await server.start()
        from smg.config import replace

        gateway = Gateway(config=replace(config, workers=[f"grpc://127.0.0.1:{port}"], tokenizer=str(llama_dir),
                                         chat_template=str(template_path("chatml_qwen3"))))
        try:
            async with gateway, httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(gateway)),
                                                  base_url="http://smg", timeout=30) as client:
                return await body(client, gateway)
        finally:
            await server.stop()

    bad, good, good_at, total = run(main())
    fragments = (fragment,) if isinstance(fragment, str) else fragment
    assert bad.status_code == 400 and any(f in bad.json()["error"]["message"] for f in fragments), bad.json()
    assert good.status_code == 200 and good_at < 1.0
    assert total < 3.0


def test_a_thinking_model_calling_a_tool_before_closing_its_reasoning(llama, llama_dir):
    """Qwen3 thinking: the prompt opened <think>; a <tool_call> before </think> ends the reasoning,
    and the call is a call (streamed and not)."""
    script = 'The user wants the weather, so I call the tool.\n<tool_call>\n' \
             '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    engine = ReferenceEngine(llama, mode="script", scripts=[script], model_id="Qwen/Qwen3-30B-A3B-Thinking-2507",
                             tokenizer_dir=llama_dir)

    async def body(client, gw):
        whole = (await client.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS})).json()
        stream = await client.post("/v1/chat/completions", json={"messages": USER, "tools": TOOLS, "stream": True})
        events = [json.loads(line[6:]) for line in stream.text.split("\n\n") if line.startswith("data: {")]
        return whole, events

    whole, events = run(serving(engine, body, tokenizer=llama_dir))
    message = whole["choices"][0]["message"]
    assert message["reasoning_content"] == "The user wants the weather, so I call the tool.\n"
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == [
        ("get_weather", {"city": "Paris"})]
    assert whole["choices"][0]["finish_reason"] == "tool_calls" and not message.get("content")
    deltas = [c["delta"] for e in events for c in e["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == message["reasoning_content"]
    streamed = [tc for d in deltas for tc in d.get("tool_calls") or []]
    assert json.loads("".join(tc["function"]["arguments"] for tc in streamed)) == {"city": "Paris"}
