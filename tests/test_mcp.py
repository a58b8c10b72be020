"""End to end: MCP tools through the Responses API. Real MCP servers written with the ``mcp`` SDK
(tests/mcp_tool_server.py) run as their own processes, one over streamable HTTP on 127.0.0.1 and
one over stdio (started by the gateway); the official ``openai`` SDK is the client; the reference
engine plays a model whose scripts (picked by the number of tool results in the prompt) call a
tool, then answer."""
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from smg.engine import ReferenceEngine
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path
from test_gateway_e2e import Stack, free_port

pytestmark = pytest.mark.end_to_end

SERVER = str(Path(__file__).with_name("mcp_tool_server.py"))
ANSWER = "It is sunny in Paris."


def call(name: str, **arguments) -> str:
    """One tool call as a Qwen3 (Hermes) model writes it."""
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


WEATHER_CALL = "<think>\nThe user wants the weather.\n</think>\n\nLet me check.\n" + call("weather", city="Paris")


@pytest.fixture(scope="module")
def cancel_log(tmp_path_factory):
    return tmp_path_factory.mktemp("mcp") / "cancelled.log"


@pytest.fixture(scope="module")
def web(cancel_log):
    """The streamable-HTTP MCP server (label ``web``): its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, SERVER, "http", str(port), "--label", "web", "--cancel-log",
                                str(cancel_log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    process.kill()
    process.wait()


STDIO = {"label": "local", "command": sys.executable, "args": [SERVER, "stdio", "--label", "local"]}


@pytest.fixture(scope="module")
def stack():
    """smg's HTTP server (the loop is the same behind uvicorn: ``both`` runs what the servers do
    differently, streaming and disconnects, on each)."""
    s = Stack("smg")
    yield s
    s.close()


@pytest.fixture(scope="module", params=["smg", "uvicorn"])
def both(request):
    s = Stack(request.param)
    yield s
    s.close()


def serve(stack, *scripts, **gateway_kwargs):
    """A gateway in front of a scripted model; its openai client, base URL and gateway."""
    directory = bundled_tokenizer_dir("llama3.2")
    engine = ReferenceEngine(Tokenizer.from_dir(directory), mode="script", scripts=list(scripts),
                             script_by_turn=True, model_id="Qwen/Qwen3-8B", tokenizer_dir=directory)
    gateway_kwargs.setdefault("url_allow_list", ["127.0.0.1"])
    _, gateway, port = stack.serve(engine, chat_template=str(template_path("chatml_qwen3")),
                                   mcp_servers=[STDIO], **gateway_kwargs)
    base = f"http://127.0.0.1:{port}"
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0), base, gateway


@pytest.fixture(scope="module")
def weather(stack):
    """A model that calls ``weather``, then answers."""
    return serve(stack, WEATHER_CALL, ANSWER)


def mcp(web_url: str, **fields) -> dict:
    return {"type": "mcp", "server_label": "web", "server_url": web_url, "require_approval": "never", **fields}


def strip_ids(value):
    if isinstance(value, dict):
        return {k: strip_ids(v) for k, v in value.items() if k not in ("id", "approval_request_id", "parsed")}
    if isinstance(value, list):
        return [strip_ids(v) for v in value]
    return value


def test_lists_calls_and_answers(weather, web):
    client, base, _ = weather
    response = client.responses.create(model="", input="Weather in Paris?", tools=[mcp(web)])
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["mcp_list_tools", "reasoning", "message", "mcp_call",
                                                       "message"]
    listed, _, _, called, answer = response.output
    assert listed.server_label == "web" and listed.error is None
    assert {"add", "weather", "fail", "slow", "big", "headers"} == {tool.name for tool in listed.tools}
    assert next(t for t in listed.tools if t.name == "weather").input_schema["required"] == ["city"]
    assert called.server_label == "web" and called.name == "weather" and json.loads(called.arguments) == {
        "city": "Paris"}
    assert called.output == "web: sunny in Paris, 21 C" and called.error is None and called.status == "completed"
    assert answer.content[0].text == ANSWER
    # usage covers both of the model's turns: the second prompt holds the first and the result
    assert response.usage.input_tokens > 2 * 300 and response.usage.output_tokens > 10
    # stored with its MCP items; a follow-up goes on from them without listing the tools again
    assert client.responses.retrieve(response.id).model_dump()["output"] == response.model_dump()["output"]
    follow = client.responses.create(model="", previous_response_id=response.id, input="And tomorrow?",
                                     tools=[mcp(web)])
    assert [item.type for item in follow.output] == ["message"] and follow.output[0].content[0].text == ANSWER


def test_operator_configured_stdio_server_by_label_with_allowed_tools(weather):
    client, _, _ = weather
    tool = {"type": "mcp", "server_label": "local", "require_approval": "never", "allowed_tools": ["weather", "add"]}
    response = client.responses.create(model="", input="Weather in Paris?", tools=[tool])
    listed, called = response.output[0], response.output[3]
    assert sorted(t.name for t in listed.tools) == ["add", "weather"]  # only the allowed ones are offered
    assert called.server_label == "local" and called.output == "local: sunny in Paris, 21 C"
    assert response.output[-1].content[0].text == ANSWER


def test_a_call_outside_allowed_tools_is_not_run(weather, web):
    client, _, _ = weather
    response = client.responses.create(model="", input="Weather in Paris?",
                                       tools=[mcp(web, allowed_tools=["add"])])
    called = response.output[3]
    assert called.type == "mcp_call" and called.status == "failed" and called.output is None
    assert "not allowed" in called.error
    assert response.output[-1].content[0].text == ANSWER  # the model read the error and went on


def test_approval_required_then_given_or_declined(weather, web):
    client, _, _ = weather
    tools = [mcp(web, require_approval={"always": {"tool_names": ["weather"]}})]
    asked = client.responses.create(model="", input="Weather in Paris?", tools=tools)
    assert asked.status == "completed" and asked.output[-1].type == "mcp_approval_request"
    request = asked.output[-1]
    assert request.name == "weather" and json.loads(request.arguments) == {"city": "Paris"}
    approve = {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}
    approved = client.responses.create(model="", previous_response_id=asked.id, tools=tools, input=[approve])
    assert [item.type for item in approved.output] == ["mcp_call", "message"]
    assert approved.output[0].approval_request_id == request.id
    assert approved.output[0].output == "web: sunny in Paris, 21 C" and approved.output[1].content[0].text == ANSWER
    with pytest.raises(openai.BadRequestError, match="answered already"):
        client.responses.create(model="", previous_response_id=approved.id, tools=tools, input=[approve])
    decline = {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": False,
               "reason": "not now"}
    declined = client.responses.create(model="", previous_response_id=asked.id, tools=tools, input=[decline])
    assert [item.type for item in declined.output] == ["message"]  # nothing ran; the model read the refusal
    with pytest.raises(openai.BadRequestError, match="names no mcp_approval_request"):
        client.responses.create(model="", tools=tools, input=[dict(approve, approval_request_id="mcpr_nope")])
    # "never" for the tool by name overrides the "always" default of the object form
    free = client.responses.create(model="", input="Weather in Paris?",
                                   tools=[mcp(web, require_approval={"never": {"tool_names": ["weather"]}})])
    assert free.output[3].type == "mcp_call" and free.output[3].status == "completed"


def test_a_failing_tool_is_an_error_the_model_sees(stack, web):
    client, _, _ = serve(stack, call("fail", reason="quota"), ANSWER)
    response = client.responses.create(model="", input="Go", tools=[mcp(web)])
    failed = response.output[1]
    assert failed.type == "mcp_call" and failed.status == "failed" and "web refused: quota" in failed.error
    assert response.status == "completed" and response.output[-1].content[0].text == ANSWER
    kinds = [event.type for event in client.responses.create(model="", input="Go", tools=[mcp(web)], stream=True)]
    assert "response.mcp_call.failed" in kinds and "response.mcp_call.completed" not in kinds


def test_a_slow_tool_past_its_timeout_is_cancelled(stack, web, cancel_log):
    from smg.config import McpConfig

    client, _, gateway = serve(stack, call("slow", seconds=30), ANSWER)
    gateway.mcp.pool.config = McpConfig(call_timeout=0.5)  # (this gateway's pool: its own sessions)
    started = time.monotonic()
    response = client.responses.create(model="", input="Go", tools=[mcp(web)])
    assert time.monotonic() - started < 10
    timed_out = response.output[1]
    assert timed_out.status == "failed" and "took more than 0.5 s" in timed_out.error
    assert response.output[-1].content[0].text == ANSWER
    deadline = time.monotonic() + 5
    while "cancelled 30" not in (cancel_log.read_text() if cancel_log.exists() else ""):
        assert time.monotonic() < deadline, "the server's tool call was not cancelled"
        time.sleep(0.05)


def test_a_client_that_disconnects_cancels_the_tool_call_in_flight(both, web, cancel_log):
    client, base, _ = serve(both, call("slow", seconds=20), ANSWER)
    body = {"model": "", "input": "Go", "tools": [mcp(web)], "stream": True}
    with httpx.stream("POST", f"{base}/v1/responses", json=body, timeout=30) as reply:
        lines = reply.iter_lines()  # (held: closing it, as a loop over iter_lines() does, closes the response)
        for line in lines:
            if "response.mcp_call_arguments.done" in line:
                break  # the call runs once the model's turn ends: go away while it does
        deadline = time.monotonic() + 30
        while "started 20" not in (cancel_log.read_text() if cancel_log.exists() else ""):
            assert time.monotonic() < deadline, "the tool call never started"
            time.sleep(0.05)
    deadline = time.monotonic() + 30
    while "cancelled 20" not in (cancel_log.read_text() if cancel_log.exists() else ""):
        assert time.monotonic() < deadline, "the tool call outlived its client"
        time.sleep(0.05)


def test_an_unreachable_server_is_a_failed_listing_not_an_error(weather):
    client, _, _ = weather
    closed = f"http://127.0.0.1:{free_port()}/mcp"
    response = client.responses.create(model="", input="Weather in Paris?",
                                       tools=[{"type": "mcp", "server_label": "gone", "server_url": closed,
                                               "require_approval": "never"}])
    listed = response.output[0]
    assert listed.type == "mcp_list_tools" and listed.tools == [] and "cannot connect" in listed.error
    events = [e.type for e in client.responses.create(model="", input="Hi", stream=True, tools=[
        {"type": "mcp", "server_label": "gone", "server_url": closed, "require_approval": "never"}])]
    assert "response.mcp_list_tools.failed" in events and events[-1] == "response.completed"


def test_two_servers_in_one_request(stack, web):
    both = "Checking both.\n" + call("weather", city="Oslo") + "\n" + call("add", a=2, b=3)
    client, _, _ = serve(stack, both, "Done.")
    tools = [mcp(web, allowed_tools=["weather"]),
             {"type": "mcp", "server_label": "local", "require_approval": "never", "allowed_tools": ["add"]}]
    response = client.responses.create(model="", input="Go", tools=tools)
    kinds = [item.type for item in response.output]
    assert kinds == ["mcp_list_tools", "mcp_list_tools", "message", "mcp_call", "mcp_call", "message"]
    calls = [item for item in response.output if item.type == "mcp_call"]
    assert [(c.server_label, c.output) for c in calls] == [("web", "web: sunny in Oslo, 21 C"), ("local", "local: 5")]
    with pytest.raises(openai.BadRequestError, match="both offer a tool named"):
        client.responses.create(model="", input="Go", tools=[mcp(web), tools[1] | {"allowed_tools": None}])


def test_streamed_events_in_order_assemble_the_response(both, web):
    client, _, _ = serve(both, WEATHER_CALL, ANSWER)
    created = client.responses.create(model="", input="Weather in Paris?", tools=[mcp(web)], store=False)
    events = []
    with client.responses.stream(model="", input="Weather in Paris?", tools=[mcp(web)], store=False) as stream:
        for event in stream:
            events.append(event)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    mcp_kinds = [k for k in kinds if "mcp" in k or k.startswith("response.output_item")]
    assert mcp_kinds[:4] == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                             "response.mcp_list_tools.completed", "response.output_item.done"]
    start = kinds.index("response.mcp_call.in_progress")
    assert kinds[start - 1] == "response.output_item.added"
    assert kinds[start + 1:].index("response.mcp_call_arguments.done") < kinds[start + 1:].index(
        "response.mcp_call.completed")
    assert "response.mcp_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.mcp_call_arguments.delta")
    assert json.loads(deltas) == {"city": "Paris"}
    indexes = [e.output_index for e in events if e.type == "response.output_item.done"]
    assert indexes == list(range(5))
    assert strip_ids(final.model_dump()["output"]) == strip_ids(created.model_dump()["output"])


def test_the_call_limit_ends_the_response_incomplete(stack, web):
    client, _, _ = serve(stack, call("add", a=1, b=1))  # a model that never stops calling
    response = client.responses.create(model="", input="Go", tools=[mcp(web)], max_tool_calls=2)
    calls = [item for item in response.output if item.type == "mcp_call"]
    assert [c.status for c in calls] == ["completed", "completed", "incomplete"]
    assert "limit of 2 tool calls" in calls[-1].error
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_tool_calls"


def test_background_and_conversation_responses_run_the_loop(weather, web):
    client, _, _ = weather
    queued = client.responses.create(model="", input="Weather in Paris?", tools=[mcp(web)], background=True)
    deadline = time.monotonic() + 20
    while (done := client.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert done.status == "completed" and [i.type for i in done.output][-2:] == ["mcp_call", "message"]
    conversation = client.conversations.create()
    client.responses.create(model="", input="Weather in Paris?", tools=[mcp(web)], conversation=conversation.id)
    items = [item.type for item in client.conversations.items.list(conversation.id)]
    assert items == ["message", "mcp_list_tools", "reasoning", "message", "mcp_call", "message"]
    with pytest.raises(openai.BadRequestError, match="max_tool_calls"):
        client.responses.create(model="", input="Go", tools=[mcp(web)], max_tool_calls=-1)


def test_client_functions_and_mcp_tools_in_one_request(stack, web):
    mixed = call("weather", city="Rome") + "\n" + call("book_table", city="Rome")
    client, _, _ = serve(stack, mixed, ANSWER)
    function = {"type": "function", "name": "book_table", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}
    response = client.responses.create(model="", input="Go", tools=[mcp(web), function])
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "function_call"]
    assert response.output[1].status == "completed"  # run; the client's call ends the response
    result = {"type": "function_call_output", "call_id": response.output[2].call_id, "output": "booked"}
    follow = client.responses.create(model="", previous_response_id=response.id, input=[result],
                                     tools=[mcp(web), function])
    assert follow.output[-1].content[0].text == ANSWER
    with pytest.raises(openai.BadRequestError, match="has the name of an MCP server's tool"):
        client.responses.create(model="", input="Go", tools=[mcp(web), dict(function, name="weather")])


def test_request_headers_reach_the_server_and_are_never_echoed(stack, web):
    client, _, gateway = serve(stack, call("headers"), ANSWER)
    tool = mcp(web, headers={"X-Team": "blue"}, authorization="secret-token")
    response = client.responses.create(model="", input="Go", tools=[tool])
    seen = json.loads(response.output[1].output)
    assert seen == {"authorization": "Bearer secret-token", "x-team": "blue"}
    echoed = response.model_dump(exclude_none=True)["tools"][0]
    assert "headers" not in echoed and "authorization" not in echoed
    stored = client.responses.retrieve(response.id).model_dump(exclude_none=True)["tools"][0]
    assert "headers" not in stored and "authorization" not in stored
    other = client.responses.create(model="", input="Go", tools=[mcp(web, headers={"X-Team": "red"})])
    assert json.loads(other.output[1].output) == {"x-team": "red"}  # its own session, not blue's


def test_request_server_urls_pass_the_ssrf_rule(stack, web):
    client, _, _ = serve(stack, WEATHER_CALL, ANSWER, url_allow_list=[])
    with pytest.raises(openai.BadRequestError, match="loopback") as refused:
        client.responses.create(model="", input="Go", tools=[mcp(web)])
    assert "--allow-url-host" in refused.value.message
    for bad, message in (({"server_url": "file:///etc/passwd"}, "http"),
                         ({"server_url": None}, "no MCP server is configured"),
                         ({"require_approval": "sometimes"}, "require_approval"),
                         ({"connector_id": "x"}, "connector"), ({"bogus": 1}, "unknown mcp tool fields")):
        tool = {k: v for k, v in {**mcp(web), **bad}.items() if v is not None}
        with pytest.raises(openai.BadRequestError, match=message):
            client.responses.create(model="", input="Go", tools=[tool])
    # the operator's servers are trusted: no SSRF rule for them
    assert client.responses.create(model="", input="Go", tools=[
        {"type": "mcp", "server_label": "local", "require_approval": "never"}]).status == "completed"
