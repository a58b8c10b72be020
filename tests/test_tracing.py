"""OpenTelemetry tracing (smg.tracing): a span per request under the client's traceparent, with
its stages as children, the trace context passed to the engine in gRPC metadata; and `smg serve
--tracing` exporting OTLP/HTTP to a collector (a real HTTP server here, decoding the protobuf
that the OTLP exporter sends)."""
import http.server
import os
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_gateway_e2e import Stack, free_port

from smg.config import GatewayConfig
from smg.engine import ReferenceEngine
from smg.gateway import Gateway
from smg.tokenizer.templates import template_path

pytestmark = pytest.mark.end_to_end

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def spans():
    """The process's SDK provider, as an application that traces installs it (set once per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def test_a_request_span_continues_the_clients_trace_and_reaches_the_engine(spans, llama, llama_dir):
    stack = Stack("smg")
    engine = ReferenceEngine(llama, model_id="m", delay_ms=2)
    engine_servers = []
    try:
        async def start():
            server, port = await stack.start_engine(engine)
            engine_servers.append(server)
            gateway = Gateway(config=GatewayConfig(
                workers=[f"grpc://127.0.0.1:{port}"], tokenizer=str(llama_dir), model="m",
                chat_template=str(template_path("llama3")), tracing=True, max_concurrent_requests=4))
            return await stack.start_web(gateway)

        base = f"http://127.0.0.1:{stack.call(start())}"
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
        traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
        stream = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5, stream=True,
                                                extra_headers={"traceparent": traceparent})
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2)  # no traceparent: a new trace
        deadline = time.monotonic() + 10
        while sum(s.kind == trace.SpanKind.SERVER for s in spans.get_finished_spans()) < 2:
            assert time.monotonic() < deadline, "the request spans did not end"
            time.sleep(0.05)
    finally:
        stack.close()
    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    streamed = next(s for s in servers if format(s.context.trace_id, "032x") == TRACE_ID)
    assert format(streamed.parent.span_id, "016x") == CLIENT_SPAN and streamed.name == "POST /v1/chat/completions"
    assert streamed.attributes["gen_ai.request.model"] == "m" and streamed.attributes["gen_ai.usage.output_tokens"] == 5
    assert streamed.attributes["http.response.status_code"] == 200
    children = {s.name: s for s in finished if s.parent is not None and s.parent.span_id == streamed.context.span_id}
    assert set(children) == {"queue", "tokenize", "route", "time_to_first_token", "stream"}
    assert children["time_to_first_token"].end_time <= children["stream"].start_time + 1000
    assert streamed.start_time <= children["tokenize"].start_time <= children["stream"].end_time <= streamed.end_time
    other = next(s for s in servers if s is not streamed)
    assert format(other.context.trace_id, "032x") != TRACE_ID and other.parent is None
    # the engine got the request span's context: it continues this trace, under the gateway's span
    sent = [p for p in engine_servers[0].trace_parents if TRACE_ID in p]
    assert sent == [f"00-{TRACE_ID}-{format(streamed.context.span_id, '016x')}-01"]


class Collector(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        Collector.received.append((self.path, request))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_smg_serve_exports_spans_over_otlp_as_the_otel_variables_say():
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    port = free_port()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_address[1]}",
           "OTEL_SERVICE_NAME": "gateway-under-test", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    proc = subprocess.Popen([sys.executable, "-m", "smg", "serve", "--demo", "--tracing", "--storage", "memory",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout.readline().startswith("smg serving")
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                           json={"model": "smg-demo", "messages": MESSAGES, "max_tokens": 3})
        assert reply.status_code == 200
        deadline = time.monotonic() + 15
        while not Collector.received:
            assert time.monotonic() < deadline, "no spans reached the collector"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
        collector.shutdown()
    path, request = Collector.received[0]
    assert path == "/v1/traces"
    resource = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    names = {s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert resource["service.name"] == "gateway-under-test"
    assert {"POST /v1/chat/completions", "tokenize", "route", "time_to_first_token", "stream"} <= names
