"""The Responses API's MCP tools: the loop's output items and events (``mcp_list_tools``,
``mcp_call``, ``mcp_approval_request``) in OpenAI's shapes, what they are in a chat, and the
approvals a request answers (``mcp_approval_response`` input items).

A response's run (``smg.api.responses``) hands this module the tool-call blocks whose names an MCP
server of the request lists: each becomes an ``mcp_call`` item (streamed: added, in progress,
its arguments' deltas), run on its server when the model's turn ends (completed or failed), or an
``mcp_approval_request`` when the tool needs approval (the response stops there; the next
request's ``mcp_approval_response`` runs or declines it).
"""
from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Callable, NamedTuple

from smg.errors import InvalidRequest
from smg.mcp import ToolOutcome
from smg.pipeline.blocks import Block

if TYPE_CHECKING:
    from smg.mcp.tools import BoundServer, McpToolset

ITEM_PREFIX = {"mcp_list_tools": "mcpl", "mcp_call": "mcp", "mcp_approval_request": "mcpr",
               "mcp_approval_response": "mcpa"}
DECLINED = "The user declined this tool call."


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def check_item(item: dict, where: str) -> None:
    """An MCP input item's fields (a 400 naming what is missing)."""
    kind = item["type"]
    if kind == "mcp_approval_response":
        if not isinstance(item.get("approval_request_id"), str) or not isinstance(item.get("approve"), bool):
            raise InvalidRequest(f"{where}: an mcp_approval_response needs approval_request_id (a string) and "
                                 f"approve (a boolean)")
    elif kind == "mcp_list_tools":
        if not isinstance(item.get("server_label"), str) or not isinstance(item.get("tools"), list):
            raise InvalidRequest(f"{where}: an mcp_list_tools item needs server_label and tools")
    elif not all(isinstance(item.get(key), str) for key in ("server_label", "name", "arguments")):
        raise InvalidRequest(f"{where}: an {kind} item needs server_label, name and arguments (strings)")


def call_messages(item: dict, answers: dict[str, dict]) -> list[dict]:
    """An MCP item as chat messages: a call with its result as one assistant turn and its tool
    message (each call its own turn: a sequence of calls is never mistaken for parallel ones), a
    declined approval as the call and the refusal; nothing for the rest (tool lists, pending or
    approved requests: an approved call is the ``mcp_call`` that follows)."""
    kind = item["type"]
    if kind == "mcp_call":
        error = item.get("error")
        result = item.get("output") or "" if error is None else f"Error: {error}"
    elif kind == "mcp_approval_request" and item["id"] in answers and not answers[item["id"]]["approve"]:
        reason = answers[item["id"]].get("reason")
        result = f"{DECLINED} {reason}" if reason else DECLINED
    else:
        return []
    call = {"id": item["id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
    return [{"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": item["id"], "content": result}]


def answered_approvals(items: list[dict], context: list[dict], toolset: "McpToolset | None"
                       ) -> list[tuple[dict, dict]]:
    """The request's approval responses with the requests they answer: each must answer an
    ``mcp_approval_request`` of the context not answered before, and an approved one needs its
    server among the request's tools."""
    requests = {item["id"]: item for item in context + items if item["type"] == "mcp_approval_request"}
    answered = {item.get("approval_request_id") for item in context
                if item["type"] in ("mcp_approval_response", "mcp_call")}
    pairs = []
    for answer in items:
        if answer["type"] != "mcp_approval_response":
            continue
        request_id = answer["approval_request_id"]
        request = requests.get(request_id)
        if request is None:
            raise InvalidRequest(f"mcp_approval_response: {request_id!r} names no mcp_approval_request before it")
        if request_id in answered:
            raise InvalidRequest(f"mcp_approval_response: {request_id!r} was answered already")
        answered.add(request_id)
        if answer["approve"] and (toolset is None or request["server_label"] not in toolset.by_label):
            raise InvalidRequest(f"mcp_approval_response approves a call on MCP server "
                                 f"{request['server_label']!r}: name that server in tools")
        pairs.append((request, answer))
    return pairs


class _Claim(NamedTuple):
    """A tool-call block that is an MCP call: its item's id, its server, and whether it asks for
    approval (an ``mcp_approval_request``) rather than running."""

    item_id: str
    server: "BoundServer"
    asks: bool


class McpCalls:
    """One response's MCP calls, as its run meets them. ``event`` and ``output`` are the run's
    (an event builder, which returns None when not streaming, and the output items)."""

    def __init__(self, toolset: "McpToolset", event: Callable[..., bytes | None], output: list[dict],
                 limit: int) -> None:
        self.toolset, self.event, self.output, self.limit = toolset, event, output, limit
        self.blocks: dict[int, _Claim] = {}  # this turn's claimed blocks
        self.pending: list[tuple[int, dict, "BoundServer"]] = []  # calls to run at the turn's end
        self.made = 0  # calls run (or refused) so far
        self.asked = False  # an approval request ended a turn
        self.limit_hit = False

    # ---- tool lists ----

    def list_events(self, context: list[dict]) -> list:
        """An ``mcp_list_tools`` item for each server whose tools the context has not listed."""
        listed = {item.get("server_label") for item in context if item["type"] == "mcp_list_tools"}
        out = []
        for server in self.toolset.servers:
            if server.label in listed:
                continue
            index = len(self.output)
            item = {"id": _id("mcpl"), "type": "mcp_list_tools", "server_label": server.label,
                    "tools": [tool.listed() for tool in server.offered()], "error": server.error}
            out.append(self.event("response.output_item.added", output_index=index, item=dict(item, tools=[])))
            out.append(self.event("response.mcp_list_tools.in_progress", item_id=item["id"], output_index=index))
            done = "failed" if server.error else "completed"
            out.append(self.event(f"response.mcp_list_tools.{done}", item_id=item["id"], output_index=index))
            out.append(self.event("response.output_item.done", output_index=index, item=item))
            self.output.append(item)
        return out

    # ---- the model's calls, as blocks ----

    def new_turn(self) -> None:
        self.blocks.clear()

    def claims(self, block: Block) -> bool:
        """Whether a tool-call block is an MCP call (its name is one a server of the request lists)."""
        server = self.toolset.server_of(block.name or "")
        if server is None:
            return False
        asks = self.toolset.offered(block.name) and server.approval.required(block.name)
        self.blocks[block.index] = _Claim(_id("mcpr" if asks else "mcp"), server, asks)
        return True

    def asks(self, block: Block) -> bool:
        return self.blocks[block.index].asks

    def item_id(self, block: Block) -> str:
        return self.blocks[block.index].item_id

    def start(self, block: Block, index: int) -> list:
        if self.asks(block):
            return []  # an approval request comes whole, at its end
        item_id, server, _ = self.blocks[block.index]
        item = {"id": item_id, "type": "mcp_call", "server_label": server.label, "name": block.name,
                "arguments": "", "output": None, "error": None, "status": "in_progress"}
        return [self.event("response.output_item.added", output_index=index, item=item),
                self.event("response.mcp_call.in_progress", item_id=item_id, output_index=index)]

    def stop(self, block: Block, index: int) -> list:
        item_id, server, _ = self.blocks[block.index]
        if self.asks(block):
            item = {"id": item_id, "type": "mcp_approval_request", "server_label": server.label,
                    "name": block.name, "arguments": block.text}
            self.output.append(item)
            self.asked = True
            return [self.event("response.output_item.added", output_index=index, item=item),
                    self.event("response.output_item.done", output_index=index, item=item)]
        item = {"id": item_id, "type": "mcp_call", "server_label": server.label, "name": block.name,
                "arguments": block.text, "output": None, "error": None, "status": "in_progress"}
        self.output.append(item)
        self.pending.append((index, item, server))
        return [self.event("response.mcp_call_arguments.done", item_id=item_id, output_index=index,
                           arguments=block.text)]

    # ---- running them ----

    async def run_pending(self) -> list:
        """Run the turn's calls (concurrently, up to the limit); their end events, in order."""
        pending, self.pending = self.pending, []
        runs = []
        for _, item, server in pending:
            if self.made >= self.limit:
                self.limit_hit = True
                runs.append(None)
                continue
            self.made += 1
            runs.append(self.toolset.call(server, item["name"], item["arguments"]))
        started = [r for r in runs if r is not None]
        outcomes = iter(await asyncio.gather(*started)) if started else iter(())
        out = []
        for (index, item, _), run in zip(pending, runs):
            if run is None:
                item.update(status="incomplete",
                            error=f"not run: the response reached its limit of {self.limit} tool calls")
            else:
                self._settle(item, next(outcomes))
            out += self._end_events(index, item)
        return out

    async def run_approved(self, pairs: list[tuple[dict, dict]]) -> list:
        """The calls the request approves, run before the model's turn (a declined one is a
        refusal the model reads in its chat)."""
        out = []
        for request, answer in pairs:
            if not answer["approve"]:
                continue
            server = self.toolset.by_label[request["server_label"]]
            index = len(self.output)
            item = {"id": _id("mcp"), "type": "mcp_call", "server_label": server.label, "name": request["name"],
                    "arguments": request["arguments"], "output": None, "error": None, "status": "in_progress",
                    "approval_request_id": request["id"]}
            self.output.append(item)
            out.append(self.event("response.output_item.added", output_index=index, item=dict(item)))
            out.append(self.event("response.mcp_call.in_progress", item_id=item["id"], output_index=index))
            out.append(self.event("response.mcp_call_arguments.done", item_id=item["id"], output_index=index,
                                  arguments=item["arguments"]))
            self.made += 1
            self._settle(item, await self.toolset.call(server, item["name"], item["arguments"]))
            out += self._end_events(index, item)
        return out

    @staticmethod
    def _settle(item: dict, outcome: ToolOutcome) -> None:
        if outcome.error is not None:
            item.update(status="failed", error=outcome.error)
        else:
            item.update(status="completed", output=outcome.output)

    def _end_events(self, index: int, item: dict) -> list:
        done = "completed" if item["status"] == "completed" else "failed"
        return [self.event(f"response.mcp_call.{done}", item_id=item["id"], output_index=index),
                self.event("response.output_item.done", output_index=index, item=item)]
