"""Property: however the engine chunks its output, a streamed Responses / Messages answer's events
assemble into exactly the non-streamed answer (the stream is folded here by the APIs' own rules,
independently of smg's code), and sequence numbers count up from 0."""
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.engine import ReferenceEngine
from smg.engines.base import EngineOutput
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path
from test_gateway_e2e import SCRIPT, Stack

pytestmark = pytest.mark.end_to_end

SCRIPTS = [
    SCRIPT,  # reasoning, text, one call
    # reasoning, two calls (parallel), no text between
    "<think>\nTwo cities.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
    "</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
    # text only, with multi-byte characters split across tokens
    "<think>\nShort.\n</think>\n\nSunny in Paris: 18°C — très agréable ☀️ 日本",
]
TOOLS = {"type": "object", "properties": {"city": {"type": "string"}}}


@pytest.fixture(scope="module")
def setup():
    stack = Stack("smg")
    directory = bundled_tokenizer_dir("llama3.2")
    tokenizer = Tokenizer.from_dir(directory)
    engine = ReferenceEngine(tokenizer, mode="script", scripts=[SCRIPT], model_id="Qwen/Qwen3-8B",
                             tokenizer_dir=directory)
    _, parsed, _ = stack.serve(engine, chat_template=str(template_path("chatml_qwen3")))
    # a model without parsers: its streams take the compiled pump (plain.stream)
    plain_engine = ReferenceEngine(tokenizer, mode="script", scripts=[SCRIPT], model_id="smg-reference",
                                   tokenizer_dir=directory)
    _, plain, _ = stack.serve(plain_engine, chat_template=str(template_path("llama3")))
    yield stack, {False: parsed, True: plain}, tokenizer
    stack.close()


class _Scripted:
    """An engine stream (as WorkerPool.generate returns) of scripted outputs, on no worker."""

    call = worker = None

    def __init__(self, outputs) -> None:
        self._outputs = outputs

    def __aiter__(self):
        return self._outputs

    async def aclose(self) -> None:
        await self._outputs.aclose()

    def pushable(self):
        return None


def _chunked(ids, sizes):
    """The script's ids as engine messages of the given sizes (cycled), then the finish."""
    async def outputs():
        at, k = 0, 0
        while at < len(ids):
            size = sizes[k % len(sizes)]
            yield EngineOutput(0, ids[at:at + size])
            at, k = at + size, k + 1
        yield EngineOutput(0, [], finished=True, finish_reason="stop")

    return lambda request: _Scripted(outputs())


def _events(sse: bytes):
    out = []
    for block in sse.decode().split("\n\n"):
        if block.strip():
            kind, data = block.split("\n", 1)
            out.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def _fold_responses(events):
    """Output items from a Responses stream's added/delta/done events."""
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    items = {}
    done = {}
    for kind, e in events:
        if kind == "response.output_item.added":
            items[e["output_index"]] = dict(e["item"], text="")
        elif kind in ("response.output_text.delta", "response.reasoning_text.delta",
                      "response.function_call_arguments.delta"):
            items[e["output_index"]]["text"] += e["delta"]
        elif kind == "response.output_item.done":
            done[e["output_index"]] = e["item"]
    out = []
    for index in sorted(items):
        item = items[index]
        if item["type"] == "function_call":
            assert done[index]["arguments"] == item["text"]
            out.append({"type": "function_call", "name": item["name"], "text": item["text"]})
        else:
            text = done[index]["content"][0]["text"]
            assert text == item["text"]
            out.append({"type": item["type"], "text": text})
    assert events[-1][0] == "response.completed"
    return out


def _response_output(response):
    return [{"type": i["type"], "name": i["name"], "text": i["arguments"]} if i["type"] == "function_call"
            else {"type": i["type"], "text": i["content"][0]["text"]} for i in response["output"]]


def _fold_messages(events):
    blocks = {}
    for kind, e in events:
        if kind == "content_block_start":
            blocks[e["index"]] = dict(e["content_block"], acc="")
        elif kind == "content_block_delta":
            delta = e["delta"]
            blocks[e["index"]]["acc"] += delta.get("text") or delta.get("thinking") or delta.get("partial_json", "")
    out = []
    for index in sorted(blocks):
        b = blocks[index]
        if b["type"] == "tool_use":
            out.append({"type": "tool_use", "name": b["name"], "input": json.loads(b["acc"])})
        else:
            out.append({"type": b["type"], "text": b["acc"]})
    assert events[-1][0] == "message_stop"
    stop = next(e for kind, e in events if kind == "message_delta")["delta"]["stop_reason"]
    return out, stop


def _message_content(message):
    return [{"type": "tool_use", "name": b["name"], "input": b["input"]} if b["type"] == "tool_use"
            else {"type": b["type"], "text": b.get("text", b.get("thinking"))} for b in message["content"]]


async def _collect(events):
    return b"".join([e async for e in events])


@settings(max_examples=60, deadline=None)
@given(script=st.sampled_from(SCRIPTS), sizes=st.lists(st.integers(1, 7), min_size=1, max_size=6),
       plain=st.booleans(), stop=st.sampled_from([None, "Paris", "18"]))
def test_stream_assembles_into_the_response(setup, script, sizes, plain, stop):
    stack, gateways, tokenizer = setup
    gateway = gateways[plain]
    pool = gateway.default_model.pool
    pool.generate = _chunked(tokenizer.encode(script), sizes)
    try:
        request = {"model": "", "input": "Weather?", "store": False}
        if not plain:
            request["tools"] = [{"type": "function", "name": "get_weather", "parameters": TOOLS}]
        once = stack.call(gateway.responses(request))
        streamed = _events(stack.call(_collect(gateway.responses_sse(dict(request, stream=True)))))
        assert _fold_responses(streamed) == _response_output(once)
        assert msgspec.json.decode(msgspec.json.encode(streamed[-1][1]["response"]["usage"])) == once["usage"]

        message = {"model": "", "max_tokens": 4096, "messages": [{"role": "user", "content": "Weather?"}]}
        if not plain:
            message["tools"] = [{"name": "get_weather", "input_schema": TOOLS}]
        if stop:
            message["stop_sequences"] = [stop]
        once = stack.call(gateway.messages(message))
        content, reason = _fold_messages(_events(stack.call(_collect(gateway.messages_sse(dict(message,
                                                                                               stream=True))))))
        assert content == _message_content(once) and reason == once["stop_reason"]
    finally:
        del pool.generate
