"""smg.mcp: the session pool against real MCP servers (tests/mcp_tool_server.py over streamable
HTTP, SSE and stdio, run as processes), and a request's tool entries."""
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smg.config import McpConfig, McpServerConfig
from smg.errors import InvalidRequest, UnsupportedFeature
from smg.mcp import McpToolset, McpUnavailable, ServerTarget, SessionPool
from smg.mcp.tools import Approval
from smg.outbound import AllowList
from test_gateway_e2e import free_port

pytestmark = pytest.mark.end_to_end
SERVER = str(Path(__file__).with_name("mcp_tool_server.py"))


class Process:
    """An MCP test server process on a port (``transport``: http or sse), restartable."""

    def __init__(self, transport: str, port: int | None = None) -> None:
        self.transport, self.port = transport, port or free_port()
        self.process = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, SERVER, self.transport, str(self.port), "--label", "p"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline and self.process.poll() is None, "the server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/" + ("mcp" if self.transport == "http" else "sse")


@pytest.fixture(scope="module")
def http_server():
    server = Process("http")
    yield server
    server.stop()


def run(coro):
    return asyncio.run(coro)


def test_targets_pick_the_transport_from_the_url():
    assert ServerTarget.http("http://h/mcp").transport == "streamable_http"
    assert ServerTarget.http("https://h/v1/sse/").transport == "sse"
    assert ServerTarget.http("http://h/mcp", {"B": "2", "A": "1"}) == ServerTarget.http("http://h/mcp", {"A": "1",
                                                                                                        "B": "2"})
    assert ServerTarget.http("http://h/mcp", {"A": "1"}) != ServerTarget.http("http://h/mcp", {"A": "2"})
    assert ServerTarget.stdio("python", ["s.py"]).describe() == "python s.py"


def test_sessions_are_reused_per_server_and_headers_and_closed_when_idle(http_server):
    async def main():
        pool = SessionPool(McpConfig(idle_timeout=0.3))
        try:
            alice = ServerTarget.http(http_server.url, {"Authorization": "Bearer alice"})
            bob = ServerTarget.http(http_server.url, {"Authorization": "Bearer bob"})
            for _ in range(3):
                assert (await pool.call(alice, "add", {"a": 1, "b": 2})).output == "p: 3"
            assert len(pool) == 1
            seen = await asyncio.gather(pool.call(alice, "headers", {}), pool.call(bob, "headers", {}))
            assert [json.loads(o.output)["authorization"] for o in seen] == ["Bearer alice", "Bearer bob"]
            assert len(pool) == 2  # never one session for two authorizations
            deadline = time.monotonic() + 5
            while len(pool):
                assert time.monotonic() < deadline, "idle sessions were not closed"
                await asyncio.sleep(0.05)
            assert (await pool.call(alice, "add", {"a": 2, "b": 2})).output == "p: 4"  # reconnects
        finally:
            await pool.close()

    run(main())


def test_tool_lists_are_cached_for_their_ttl(http_server):
    async def main():
        target = ServerTarget.http(http_server.url)
        for ttl, same in ((60.0, True), (0.001, False)):
            pool = SessionPool(McpConfig(tools_ttl=ttl))
            try:
                first = await pool.tools(target)
                await asyncio.sleep(0.01)
                assert (await pool.tools(target) is first) is same
                assert "weather" in {tool.name for tool in first}
            finally:
                await pool.close()

    run(main())


def test_failures_are_outcomes_and_a_broken_session_reconnects():
    server = Process("http")

    async def main():
        pool = SessionPool(McpConfig(call_timeout=0.5, max_output_bytes=100, connect_timeout=2))
        target = ServerTarget.http(server.url)
        try:
            assert "refused: no" in (await pool.call(target, "fail", {"reason": "no"})).error
            assert "100 byte limit" in (await pool.call(target, "big", {"size": 101})).error
            assert (await pool.call(target, "big", {"size": 100})).output == "x" * 100
            assert "took more than 0.5 s" in (await pool.call(target, "slow", {"seconds": 5})).error
            assert "Unknown tool" in (await pool.call(target, "nope", {})).error
            server.stop()
            failed = await pool.call(target, "add", {"a": 1, "b": 1})
            assert failed.output is None and failed.error
            with pytest.raises(McpUnavailable, match="cannot connect"):
                await pool.tools(target)
            server.start()
            assert (await pool.call(target, "add", {"a": 1, "b": 1})).output == "p: 2"
        finally:
            await pool.close()
            server.stop()

    run(main())


def test_sse_and_stdio_servers():
    sse = Process("sse")

    async def main():
        pool = SessionPool()
        try:
            target = ServerTarget.http(sse.url)
            assert target.transport == "sse"
            assert (await pool.call(target, "weather", {"city": "Lima"})).output == "p: sunny in Lima, 21 C"
            stdio = ServerTarget.stdio(sys.executable, [SERVER, "stdio", "--label", "s"])
            assert "add" in {tool.name for tool in await pool.tools(stdio)}
            assert (await pool.call(stdio, "add", {"a": 5, "b": 5})).output == "s: 10"
            missing = await pool.call(ServerTarget.stdio("/nonexistent/mcp-server"), "add", {})
            assert "cannot connect" in missing.error
        finally:
            await pool.close()
            sse.stop()

    run(main())


def test_approval_policies():
    assert Approval.parse(None, "t").required("x")  # OpenAI's default: always
    assert not Approval.parse("never", "t").required("x")
    mixed = Approval.parse({"never": {"tool_names": ["read"]}, "always": {"tool_names": ["write"]}}, "t")
    assert not mixed.required("read") and mixed.required("write") and mixed.required("other")
    for bad in ("sometimes", {"always": ["x"]}, {"maybe": {}}, {"never": {"tool_names": [1]}}):
        with pytest.raises(InvalidRequest, match="require_approval"):
            Approval.parse(bad, "t")


def test_binding_a_requests_entries(http_server):
    configured = {"local": McpServerConfig(label="local", url=http_server.url, headers={"X-Op": "1"})}

    async def bind(*entries, allow=("127.0.0.1",)):
        pool = SessionPool()
        try:
            return await McpToolset.bind(list(enumerate(entries)), configured, AllowList(allow), pool)
        finally:
            await pool.close()

    async def main():
        toolset = await bind({"type": "mcp", "server_label": "local", "allowed_tools": ["add"],
                              "headers": {"X-Req": "2"}})
        server = toolset.by_label["local"]
        assert dict(server.target.headers) == {"X-Op": "1", "X-Req": "2"}  # the request's add to the operator's
        assert [f["function"]["name"] for f in toolset.functions()] == ["add"]
        assert "weather" in {f["function"]["name"] for f in toolset.unoffered()}
        assert toolset.server_of("weather") is server and not toolset.offered("weather")
        assert "not valid JSON" in (await toolset.call(server, "add", "{nope")).error
        assert "JSON object" in (await toolset.call(server, "add", "[1]")).error
        with pytest.raises(InvalidRequest, match="loopback"):
            await bind({"type": "mcp", "server_label": "x", "server_url": http_server.url}, allow=())
        with pytest.raises(InvalidRequest, match="its own server_label"):
            await bind({"type": "mcp", "server_label": "local"}, {"type": "mcp", "server_label": "local"})
        with pytest.raises(UnsupportedFeature, match="read_only"):
            await bind({"type": "mcp", "server_label": "local", "allowed_tools": {"read_only": True}})
        listed = await bind({"type": "mcp", "server_label": "local", "allowed_tools": {"tool_names": ["weather"]}})
        assert [f["function"]["name"] for f in listed.functions()] == ["weather"]

    run(main())
