"""Access logs (smg.access_log): one JSON line per request when its answer ends, on both HTTP servers
(a stream runs in the server task's context on smg's, in a task of its own under uvicorn)."""
import json
import logging
import time

import httpx
import pytest

from smg.config import GatewayConfig
from smg.engine import ReferenceEngine
from smg.gateway import Gateway
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path
from test_gateway_e2e import Stack

pytestmark = pytest.mark.end_to_end
KEY = {"authorization": "Bearer sk-secret-1"}
CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}


@pytest.fixture(scope="module", params=["smg", "uvicorn"])
def base(request):
    stack = Stack(request.param)
    directory = bundled_tokenizer_dir("llama3.2")

    async def start():
        engine = ReferenceEngine(Tokenizer.from_dir(directory), delay_ms=5, model_id="alpha", tokenizer_dir=directory)
        _, port = await stack.start_engine(engine)
        config = GatewayConfig.load({"workers": [f"grpc://127.0.0.1:{port}"], "model": "alpha",
                                     "chat_template": str(template_path("llama3")), "access_log": True,
                                     "api_keys": [{"name": "ops", "key": "sk-secret-1"}]})
        return await stack.start_web(Gateway(config=config))

    yield f"http://127.0.0.1:{stack.call(start())}"
    stack.close()


def lines(caplog, request_id):
    """The access lines of one request (by the X-Request-Id it sent), waiting for them a moment."""
    deadline = time.monotonic() + 5
    while True:
        found = [json.loads(r.getMessage()) for r in caplog.records
                 if r.name == "smg.access" and f'"request_id":"{request_id}"' in r.getMessage()]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_one_line_per_request_when_its_answer_ends(base, caplog):
    caplog.set_level(logging.INFO, logger="smg.access")
    reply = httpx.post(base + "/v1/chat/completions", json=CHAT, headers={**KEY, "x-request-id": "plain-1"})
    [line] = lines(caplog, "plain-1")
    usage = reply.json()["usage"]
    assert line["status"] == 200 and line["outcome"] == "ok" and line["key"] == "ops" and line["model"] == "alpha"
    assert line["prompt_tokens"] == usage["prompt_tokens"] and line["completion_tokens"] == usage["completion_tokens"]
    assert line["ttft_ms"] > 0 and line["duration_ms"] >= line["ttft_ms"] and line["path"] == "/v1/chat/completions"
    with httpx.stream("POST", base + "/v1/chat/completions", json={**CHAT, "stream": True},
                      headers={**KEY, "x-request-id": "stream-1"}) as stream:
        assert "data: [DONE]" in list(stream.iter_lines())
    [streamed] = lines(caplog, "stream-1")
    assert streamed["outcome"] == "ok" and streamed["completion_tokens"] == 5 and streamed["status"] == 200
    with httpx.stream("POST", base + "/v1/responses", json={"model": "alpha", "input": "Hi", "stream": True,
                                                            "max_output_tokens": 5},
                      headers={**KEY, "x-request-id": "resp-1"}) as stream:
        assert "event: response.incomplete" in list(stream.iter_lines())  # (its 5 tokens reached)
    [responses] = lines(caplog, "resp-1")  # (a stream that ends without [DONE])
    assert responses["outcome"] == "ok" and responses["completion_tokens"] == 5


def test_refusals_and_clients_that_leave_are_logged_without_the_key(base, caplog):
    caplog.set_level(logging.INFO, logger="smg.access")
    httpx.post(base + "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-wrong",
                                                                  "x-request-id": "refused-1"})
    [refused] = lines(caplog, "refused-1")
    assert refused["status"] == 401 and refused["key"] is None
    with httpx.stream("POST", base + "/v1/chat/completions", headers={**KEY, "x-request-id": "gone-1"},
                      json={**CHAT, "max_tokens": 400, "stream": True, "ignore_eos": True}) as stream:
        next(stream.iter_lines())
    [gone] = lines(caplog, "gone-1")
    assert gone["outcome"] == "client_gone" and gone["completion_tokens"] < 400
    everything = "\n".join(r.getMessage() for r in caplog.records if r.name == "smg.access")
    assert "sk-secret-1" not in everything and "sk-wrong" not in everything
