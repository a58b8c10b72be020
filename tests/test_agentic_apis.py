"""End to end: the Responses API (with stored responses and conversations) and the Anthropic
Messages API, through the official ``openai`` and ``anthropic`` SDKs, against smg's HTTP server and
uvicorn (the ASGI app) in front of the reference engine replaying scripted outputs in two parser families' formats (Qwen3:
``<think>`` + Hermes tool calls; DeepSeek-R1: ``</think>`` + DeepSeek V3 tool calls)."""
import json
import time

import anthropic
import httpx
import openai
import pytest

from smg.engine import ReferenceEngine
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path
from test_gateway_e2e import SCRIPT as QWEN_SCRIPT
from test_gateway_e2e import Stack

pytestmark = pytest.mark.end_to_end

DEEPSEEK_SCRIPT = ("The user wants Paris weather.\n</think>\n\nChecking now."
                   "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                   '{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>')
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
THINK = {"effort": "high"}  # the templates' thinking switch on (DeepSeek's template opens <think> then)
RESPONSE_TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
                   "parameters": WEATHER}]
MESSAGE_TOOLS = [{"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER}]


@pytest.fixture(scope="module", params=["smg", "uvicorn"])
def stack(request):
    s = Stack(request.param)
    yield s
    s.close()


def _clients(port):
    base = f"http://127.0.0.1:{port}"
    return (openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0),
            anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0), base)


@pytest.fixture(scope="module", params=["qwen3", "deepseek_r1"])
def family(request, stack, deepseek_dir):
    """(openai client, anthropic client, base url, gateway) for one parser family."""
    if request.param == "qwen3":
        directory = bundled_tokenizer_dir("llama3.2")
        engine = ReferenceEngine(Tokenizer.from_dir(directory), mode="script", scripts=[QWEN_SCRIPT],
                                 model_id="Qwen/Qwen3-8B", tokenizer_dir=directory)
        _, gateway, port = stack.serve(engine, chat_template=str(template_path("chatml_qwen3")))
    else:
        engine = ReferenceEngine(Tokenizer.from_dir(deepseek_dir), mode="script", scripts=[DEEPSEEK_SCRIPT],
                                 model_id="deepseek-ai/DeepSeek-R1", tokenizer_dir=deepseek_dir)
        _, gateway, port = stack.serve(engine, chat_template=str(template_path("deepseek_v3")))
    return (*_clients(port), gateway)


@pytest.fixture(scope="module")
def slow(stack, tmp_path_factory):
    """A slow plain-text engine behind a gateway storing in a SQLite file: background runs."""
    directory = bundled_tokenizer_dir("llama3.2")
    engine = ReferenceEngine(Tokenizer.from_dir(directory), delay_ms=20, model_id="slow", tokenizer_dir=directory)
    path = tmp_path_factory.mktemp("storage") / "smg.sqlite3"
    _, gateway, port = stack.serve(engine, chat_template=str(template_path("llama3")), storage=f"sqlite:///{path}")
    return (*_clients(port), gateway)


def _strip_ids(value):
    """A response's output / a message's content without the ids each run makes anew."""
    if isinstance(value, dict):
        return {k: _strip_ids(v) for k, v in value.items() if k not in ("id", "call_id", "parsed", "parsed_arguments")}
    if isinstance(value, list):
        return [_strip_ids(v) for v in value]
    return value


# ---- Responses -----------------------------------------------------------------------------------

def test_response_items_in_model_order(family):
    client = family[0]
    response = client.responses.create(model="", input="Weather in Paris?", tools=RESPONSE_TOOLS, reasoning=THINK)
    assert response.status == "completed" and response.object == "response"
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    reasoning, message, call = response.output
    assert "Paris weather" in reasoning.content[0].text
    assert message.content[0].text.strip() in ("Let me check.", "Checking now.")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id and response.usage.output_tokens_details.reasoning_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_streamed_response_is_the_created_one(family):
    client = family[0]
    kwargs = dict(model="", input="Weather in Paris?", tools=RESPONSE_TOOLS, store=False, reasoning=THINK)
    created = client.responses.create(**kwargs)
    kinds, numbers = [], []
    with client.responses.stream(**kwargs) as stream:
        for event in stream:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
        final = stream.get_final_response()
    assert numbers == list(range(len(numbers)))
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
                 "response.output_text.done", "response.reasoning_text.delta",
                 "response.function_call_arguments.delta", "response.function_call_arguments.done",
                 "response.output_item.done"):
        assert kind in kinds, kind
    assert _strip_ids(final.model_dump()["output"]) == _strip_ids(created.model_dump()["output"])
    with pytest.raises(openai.NotFoundError):  # store=False: nothing kept
        client.responses.retrieve(final.id)


def test_previous_response_id_continues_the_conversation(family):
    client, _, base, gateway = family
    first = client.responses.create(model="", input="Weather in Paris?", tools=RESPONSE_TOOLS,
                                    instructions="Be brief.", metadata={"turn": "1"}, reasoning=THINK)
    call = first.output[-1]
    second = client.responses.create(model="", previous_response_id=first.id, tools=RESPONSE_TOOLS,
                                     reasoning=THINK,
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "18C and sunny"}])
    assert second.previous_response_id == first.id
    # the same prompt as the whole conversation given inline: the first turn's input and its three
    # output items, in order, then the tool result (instructions are not carried over, as in OpenAI's)
    inline = client.responses.create(model="", tools=RESPONSE_TOOLS, reasoning=THINK, store=False, input=[
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}])
    assert second.usage.input_tokens == inline.usage.input_tokens > first.usage.input_tokens
    assert client.responses.retrieve(first.id).metadata == {"turn": "1"}
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["function_call_output"]
    listed = httpx.get(f"{base}/v1/responses/{first.id}/input_items", params={"order": "asc", "limit": 1}).json()
    assert listed["object"] == "list" and len(listed["data"]) == 1 and not listed["has_more"]
    deleted = httpx.delete(f"{base}/v1/responses/{second.id}")
    assert deleted.json() == {"id": second.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="", previous_response_id="resp_nope", input="hi")
    assert "resp_nope" in missing.value.message


def test_conversations(family):
    client = family[0]
    conversation = client.conversations.create(metadata={"topic": "weather"},
                                               items=[{"type": "message", "role": "user", "content": "Hello"}])
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "weather"}
    response = client.responses.create(model="", conversation=conversation.id, input="Weather in Paris?",
                                       tools=RESPONSE_TOOLS, reasoning=THINK)
    items = client.conversations.items.list(conversation.id).data
    # its earlier item, then this response's input and its three output items
    assert [i.type for i in items] == ["message", "message", "reasoning", "message", "function_call"]
    assert items[-1].id == response.output[-1].id
    added = client.conversations.items.create(conversation.id, items=[
        {"type": "function_call_output", "call_id": response.output[-1].call_id, "output": "sunny"}])
    assert len(added.data) == 1
    again = client.responses.create(model="", conversation=conversation.id, input="Thanks", tools=RESPONSE_TOOLS,
                                    reasoning=THINK)
    assert again.usage.input_tokens > response.usage.input_tokens
    item = client.conversations.items.retrieve(items[0].id, conversation_id=conversation.id)
    assert item.id == items[0].id
    client.conversations.items.delete(items[0].id, conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(items[0].id, conversation_id=conversation.id)
    client.conversations.update(conversation.id, metadata={"topic": "done"})
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "done"}
    client.conversations.delete(conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="", conversation=conversation.id, input="hi")


def test_bad_response_input(family):
    client = family[0]
    with pytest.raises(openai.BadRequestError) as unmatched:
        client.responses.create(model="", input=[{"type": "function_call_output", "call_id": "call_x",
                                                  "output": "?"}])
    assert "answers no function_call" in unmatched.value.message
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="", input=[{"type": "message", "role": "robot", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="", input=[{"type": "function_call", "name": "f"}])
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="", input="x", tools=[{"type": "web_search"}])
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="", input="x", extra_body={"not_a_field": 1})


def test_background_response_runs_and_cancels(slow):
    client = slow[0]
    queued = client.responses.create(model="slow", input="Tell me a story", background=True, max_output_tokens=8)
    assert queued.status == "queued"
    deadline = time.monotonic() + 30
    while (done := client.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert done.status == "incomplete" and done.incomplete_details.reason == "max_output_tokens"
    assert done.usage.output_tokens == 8 and done.output[0].content[0].text
    long = client.responses.create(model="slow", input="Tell me a long story", background=True,
                                   max_output_tokens=2000)
    time.sleep(0.2)
    assert client.responses.retrieve(long.id).status == "in_progress"
    cancelled = client.responses.cancel(long.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(long.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="slow", input="x", background=True, store=False)


def test_storage_down_is_a_503(stack, postgres):
    """A gateway on PostgreSQL: when the server goes down, storing requests answer 503 and store
    nothing; when it is back, they work again."""
    directory = bundled_tokenizer_dir("llama3.2")
    engine = ReferenceEngine(Tokenizer.from_dir(directory), model_id="pg", tokenizer_dir=directory)
    _, gateway, port = stack.serve(engine, chat_template=str(template_path("llama3")), storage=postgres.url)
    client = _clients(port)[0]
    kept = client.responses.create(model="pg", input="hi", max_output_tokens=4)
    postgres.stop()
    postgres.wait_down()
    try:
        with pytest.raises(openai.InternalServerError) as down:
            client.responses.create(model="pg", input="hi", max_output_tokens=4)
        assert down.value.status_code == 503
        with pytest.raises(openai.InternalServerError):
            client.responses.retrieve(kept.id)
        chat = client.chat.completions.create(model="pg", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert chat.choices[0].message.content  # the rest of the gateway serves on
    finally:
        postgres.start()
    assert client.responses.retrieve(kept.id).id == kept.id
    assert len(client.responses.create(model="pg", previous_response_id=kept.id, input="more",
                                       max_output_tokens=4).output) == 1


# ---- Anthropic Messages --------------------------------------------------------------------------

def test_message_blocks_in_model_order(family):
    claude = family[1]
    message = claude.messages.create(model="", max_tokens=2048, messages=[{"role": "user", "content": "Paris?"}],
                                     tools=MESSAGE_TOOLS, thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert "Paris weather" in message.content[0].thinking
    assert message.content[2].input == {"city": "Paris"} and message.content[2].name == "get_weather"
    assert message.stop_reason == "tool_use" and message.usage.output_tokens > 0
    assert message.role == "assistant" and message.type == "message"


def test_streamed_message_is_the_created_one(family):
    claude = family[1]
    kwargs = dict(model="", max_tokens=2048, messages=[{"role": "user", "content": "Paris?"}], tools=MESSAGE_TOOLS)
    created = claude.messages.create(**kwargs)
    kinds = []
    with claude.messages.stream(**kwargs) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds
    assert _strip_ids(final.model_dump()["content"]) == _strip_ids(created.model_dump()["content"])
    assert final.stop_reason == created.stop_reason == "tool_use"


def test_message_turns_with_tool_results_and_count_tokens(family):
    claude = family[1]
    first = claude.messages.create(model="", max_tokens=512, messages=[{"role": "user", "content": "Paris?"}],
                                   tools=MESSAGE_TOOLS)
    history = [{"role": "user", "content": "Paris?"},
               {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[-1].id,
                                             "content": "18C"}]}]
    second = claude.messages.create(model="", max_tokens=512, messages=history, tools=MESSAGE_TOOLS,
                                    system=[{"type": "text", "text": "Be brief."}])
    counted = claude.messages.count_tokens(model="", messages=history, tools=MESSAGE_TOOLS,
                                           system=[{"type": "text", "text": "Be brief."}])
    assert counted.input_tokens == second.usage.input_tokens > first.usage.input_tokens


def test_message_stop_reasons(family):
    claude = family[1]
    short = claude.messages.create(model="", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    stopped = claude.messages.create(model="", max_tokens=512, messages=[{"role": "user", "content": "hi"}],
                                     stop_sequences=["Paris"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "Paris"


def test_message_errors_in_anthropic_shape(family):
    claude, base = family[1], family[2]
    with pytest.raises(anthropic.BadRequestError) as unmatched:
        claude.messages.create(model="", max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_x", "content": "?"}]}])
    assert unmatched.value.body["type"] == "error"
    assert unmatched.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):  # this model takes no images
        claude.messages.create(model="", max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="", max_tokens=2000, messages=[{"role": "user", "content": "x"}],
                               thinking={"type": "enabled", "budget_tokens": 10})
    raw = httpx.post(f"{base}/v1/messages", json={"model": "", "messages": [{"role": "user", "content": "x"}]},
                     headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert raw.status_code == 400 and raw.json()["type"] == "error" and "max_tokens" in raw.json()["error"]["message"]


def test_engine_failure_mid_stream_in_each_apis_shape(stack):
    """An engine that goes away mid-stream: Messages ends with Anthropic's error event (the SDK
    raises it), Responses with ``response.failed`` (stored as failed)."""
    directory = bundled_tokenizer_dir("llama3.2")

    def serve():
        engine = ReferenceEngine(Tokenizer.from_dir(directory), delay_ms=10, model_id="dies", tokenizer_dir=directory)
        server, _, port = stack.serve(engine, chat_template=str(template_path("llama3")))
        return server, _clients(port)

    server, (_, claude, _) = serve()
    with pytest.raises(anthropic.APIStatusError) as failed:
        with claude.messages.stream(model="dies", max_tokens=2000, messages=[{"role": "user", "content": "x"}]) as s:
            for k, _ in enumerate(s):
                if k == 5:
                    stack.call(server.stop(grace=0))
    assert failed.value.body["type"] == "error" and failed.value.body["error"]["type"] in ("api_error",
                                                                                           "overloaded_error")

    server, (client, _, _) = serve()
    kinds = []
    with client.responses.stream(model="dies", input="x", max_output_tokens=2000) as s:
        for event in s:
            kinds.append(event.type)
            if len(kinds) == 6:
                stack.call(server.stop(grace=0))
            if event.type == "response.failed":
                failed_response = event.response
    assert kinds[-1] == "response.failed" and failed_response.error.message
    assert client.responses.retrieve(failed_response.id).status == "failed"


def test_request_fields_reach_the_engine(stack, family):
    """What each API's fields become: engine constraints, sampling, stops, the thinking switch."""
    from smg.api import anthropic as messages_api
    from smg.api import responses as responses_api

    gateway = family[3]

    def responses(**fields):
        return stack.call(responses_api.prepare(gateway, {"model": "", "input": "x", **fields}, None, None)).p

    p = responses(text={"format": {"type": "json_schema", "name": "w", "schema": WEATHER}}, max_output_tokens=7,
                  temperature=0.5, top_p=0.9)
    assert p.sampling.constraint == ("json_schema", json.dumps(WEATHER))
    assert (p.sampling.max_new_tokens, p.sampling.temperature, p.sampling.top_p) == (7, 0.5, 0.9)
    assert responses(text={"format": {"type": "json_object"}}).sampling.constraint == ("json_object", "")
    assert responses(reasoning={"effort": "none"}).prompt_text != responses(reasoning={"effort": "high"}).prompt_text
    forced = responses(tools=RESPONSE_TOOLS, tool_choice={"type": "function", "name": "get_weather"})
    assert forced.forced_tool == "get_weather" and forced.sampling.constraint[0] == "json_schema"
    assert responses(tools=RESPONSE_TOOLS, tool_choice="required").required_tools
    assert responses(tools=RESPONSE_TOOLS, parallel_tool_calls=False).single_tool_call

    def message(**fields):
        request = {"model": "", "max_tokens": 2048, "messages": [{"role": "user", "content": "x"}], **fields}
        return stack.call(messages_api.prepare(gateway, request, None, None))[1]

    p = message(tools=MESSAGE_TOOLS, tool_choice={"type": "any", "disable_parallel_tool_use": True},
                stop_sequences=["END"], top_k=5, temperature=0.2, metadata={"user_id": "u1"})
    assert p.required_tools and p.single_tool_call and "END" in p.stop.stop
    assert (p.sampling.top_k, p.sampling.temperature, p.sampling.max_new_tokens, p.routing_key) == (5, 0.2, 2048, "u1")
    assert message(tools=MESSAGE_TOOLS, tool_choice={"type": "tool", "name": "get_weather"}).forced_tool == "get_weather"
    assert message(tools=MESSAGE_TOOLS, tool_choice={"type": "none"}).tool_parser is None
    off = message(thinking={"type": "disabled"}).prompt_text
    assert off != message(thinking={"type": "enabled", "budget_tokens": 1024}).prompt_text


def test_truncation_auto_drops_the_oldest_turns(stack):
    directory = bundled_tokenizer_dir("llama3.2")
    engine = ReferenceEngine(Tokenizer.from_dir(directory), model_id="small", tokenizer_dir=directory)
    _, _, port = stack.serve(engine, chat_template=str(template_path("llama3")), max_context_length=400)
    client = _clients(port)[0]
    words = "the quick brown fox jumps over the lazy dog " * 10  # ~100 tokens a turn
    previous = None
    for turn in range(3):
        previous = client.responses.create(model="small", input=f"{turn}: {words}", max_output_tokens=4,
                                           previous_response_id=previous).id
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="small", input=words, max_output_tokens=4, previous_response_id=previous)
    assert refused.value.code == "context_length_exceeded"
    fitted = client.responses.create(model="small", input=words, max_output_tokens=4, previous_response_id=previous,
                                     truncation="auto")
    assert fitted.status == "incomplete" and 0 < fitted.usage.input_tokens <= 396


def test_scripted_model_calls_a_tool_then_answers(stack):
    """The reference engine's ``script_by_turn``: the first script before any tool result, the
    next after each, the last from then on, whatever the template's tool-result markers."""
    directory = bundled_tokenizer_dir("llama3.2")
    tokenizer = Tokenizer.from_dir(directory)
    answer = "It is 18C and sunny in Paris."
    engine = ReferenceEngine(tokenizer, mode="script", scripts=[QWEN_SCRIPT, answer], script_by_turn=True,
                             model_id="Qwen/Qwen3-8B", tokenizer_dir=directory)
    _, _, port = stack.serve(engine, chat_template=str(template_path("chatml_qwen3")))
    client = _clients(port)[0]
    first = client.responses.create(model="", input="Weather in Paris?", tools=RESPONSE_TOOLS)
    assert first.output[-1].type == "function_call"
    result = {"type": "function_call_output", "call_id": first.output[-1].call_id, "output": "18C, sunny"}
    second = client.responses.create(model="", previous_response_id=first.id, tools=RESPONSE_TOOLS, input=[result])
    assert [item.type for item in second.output] == ["message"] and second.output[0].content[0].text == answer
    third = client.responses.create(model="", previous_response_id=second.id, tools=RESPONSE_TOOLS,
                                    input="And tomorrow?")
    assert third.output[-1].content[0].text == answer  # the last script from then on
    call = {"id": "a", "type": "function", "function": {"name": "f", "arguments": {}}}
    turn = [{"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "a", "content": "1"}, {"role": "user", "content": "more"}]
    for template in ("llama3", "deepseek_v3", "chatml_qwen3"):
        for results in (0, 1, 2):
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": "x"}, *turn * results],
                                                   chat_template=str(template_path(template)),
                                                   add_generation_prompt=True)
            assert engine.tool_results(tokenizer.encode(prompt)) == results, (template, results)
