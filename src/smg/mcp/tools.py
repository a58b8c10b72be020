"""A request's MCP servers and their tools: the ``mcp`` entries of a request's ``tools`` (OpenAI's
shape), bound to the operator's configured servers or checked against the SSRF rule, listed
through the pool, and offered to the model as functions.

A tool the server lists but ``allowed_tools`` leaves out is not offered; if the model calls it
anyway, the call is not run and the model is told so. Approval (``require_approval``) decides per
tool whether a call runs at once or stops the response with an ``mcp_approval_request``.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from smg.config import McpConfig, McpServerConfig
from smg.errors import InvalidRequest, UnsupportedFeature
from smg.mcp.pool import McpTool, McpUnavailable, ServerTarget, SessionPool, ToolOutcome
from smg.outbound import AllowList, BlockedAddress

ENTRY_KEYS = frozenset({"type", "server_label", "server_url", "server_description", "allowed_tools",
                        "require_approval", "headers", "authorization"})


@dataclass(frozen=True)
class Approval:
    """``require_approval``: ``always``, ``never``, or ``{"always": {"tool_names": [...]}, "never":
    {...}}`` (then a tool named in neither needs approval, as OpenAI's default is ``always``)."""

    default: bool = True
    always: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, value, where: str) -> "Approval":
        if value is None or value == "always":
            return cls(True)
        if value == "never":
            return cls(False)
        if isinstance(value, dict) and set(value) <= {"always", "never"}:
            names = {}
            for key in ("always", "never"):
                entry = value.get(key) or {}
                tool_names = entry.get("tool_names", []) if isinstance(entry, dict) else None
                if not isinstance(tool_names, list) or not all(isinstance(n, str) for n in tool_names):
                    raise InvalidRequest(f"{where}.require_approval.{key} must be {{\"tool_names\": [names]}}")
                names[key] = frozenset(tool_names)
            return cls(True, names["always"], names["never"])
        raise InvalidRequest(f"{where}.require_approval must be 'always', 'never' or an object of tool names")

    def required(self, name: str) -> bool:
        if name in self.never:
            return False
        return self.default or name in self.always


@dataclass
class BoundServer:
    """One MCP server of a request: how to reach it, what it may offer, and what it listed."""

    label: str
    target: ServerTarget
    allowed: frozenset[str] | None
    approval: Approval
    tools: list[McpTool] = field(default_factory=list)
    error: str | None = None  # listing failed: the model is offered none of its tools

    def offered(self) -> list[McpTool]:
        return [tool for tool in self.tools if self.allowed is None or tool.name in self.allowed]


def _allowed(value, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("read_only"):  # (no tool says reliably that it only reads: offer none rather than all)
            raise UnsupportedFeature(f"{where}.allowed_tools.read_only is not supported (list tool_names)")
        value = value.get("tool_names")
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise InvalidRequest(f"{where}.allowed_tools must be a list of tool names")
    return frozenset(value)


def _headers(entry: dict, where: str) -> dict[str, str]:
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in headers.items()):
        raise InvalidRequest(f"{where}.headers must be an object of strings")
    headers = dict(headers)
    token = entry.get("authorization")
    if token is not None:
        if not isinstance(token, str):
            raise InvalidRequest(f"{where}.authorization must be a string")
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def _checked_url(url, where: str, allow: AllowList) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{where}.server_url must be an http(s) URL, got {url!r}")
    try:
        await allow.checked_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except BlockedAddress as exc:
        raise InvalidRequest(f"{where}.server_url: {exc}") from None
    return url


async def _bind(index: int, entry: dict, configured: Mapping[str, McpServerConfig], allow: AllowList) -> BoundServer:
    where = f"tools[{index}]"
    unknown = set(entry) - ENTRY_KEYS
    if "connector_id" in unknown:
        raise UnsupportedFeature(f"{where}: connectors (connector_id) are not supported; give server_url")
    if unknown:
        raise InvalidRequest(f"{where}: unknown mcp tool fields {sorted(unknown)}")
    label = entry.get("server_label")
    if not isinstance(label, str) or not label:
        raise InvalidRequest(f"{where}: an mcp tool needs server_label")
    headers = _headers(entry, where)
    allowed, approval = _allowed(entry.get("allowed_tools"), where), Approval.parse(entry.get("require_approval"), where)
    url = entry.get("server_url")
    if url is not None:
        target = ServerTarget.http(await _checked_url(url, where, allow), headers)
    elif label in configured:
        server = configured[label]
        if server.url is not None:
            target = ServerTarget.http(server.url, {**server.headers, **headers})
        else:
            target = ServerTarget.stdio(server.command, server.args, server.env)
    else:
        known = ", ".join(sorted(configured)) or "none"
        raise InvalidRequest(f"{where}: no MCP server is configured with label {label!r} (configured: {known}); "
                             f"give server_url")
    return BoundServer(label, target, allowed, approval)


def _function(tool: McpTool) -> dict:
    return {"type": "function", "function": {"name": tool.name, "description": tool.description or "",
                                             "parameters": tool.input_schema}}


class McpToolset:
    """The MCP servers of one request and the tools they offer the model."""

    def __init__(self, servers: list[BoundServer], pool: SessionPool) -> None:
        self.servers, self.pool = servers, pool
        self.by_label = {server.label: server for server in servers}
        self._offered: dict[str, BoundServer] = {}
        for server in servers:
            for tool in server.offered():
                other = self._offered.get(tool.name)
                if other is not None:
                    raise InvalidRequest(f"the MCP servers {other.label!r} and {server.label!r} both offer a tool "
                                         f"named {tool.name!r}; leave it out of one with allowed_tools")
                self._offered[tool.name] = server
        # every listed tool name -> its server (the one that offers it, else the first that lists it)
        self._owner = dict(self._offered)
        for server in servers:
            for tool in server.tools:
                self._owner.setdefault(tool.name, server)
        # (made once: every turn of the request's tool loop offers the same)
        self._functions = [_function(tool) for server in servers for tool in server.offered()]
        unoffered = {tool.name: tool for server in servers for tool in server.tools if tool.name not in self._offered}
        self._unoffered = [_function(tool) for tool in unoffered.values()]

    @classmethod
    async def bind(cls, entries: list[tuple[int, dict]], configured: Mapping[str, McpServerConfig],
                   allow: AllowList, pool: SessionPool) -> "McpToolset":
        """The request's ``mcp`` tool entries (with their index in ``tools``), bound and listed;
        a server that cannot be listed is kept with its ``error``."""
        servers = [await _bind(index, entry, configured, allow) for index, entry in entries]
        labels = [server.label for server in servers]
        if len(set(labels)) != len(labels):
            raise InvalidRequest(f"each mcp tool needs its own server_label, got {labels}")

        async def listed(server: BoundServer) -> None:
            try:
                server.tools = await pool.tools(server.target)
            except McpUnavailable as exc:
                server.error = str(exc)

        await asyncio.gather(*(listed(server) for server in servers))
        return cls(servers, pool)

    def functions(self) -> list[dict]:
        """The offered tools as chat-template functions."""
        return self._functions

    def unoffered(self) -> list[dict]:
        """The listed tools ``allowed_tools`` leaves out, as functions (for the parser only)."""
        return self._unoffered

    def server_of(self, name: str) -> BoundServer | None:
        """The server that lists a tool of this name (offered or not)."""
        return self._owner.get(name)

    def offered(self, name: str) -> bool:
        return name in self._offered

    async def call(self, server: BoundServer, name: str, arguments: str) -> ToolOutcome:
        """Run a call the model made (``arguments``: its JSON text) on ``server``."""
        if name not in self._offered:
            return ToolOutcome(error=f"the tool {name!r} of MCP server {server.label!r} is not allowed in this "
                                     f"request (allowed_tools)")
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return ToolOutcome(error=f"the arguments of {name!r} are not valid JSON")
        if not isinstance(parsed, dict):
            return ToolOutcome(error=f"the arguments of {name!r} must be a JSON object")
        return await self.pool.call(server.target, name, parsed)


class McpServers:
    """The gateway's MCP side (``Gateway.mcp``): the operator's servers by label, the SSRF
    allow-list a request's own ``server_url`` must pass, and the session pool."""

    def __init__(self, servers: list[McpServerConfig], url_allow_list, config: McpConfig) -> None:
        self.configured = {server.label: server for server in servers}
        self.allow = AllowList(url_allow_list)
        self.pool = SessionPool(config)

    async def toolset(self, entries: list[tuple[int, dict]]) -> McpToolset:
        return await McpToolset.bind(entries, self.configured, self.allow, self.pool)

    async def close(self) -> None:
        await self.pool.close()
