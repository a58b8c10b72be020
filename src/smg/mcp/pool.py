"""Sessions to MCP servers, pooled: one session per server and set of HTTP headers, reused across
requests, closed when idle, never shared between different headers (a request's authorization is
its own).

A session lives in a task of its own: the ``mcp`` SDK's client holds anyio task groups and cancel
scopes, which must be entered and left by one task, while requests (each its own task) use it
concurrently. Every failure of a server (it cannot be reached, a call errors, times out, or
answers more than the size cap) comes back as a :class:`ToolOutcome` error or
:class:`McpUnavailable`, never as a crash of the request; a session that broke is dropped and
the next use connects anew.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from smg.config import McpConfig
from smg.waiting import wait_within

log = logging.getLogger("smg.mcp")
MAX_SESSIONS = 256  # beyond this, the least recently used idle session is closed
MAX_TOOL_PAGES = 64  # a server that pages its tool list forever is cut off here


class McpUnavailable(Exception):
    """An MCP server that cannot be reached, or whose tools cannot be listed."""


@dataclass(frozen=True)
class ServerTarget:
    """How to reach an MCP server: the pool's key. ``transport`` is ``streamable_http``, ``sse``
    (an HTTP URL whose path ends in ``/sse``) or ``stdio`` (``location`` is the command)."""

    transport: str
    location: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def http(cls, url: str, headers: dict[str, str] | None = None) -> "ServerTarget":
        path = url.split("?", 1)[0].rstrip("/")
        return cls("sse" if path.endswith("/sse") else "streamable_http", url,
                   headers=tuple(sorted((headers or {}).items())))

    @classmethod
    def stdio(cls, command: str, args=(), env: dict[str, str] | None = None) -> "ServerTarget":
        return cls("stdio", command, tuple(args), tuple(sorted((env or {}).items())))

    def describe(self) -> str:
        """Where the server is, for messages (never its headers)."""
        return " ".join((self.location, *self.args)) if self.transport == "stdio" else self.location


@dataclass(frozen=True)
class McpTool:
    """A tool as its server lists it."""

    name: str
    description: str | None
    input_schema: dict
    annotations: dict | None = None

    def listed(self) -> dict:
        """The tool as an ``mcp_list_tools`` item lists it (OpenAI's shape)."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema,
                "annotations": self.annotations}


@dataclass(frozen=True)
class ToolOutcome:
    """A tool call's result: its text output, or the error the model is told."""

    output: str | None = None
    error: str | None = None


def _content_text(content: list) -> str:
    """A tool result's content as text: text parts as they are, other parts as JSON."""
    parts = []
    for block in content:
        if getattr(block, "type", None) == "text":
            parts.append(block.text)
        else:
            parts.append(json.dumps(block.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return "\n".join(parts)


def _reason(exc: BaseException) -> str:
    """A one-line reason for a failure (an exception group's first leaf)."""
    while getattr(exc, "exceptions", None):  # (an exception group)
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass(eq=False)
class _Session:
    """One connected client, owned by its task (``run``) until ``close``."""

    target: ServerTarget
    client: Any = None
    failure: BaseException | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    tools: list[McpTool] | None = None
    tools_at: float = 0.0
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def broken(self) -> bool:
        return (self.ready.is_set() and self.client is None) or (self.task is not None and self.task.done())

    async def _transport(self, stack: AsyncExitStack, config: McpConfig):
        target = self.target
        if target.transport == "stdio":
            from mcp.client.stdio import StdioServerParameters, stdio_client

            return stdio_client(StdioServerParameters(command=target.location, args=list(target.args),
                                                      env=dict(target.env) or None))
        headers = dict(target.headers)
        if target.transport == "sse":
            from mcp.client.sse import sse_client

            return sse_client(target.location, headers=headers, timeout=config.connect_timeout)
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        # (the read timeout bounds a held-open response stream; calls have their own timeout)
        http = await stack.enter_async_context(httpx2.AsyncClient(
            headers=headers, timeout=httpx2.Timeout(config.connect_timeout, read=max(300.0, config.call_timeout))))
        return streamable_http_client(target.location, http_client=http)

    async def run(self, config: McpConfig) -> None:
        from mcp import Client

        try:
            async with AsyncExitStack() as stack:
                transport = await self._transport(stack, config)
                self.client = await stack.enter_async_context(Client(transport, cache=None))
                self.ready.set()
                await self.closing.wait()
        except Exception as exc:  # (the SDK raises exception groups from its task groups)
            self.failure = exc
        finally:
            self.client = None
            self.ready.set()

    async def close(self) -> None:
        self.closing.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 5.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self.task.cancel()


class SessionPool:
    """The gateway's MCP sessions (``Gateway.mcp``), keyed by :class:`ServerTarget`."""

    def __init__(self, config: McpConfig | None = None) -> None:
        self.config = config or McpConfig()
        self._sessions: dict[ServerTarget, _Session] = {}
        self._reaper: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()  # sessions being closed (held: the loop keeps weak references)

    def __len__(self) -> int:
        return len(self._sessions)

    async def _session(self, target: ServerTarget) -> _Session:
        session = self._sessions.get(target)
        if session is None or session.broken:
            if session is not None:
                self._sessions.pop(target, None)
            session = self._sessions[target] = _Session(target)
            session.task = asyncio.ensure_future(session.run(self.config))
            self._evict()
            if self._reaper is None or self._reaper.done():
                self._reaper = asyncio.ensure_future(self._reap())
        session.users += 1
        try:
            await wait_within(session.ready.wait(), self.config.connect_timeout)
        except asyncio.TimeoutError:
            session.users -= 1
            self._drop(session)
            raise McpUnavailable(f"connecting to {target.describe()} took more than "
                                 f"{self.config.connect_timeout:g} s") from None
        except BaseException:
            session.users -= 1
            raise
        if session.client is None:
            session.users -= 1
            self._drop(session)
            raise McpUnavailable(f"cannot connect to {target.describe()}: {_reason(session.failure)}"
                                 if session.failure is not None else f"{target.describe()} closed the session")
        return session

    def _release(self, session: _Session) -> None:
        session.users -= 1
        session.last_used = time.monotonic()

    def _drop(self, session: _Session) -> None:
        if self._sessions.get(session.target) is session:
            del self._sessions[session.target]
        task = asyncio.ensure_future(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _evict(self) -> None:
        idle = sorted((s for s in self._sessions.values() if s.users == 0), key=lambda s: s.last_used)
        for session in idle[:max(0, len(self._sessions) - MAX_SESSIONS)]:
            self._drop(session)

    async def _reap(self) -> None:
        """Close sessions idle longer than ``idle_timeout``; ends when none is left."""
        while self._sessions:
            await asyncio.sleep(min(self.config.idle_timeout / 2, 30.0))
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if session.broken or session.users == 0 and now - session.last_used > self.config.idle_timeout:
                    self._drop(session)

    async def tools(self, target: ServerTarget) -> list[McpTool]:
        """The server's tools (listed again once ``tools_ttl`` has passed)."""
        session = await self._session(target)
        try:
            if session.tools is not None and time.monotonic() - session.tools_at < self.config.tools_ttl:
                return session.tools
            try:
                tools = await wait_within(self._list(session.client), self.config.connect_timeout)
            except asyncio.TimeoutError:
                raise McpUnavailable(f"listing the tools of {target.describe()} took more than "
                                     f"{self.config.connect_timeout:g} s") from None
            except Exception as exc:
                self._drop(session)
                raise McpUnavailable(f"listing the tools of {target.describe()} failed: {_reason(exc)}") from None
            session.tools, session.tools_at = tools, time.monotonic()
            return tools
        finally:
            self._release(session)

    @staticmethod
    async def _list(client) -> list[McpTool]:
        tools: list[McpTool] = []
        cursor = None
        for _ in range(MAX_TOOL_PAGES):
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                annotations = tool.annotations.model_dump(mode="json", exclude_none=True) if tool.annotations else None
                tools.append(McpTool(tool.name, tool.description, dict(tool.input_schema), annotations))
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    async def call(self, target: ServerTarget, name: str, arguments: dict) -> ToolOutcome:
        """Run one tool call under the call timeout and the output cap; every failure is an
        outcome with ``error``. Cancelling the caller cancels the call."""
        try:
            session = await self._session(target)
        except McpUnavailable as exc:
            return ToolOutcome(error=str(exc))
        config = self.config
        try:
            result = await wait_within(session.client.call_tool(name, arguments), config.call_timeout)
        except asyncio.TimeoutError:
            return ToolOutcome(error=f"the tool {name!r} took more than {config.call_timeout:g} s")
        except Exception as exc:
            if session.broken:
                self._drop(session)
            return ToolOutcome(error=f"calling {name!r} on {target.describe()} failed: {_reason(exc)}")
        finally:
            self._release(session)
        text = _content_text(result.content)
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content)
        if len(text.encode()) > config.max_output_bytes:
            return ToolOutcome(error=f"the tool {name!r} answered {len(text.encode())} bytes, more than the "
                                     f"{config.max_output_bytes} byte limit")
        return ToolOutcome(error=text or "the tool failed") if result.is_error else ToolOutcome(output=text)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(session.close() for session in sessions), *self._closing, return_exceptions=True)
