"""Streaming reasoning and tool-call parsers for the major model families.

    >>> from smg.parsers import ReasoningParser, ToolParser, parser_for_model
    >>> parser_for_model("Qwen/Qwen3-8B")
    ('qwen3', 'hermes')

``feed(delta)`` parses one delta; ``feed_batch(*join_deltas(deltas))`` parses many in one call and
returns a columnar ``ReasoningBatch`` / ``ToolBatch`` whose item ``i`` is what ``feed`` gives for
delta ``i``. The compiled machines scan a batch without the GIL, so threads parsing different
streams run in parallel (the XML and pythonic tool machines are Python: their batch holds it);
``feed_batches([(parser, text, ends), ...])`` scans several streams in one release of the GIL.
"""
from smg import _ext
from smg._ext.reasoning_scan_py import ReasoningBatch
from smg._ext.stop_matcher_py import join_deltas
from smg._ext.tool_scan_py import ToolBatch
from smg.parsers.base import ParseError, ReasoningDelta, ToolCall, ToolCallDelta, ToolCallParser, ToolDelta
from smg.parsers.reasoning import ReasoningParser
from smg.parsers.registry import parser_for_model, reasoning_parser_names, tool_parser_names
from smg.parsers.tools import ToolParser, collect

feed_batches = _ext.load("stop_matcher").feed_batches

__all__ = ["ParseError", "ReasoningBatch", "ReasoningDelta", "ReasoningParser", "ToolBatch", "ToolCall",
           "ToolCallDelta", "ToolCallParser", "ToolDelta", "ToolParser", "collect", "feed_batches", "join_deltas", "parser_for_model",
           "reasoning_parser_names", "tool_parser_names"]
