"""MCP tools: the gateway's sessions to MCP servers (``pool``), and a request's servers and the
tools they offer (``tools``). The ``mcp`` SDK is imported when a session first connects."""
from smg.mcp.pool import McpTool, McpUnavailable, ServerTarget, SessionPool, ToolOutcome
from smg.mcp.tools import McpServers, McpToolset

__all__ = ["McpServers", "McpTool", "McpToolset", "McpUnavailable", "ServerTarget", "SessionPool", "ToolOutcome"]
