"""Stage ``choice``: one sequence's streaming pipeline, detokenizer -> stop rules -> reasoning
parser -> tool parser (and logprobs). Each engine message gives a *piece*: ``(reasoning, content,
calls)``, the text released to each channel and the tool-call pieces, which front ends shape into
their chunks or events."""
from __future__ import annotations

import json
import uuid

from smg.engines.base import EngineOutput
from smg.parsers import ReasoningParser, ToolParser
from smg.pipeline.prepare import Prepared
from smg.protocols import openai as oa

NO_CALLS: tuple = ()  # the calls of a piece without tool calls (shared: never appended to)


class Choice:
    """One sequence's pipeline (see the module docstring)."""

    __slots__ = ("index", "detok", "stop", "reasoning", "tools", "forced", "required", "single", "finished",
                 "finish_reason", "matched", "tokens", "reasoning_tokens", "role_sent", "content",
                 "reasoning_text", "calls", "logprobs", "forced_open", "required_buf", "plain", "served")

    def __init__(self, index: int, p: Prepared) -> None:
        served = p.served
        self.index = index
        self.served = served
        self.detok = served.tokenizer.decode_stream(skip_special_tokens=p.sampling.skip_special_tokens,
                                                    prompt_ids=p.prompt_ids[-8:])
        self.stop = p.stop.checker(served.eos_token_ids)
        self.reasoning = ReasoningParser.create(p.reasoning, in_reasoning=p.in_reasoning) if p.reasoning else None
        self.tools = ToolParser.create(p.tool_parser, p.tools) if p.tool_parser else None
        self.forced = p.forced_tool
        self.required = p.required_tools
        self.single = p.single_tool_call
        self.finished = False
        self.finish_reason: str | None = None
        self.matched: int | str | None = None
        self.tokens = 0
        self.reasoning_tokens = 0
        self.role_sent = False
        self.content: list[str] = []
        self.reasoning_text: list[str] = []
        self.calls: dict[int, list] = {}  # index -> [id, name, arguments]
        self.logprobs: list | None = [] if p.return_logprob else None
        self.forced_open = False
        self.required_buf: list[str] = []
        self.plain = p.unparsed

    def _route(self, text: str, final: bool) -> tuple[str, str, list[oa.ToolCallChunk]]:
        """Reasoning / content / call pieces for released text (``final``: flush the parsers)."""
        if self.plain:  # no parser: all of it is content
            return "", text, NO_CALLS
        reasoning, content = "", text
        if self.reasoning is not None:
            r = self.reasoning.feed(text) if text else None
            last = self.reasoning.finish() if final else None
            reasoning = (r.reasoning if r else "") + (last.reasoning if last else "")
            content = (r.content if r else "") + (last.content if last else "")
        calls: list[oa.ToolCallChunk] = []
        if self.forced is not None:
            if content and not self.forced_open:
                self.forced_open = True
                calls.append(self._call_piece(0, "call_" + uuid.uuid4().hex[:24], self.forced, content))
            elif content:
                calls.append(self._call_piece(0, None, None, content))
            content = ""
        elif self.required:
            self.required_buf.append(content)
            content = ""
            if final:
                content, calls = self._required_calls("".join(self.required_buf))
        elif self.tools is not None:
            t = self.tools.feed(content) if content else None
            last = self.tools.finish() if final else None
            content = (t.content if t else "") + (last.content if last else "")
            for d in (t.calls if t else ()) + (last.calls if last else ()):
                if self.single and d.index > 0:  # parallel_tool_calls false: the first call only
                    continue
                calls.append(self._call_piece(d.index, d.id, d.name, d.arguments))
        return reasoning, content, calls

    def _call_piece(self, index: int, call_id, name, arguments: str) -> oa.ToolCallChunk:
        entry = self.calls.setdefault(index, [call_id, name, ""])
        entry[2] += arguments
        return oa.ToolCallChunk(index=index, id=call_id, type="function" if call_id else None,
                                function=oa.FunctionCall(name=name, arguments=arguments))

    def _required_calls(self, text: str) -> tuple[str, list[oa.ToolCallChunk]]:
        """The calls of a ``tool_choice: required`` output (a JSON array), or the text as content
        when it is not one (an engine that ignored the constraint)."""
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if not isinstance(items, list):
            return text, []
        out = []
        for item in items[:1] if self.single else items:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                args = item.get("parameters", item.get("arguments", {}))
                out.append(self._call_piece(len(self.calls), "call_" + uuid.uuid4().hex[:24], item["name"],
                                            json.dumps(args, ensure_ascii=False)))
        return "", out

    def feed(self, out: EngineOutput) -> tuple[str, str, list] | None:
        """Run one engine message through the pipeline; None when it released nothing."""
        released = ""  # one token per message is the usual case: no list to join
        logprobs = out.logprobs if self.logprobs is not None else None
        if self.reasoning is not None and self.reasoning.in_reasoning:
            self.reasoning_tokens += len(out.token_ids)  # tokens the model spent reasoning
        for position, token_id in enumerate(out.token_ids):
            self.tokens += 1
            delta = self.stop.step(token_id, self.detok.step(token_id))
            released += delta.text
            if logprobs is not None and position < len(logprobs):
                self.logprobs.append(self.served.logprob_entry(logprobs[position]))
            if delta.finished:
                self.finished, self.finish_reason, self.matched = True, delta.finish_reason, delta.matched_stop
                return self.emit(released, final=True)
        return self.emit(released, final=False) if released else None

    def end(self, out: EngineOutput) -> tuple[str, str, list]:
        """The engine finished this sequence: flush held text and parsers."""
        delta = self.stop.finish(self.detok.finish())
        self.finished = True
        if delta.finished:
            self.finish_reason, self.matched = delta.finish_reason, delta.matched_stop
        else:
            self.finish_reason = out.finish_reason if out.finish_reason in ("stop", "length", "abort") else "stop"
            self.matched = out.matched_stop
        return self.emit(delta.text, final=True)

    def emit(self, text: str, final: bool) -> tuple[str, str, list]:
        """Route released ``text`` and keep what each channel got (``final``: flush the parsers)."""
        reasoning, content, calls = self._route(text, final)
        if reasoning:
            self.reasoning_text.append(reasoning)
        if content:
            self.content.append(content)
        return reasoning, content, calls

    @property
    def openai_finish_reason(self) -> str | None:
        if self.finish_reason == "stop" and self.calls:
            return "tool_calls"
        return self.finish_reason
