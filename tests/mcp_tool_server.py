"""A real MCP server (the ``mcp`` SDK's ``MCPServer``) for the MCP tests and benchmark, run as its
own process: ``python tests/mcp_tool_server.py stdio`` or ``... http PORT`` (streamable HTTP at
``/mcp``) or ``... sse PORT`` (``/sse``). ``--label NAME`` names the server (tool outputs carry
it, so a test can tell two servers apart); ``--cancel-log FILE`` gets a line when a ``slow`` call
starts, and when one is cancelled."""
from __future__ import annotations

import argparse
import asyncio
import json

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def build(label: str, cancel_log: str | None) -> MCPServer:
    server = MCPServer(label, log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return f"{label}: {a + b}"

    @server.tool()
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"{label}: sunny in {city}, 21 C"

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails, with the reason given."""
        raise ToolError(f"{label} refused: {reason}")

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleeps, then answers."""
        if cancel_log:
            with open(cancel_log, "a") as log:
                log.write(f"started {seconds}\n")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if cancel_log:
                with open(cancel_log, "a") as log:
                    log.write(f"cancelled {seconds}\n")
            raise
        return f"{label}: slept {seconds}"

    @server.tool()
    def big(size: int) -> str:
        """A text of `size` characters."""
        return "x" * size

    @server.tool()
    def headers(ctx: Context) -> str:
        """The HTTP headers this call came with (authorization and x- headers)."""
        seen = ctx.headers or {}
        return json.dumps({k: v for k, v in seen.items() if k == "authorization" or k.startswith("x-")})

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "http", "sse"])
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--label", default="tools")
    parser.add_argument("--cancel-log", default=None)
    args = parser.parse_args()
    server = build(args.label, args.cancel_log)
    if args.transport == "stdio":
        server.run("stdio")
    elif args.transport == "http":
        server.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        server.run("sse", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
