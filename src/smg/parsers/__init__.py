"""Streaming reasoning and tool-call parsers for the major model families.

    >>> from smg.parsers import ReasoningParser, ToolParser, parser_for_model
    >>> parser_for_model("Qwen/Qwen3-8B")
    ('qwen3', 'hermes')
"""
from smg.parsers.base import ParseError, ReasoningDelta, ToolCall, ToolCallDelta, ToolDelta
from smg.parsers.reasoning import ReasoningParser
from smg.parsers.registry import parser_for_model, reasoning_parser_names, tool_parser_names
from smg.parsers.tools import ToolParser, collect

__all__ = ["ParseError", "ReasoningDelta", "ReasoningParser", "ToolCall", "ToolCallDelta", "ToolDelta",
           "ToolParser", "collect", "parser_for_model", "reasoning_parser_names", "tool_parser_names"]
