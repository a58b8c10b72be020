"""End to end: the official `openai` client against the ASGI app served on 127.0.0.1 by uvicorn and
by smg's own HTTP/1.1 server (every test runs against both), in front of the reference engine over
gRPC."""
import asyncio
import json
import socket
import threading
import time

import httpx
import openai
import pytest
import uvicorn

from smg.asgi import create_app
from smg.engine import ReferenceEngine
from smg.gateway import Gateway
from smg.http_server import HttpServer
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path

# Whole gateways over HTTP; the twins' pass covers the same kernels in test_gateway (CI time).
pytestmark = pytest.mark.end_to_end

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}}, "required": ["city"]}}}]
SCRIPT = ("<think>\nThe user asks about Paris weather.\n</think>\n\nLet me check.\n<tool_call>\n"
          '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """Engines, gateways and HTTP servers (``server``: "uvicorn" or "smg") on one background event loop."""

    def __init__(self, server: str):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engines = []  # engine servers
        self.webs = []  # (HTTP server, its task: uvicorn's)

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def start_engine(self, engine: ReferenceEngine) -> tuple[object, int]:
        server = engine.server()
        port = await server.start()
        self.engines.append(server)
        return server, port

    async def start_web(self, gateway: Gateway) -> int:
        """``gateway`` served over HTTP (the server starts it); the port."""
        if self.server == "smg":
            web = HttpServer(create_app(gateway), port=0)
            http_port, task = await web.start(), None
        else:
            http_port = free_port()
            config = uvicorn.Config(create_app(gateway), host="127.0.0.1", port=http_port, log_level="warning",
                                    lifespan="on", loop="none")
            web = uvicorn.Server(config)
            task = asyncio.create_task(web.serve())
            while not web.started:
                await asyncio.sleep(0.02)
        self.webs.append((web, task))
        return http_port

    def serve(self, engine: ReferenceEngine, **gateway_kwargs):
        async def start():
            server, port = await self.start_engine(engine)
            gateway = Gateway([f"grpc://127.0.0.1:{port}"], **gateway_kwargs)
            return server, gateway, await self.start_web(gateway)

        return self.call(start())

    def close(self):
        async def stop():
            for web, task in self.webs:
                if task is None:
                    await web.close()
                else:
                    web.should_exit = True
                    await task
            for server in self.engines:
                await server.stop()

        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


def stream_in_thread(base: str, model: str, tokens: int, lines: list, headers: dict | None = None
                     ) -> threading.Thread:
    """A streamed chat completion of ``tokens`` tokens read on a thread into ``lines``; returns once
    its first line arrived."""
    started = threading.Event()

    def run():
        with httpx.stream("POST", base + "/v1/chat/completions", headers=headers, timeout=30, json={
                "model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": tokens,
                "stream": True, "ignore_eos": True}) as reply:
            for line in reply.iter_lines():
                started.set()
                lines.append(line)

    thread = threading.Thread(target=run)
    thread.start()
    started.wait(10)
    return thread


@pytest.fixture(scope="module", params=["uvicorn", "smg"])
def stack(request):
    s = Stack(request.param)
    yield s
    s.close()


@pytest.fixture(scope="module")
def demo(stack):
    directory = bundled_tokenizer_dir("llama3.2")
    engine = ReferenceEngine(Tokenizer.from_dir(directory), delay_ms=2, model_id="smg-demo", tokenizer_dir=directory)
    server, gateway, port = stack.serve(engine, chat_template=str(template_path("llama3")))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    return client, server, gateway, port


@pytest.fixture(scope="module")
def qwen(stack):
    directory = bundled_tokenizer_dir("llama3.2")
    engine = ReferenceEngine(Tokenizer.from_dir(directory), mode="script", scripts=[SCRIPT],
                             model_id="Qwen/Qwen3-8B", tokenizer_dir=directory)
    _, gateway, port = stack.serve(engine, chat_template=str(template_path("chatml_qwen3")))
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0), gateway


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me about serving."}]


def test_models_health_metrics(demo):
    client, _, gateway, port = demo
    assert [m.id for m in client.models.list()] == ["smg-demo"]
    assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
    ready = httpx.get(f"http://127.0.0.1:{port}/readiness")
    assert ready.status_code == 200 and ready.json()["models"]["smg-demo"]["workers"][0]["healthy"]
    assert httpx.get(f"http://127.0.0.1:{port}/health_generate").json() == {"status": "ok", "failed": {}}
    client.chat.completions.create(model="smg-demo", messages=MESSAGES, max_tokens=3)
    for _ in client.chat.completions.create(model="smg-demo", messages=MESSAGES, max_tokens=5, stream=True):
        pass
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'smg_requests_total{route="chat",stream="false"}' in metrics
    assert 'smg_requests_total{route="chat",stream="true"}' in metrics
    assert "smg_time_to_first_token_seconds_bucket" in metrics and 'smg_worker_healthy{model="smg-demo",worker=' in metrics
    assert 'smg_tokenizer_cache_hits_total{level="l0",model="smg-demo"}' in metrics
    assert 'smg_worker_in_flight{model="smg-demo",worker=' in metrics

    def value(series):  # one series' value
        return float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith(series + " ")))

    model = '{model="smg-demo"}'
    assert value("smg_completion_tokens_total" + model) >= 8 and value("smg_prompt_tokens_total" + model) > 0
    worker = next(line.split('worker="')[1].split('"')[0] for line in metrics.splitlines()
                  if line.startswith("smg_worker_healthy{"))
    by_worker = f'{{model="smg-demo",worker="{worker}"}}'
    assert value("smg_inter_token_latency_seconds_count" + by_worker) >= 1  # per-token latency, one per stream
    assert value("smg_e2e_latency_seconds_count" + by_worker) >= 2 and value("smg_retries_total" + model) == 0
    assert value('smg_responses_total{status="200"}') >= 2
    assert f'smg_time_to_first_token_seconds_bucket{{le="0.005",model="smg-demo",worker="{worker}"}}' in metrics
    assert 'smg_worker_consecutive_failures{model="smg-demo",worker=' in metrics


def test_non_streaming_chat(demo):
    client = demo[0]
    reply = client.chat.completions.create(model="smg-demo", messages=MESSAGES, max_tokens=12)
    choice = reply.choices[0]
    assert choice.finish_reason == "length" and choice.message.role == "assistant"
    assert len(choice.message.content) > 20
    assert reply.usage.completion_tokens == 12 and reply.usage.prompt_tokens > 10
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 12
    assert reply.usage.prompt_tokens_details.cached_tokens == 0


def test_streaming_equals_non_streaming_and_usage(demo):
    client = demo[0]
    whole = client.chat.completions.create(model="smg-demo", messages=MESSAGES, max_tokens=16, seed=3)
    chunks = list(client.chat.completions.create(model="smg-demo", messages=MESSAGES, max_tokens=16, seed=3,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16


def test_stop_strings_and_n(demo):
    client = demo[0]
    reply = client.chat.completions.create(model="smg-demo", messages=MESSAGES, max_tokens=40, n=3, seed=1,
                                           stop=[" the"])
    assert len(reply.choices) == 3 and [c.index for c in reply.choices] == [0, 1, 2]
    for choice in reply.choices:
        assert choice.finish_reason == "stop" and " the" not in choice.message.content
    streamed = list(client.chat.completions.create(model="smg-demo", messages=MESSAGES, max_tokens=40, n=3, seed=1,
                                                   stop=[" the"], stream=True))
    for index in range(3):
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices[0].index == index)
        assert text == reply.choices[index].message.content


def test_logprobs(demo):
    reply = demo[0].chat.completions.create(model="smg-demo", messages=MESSAGES, max_tokens=4, logprobs=True,
                                            top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert len(content) == 4 and "".join(t.token for t in content) == reply.choices[0].message.content
    assert all(t.logprob == 0.0 and t.top_logprobs[0].token == t.token for t in content)


def test_completions_api(demo):
    client = demo[0]
    reply = client.completions.create(model="smg-demo", prompt=["Hello", "Bye"], max_tokens=5, echo=True)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].text.startswith("Hello") and reply.choices[1].text.startswith("Bye")
    streamed = list(client.completions.create(model="smg-demo", prompt="Hello", max_tokens=5, stream=True))
    assert streamed[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].text for c in streamed)


@pytest.mark.parametrize("body, status, fragment", [
    ({"model": "smg-demo", "messages": [{"role": "user", "content": "x"}], "temperature": 7}, 400, "temperature"),
    ({"model": "smg-demo", "messages": [{"role": "user", "content": "x"}], "frobnicate": 1}, 400, "frobnicate"),
    ({"model": "smg-demo", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ({"model": "smg-demo", "messages": []}, 400, "messages"),
    ({"model": "smg-demo", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     400, "does not take images"),
    ({"model": "smg-demo", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}, 400, "tool parser"),
    ({"model": "smg-demo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**7}, 400, "context"),
])
def test_errors_are_openai_shaped(demo, body, status, fragment):
    port = demo[3]
    response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    # OpenAI's code names an overlong prompt; other errors carry the status
    assert error["code"] == ("context_length_exceeded" if fragment == "context" else status)
    assert fragment in error["message"] and error["type"]


def test_bad_json_and_unknown_route(demo):
    port = demo[3]
    response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
    response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                          content=b'{"model": "smg-demo", "messages": [{"role": "user", "content": "\xa9"}]}')
    assert response.status_code == 400 and "UTF-8" in response.json()["error"]["message"]
    assert httpx.get(f"http://127.0.0.1:{port}/v2/nothing").status_code == 404
    with pytest.raises(openai.BadRequestError):
        demo[0].chat.completions.create(model="smg-demo", messages=[{"role": "user", "content": "x"}], n=0)


def test_client_disconnect_aborts_the_engine(demo):
    _, server, _, port = demo
    body = {"model": "smg-demo", "messages": MESSAGES, "max_tokens": 3000, "stream": True}
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=10) as response:
        for i, line in enumerate(response.iter_lines()):
            if i == 0:
                request_id = json.loads(line[6:])["id"]  # the engine's request id too
            if i > 3:
                break
    deadline = time.time() + 20  # (a loaded 2-core CI machine, the pure-Python pass)
    while time.time() < deadline and (request_id not in server.aborted or server.active_requests):
        time.sleep(0.05)
    assert request_id in server.aborted and server.active_requests == 0


def test_tools_and_reasoning_non_streaming(qwen):
    client = qwen[0]
    reply = client.chat.completions.create(model="Qwen/Qwen3-8B", messages=[{"role": "user", "content": "Paris?"}],
                                           tools=TOOLS)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert message.reasoning_content == "The user asks about Paris weather.\n"
    assert message.content == "Let me check.\n"
    call = message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_") and call.type == "function"


def test_tools_and_reasoning_streaming(qwen):
    client = qwen[0]
    chunks = list(client.chat.completions.create(model="Qwen/Qwen3-8B", tools=TOOLS, stream=True,
                                                 messages=[{"role": "user", "content": "Paris?"}]))
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert reasoning == "The user asks about Paris weather.\n" and content == "Let me check.\n"
    assert calls[0].function.name == "get_weather" and calls[0].id
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_and_separate_reasoning_off(qwen):
    client = qwen[0]
    reply = client.chat.completions.create(model="Qwen/Qwen3-8B", tools=TOOLS, tool_choice="none",
                                           messages=[{"role": "user", "content": "Paris?"}],
                                           extra_body={"separate_reasoning": False})
    message = reply.choices[0].message
    assert message.tool_calls is None and "<tool_call>" in message.content and "<think>" in message.content
    assert reply.choices[0].finish_reason == "stop"


def test_an_engine_failure_mid_stream_ends_that_stream_with_an_error_event(stack):
    """The plain (pump) path: events already sent stay sent, the stream ends with an error event,
    and the next request on the same gateway is served."""
    directory = bundled_tokenizer_dir("llama3.2")

    class FailsOnce(ReferenceEngine):
        failed = False

        async def generate(self, request):
            async for i, chunk in _enumerate(super().generate(request)):
                if i == 4 and not FailsOnce.failed:
                    FailsOnce.failed = True
                    raise RuntimeError("the accelerator fell over")
                yield chunk

    engine = FailsOnce(Tokenizer.from_dir(directory), model_id="smg-demo", tokenizer_dir=directory)
    _, _, port = stack.serve(engine, chat_template=str(template_path("llama3")))
    body = {"model": "smg-demo", "messages": MESSAGES, "max_tokens": 50, "stream": True}
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=10) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200 and len(events) >= 2
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
    error = json.loads(events[-1])["error"]
    assert error["type"] and error["message"]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(model="smg-demo", messages=MESSAGES, max_tokens=5, stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"


async def _enumerate(items):
    i = 0
    async for item in items:
        yield i, item
        i += 1
