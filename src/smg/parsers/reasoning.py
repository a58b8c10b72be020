"""Streaming reasoning parsers: split model output into ``reasoning`` and ``content``.

One table-driven machine covers every family: a family is a table ``state -> markers``, each
marker naming the next state and whether the marker text is kept (for the tool parser that runs
on the content afterwards, e.g. GLM-4.5's ``<tool_call>`` ends reasoning but starts a call).
States: 0 before reasoning (text is content), 1 reasoning, 2 content after reasoning.

Whitespace right after a marker that opens reasoning or content is dropped (the templates put
``\\n`` or ``\\n\\n`` there), so ``<think>\\nR\\n</think>\\n\\nC`` gives reasoning ``R\\n`` and content
``C``. The parser never raises on model output: a stream that ends inside reasoning just ends.
"""
from __future__ import annotations

from dataclasses import dataclass

from smg import _ext
from smg._ext.reasoning_scan_py import BEFORE, CONTENT, REASONING
from smg.parsers.names import canonical

kernel = _ext.load("reasoning_scan")


@dataclass(frozen=True)
class ReasoningFormat:
    """A family's markers: ``table[state]`` = ((marker, next state, keep marker text), ...)."""

    name: str
    table: tuple[tuple[tuple[str, int, bool], ...], ...]
    in_reasoning: bool = False  # the family's default: the prompt already opened reasoning


def tag_format(name: str, start: str | tuple[str, ...], end: str | tuple[str, ...], in_reasoning: bool = False,
               end_keep: tuple[str, ...] = (), content_drop: tuple[str, ...] = ()) -> ReasoningFormat:
    """The common shape: ``start`` opens reasoning, ``end`` closes it (``end_keep`` closes it and
    stays in the content), ``content_drop`` are wrappers removed from the answer."""
    starts = (start,) if isinstance(start, str) else start
    ends = (end,) if isinstance(end, str) else end
    drop = tuple((m, BEFORE, False) for m in content_drop)
    before = tuple((m, REASONING, False) for m in starts) + drop
    reasoning = (tuple((m, CONTENT, False) for m in ends) + tuple((m, CONTENT, True) for m in end_keep)
                 + tuple((m, REASONING, False) for m in starts))  # a repeated opener is dropped
    after = tuple((m, CONTENT, False) for m in content_drop)
    return ReasoningFormat(name, (before, reasoning, after), in_reasoning)


# gpt-oss Harmony: channels instead of tags; commentary (tool calls, preambles) stays in the content
# with its markers for the tool parser.
_ANALYSIS, _FINAL, _COMMENTARY = "<|channel|>analysis<|message|>", "<|channel|>final<|message|>", "<|channel|>commentary"
_HARMONY_FRAME = (("<|start|>assistant", BEFORE, False), ("<|end|>", BEFORE, False), ("<|return|>", BEFORE, False))
HARMONY = ReasoningFormat("gpt_oss", (
    ((_ANALYSIS, REASONING, False), (_FINAL, CONTENT, False), (_COMMENTARY, CONTENT, True)) + _HARMONY_FRAME,
    (("<|end|>", BEFORE, False), (_FINAL, CONTENT, False), (_COMMENTARY, CONTENT, True)),
    ((_ANALYSIS, REASONING, False), (_FINAL, CONTENT, False), (_COMMENTARY, CONTENT, True),
     ("<|call|>", CONTENT, True), ("<|end|>", BEFORE, False), ("<|start|>assistant", CONTENT, False),
     ("<|return|>", BEFORE, False)),
))

THINK = ("<think>", "</think>")
FORMATS = {
    "deepseek_r1": tag_format("deepseek_r1", *THINK, in_reasoning=True),
    "deepseek_v31": tag_format("deepseek_v31", *THINK),
    # A Qwen3 thinking turn may start a tool call before it closes </think> (the prompt opened the
    # block): the reasoning ends there, and the call stays in the content for the tool parser.
    "qwen3": tag_format("qwen3", *THINK, end_keep=("<tool_call>",)),
    "qwen3_thinking": tag_format("qwen3_thinking", *THINK, in_reasoning=True, end_keep=("<tool_call>",)),
    "glm45": tag_format("glm45", *THINK, end_keep=("<tool_call>",)),
    "kimi": tag_format("kimi", "◁think▷", "◁/think▷"),
    "kimi_k2": tag_format("kimi_k2", *THINK, end_keep=("<|tool_calls_section_begin|>",)),
    # Kimi K2 Thinking: the prompt opens the block
    "kimi_thinking": tag_format("kimi_thinking", *THINK, in_reasoning=True, end_keep=("<|tool_calls_section_begin|>",)),
    # Kimi K3 (XTML channels): a think channel; the response/message wrappers are dropped and a
    # tools channel stays in the content for the tool parser
    "kimi_k3": tag_format("kimi_k3", "<|open|>think<|sep|>", "<|close|>think<|sep|>", end_keep=("<|open|>tools<|sep|>",),
                          content_drop=("<|open|>response<|sep|>", "<|close|>response<|sep|>",
                                        "<|open|>message<|sep|>", "<|close|>message<|sep|>")),
    # Gemma 4: a thought channel; a tool call ends it
    "gemma4": tag_format("gemma4", "<|channel>thought", "<channel|>", end_keep=("<|tool_call>",)),
    "minimax": tag_format("minimax", *THINK, in_reasoning=True),
    # MiniMax M3: its own tags, open only when the prompt opened them; a non-thinking reply may
    # start with a stray closer (the template writes one into earlier turns), which is dropped
    "minimax_m3": tag_format("minimax_m3", "<mm:think>", "</mm:think>", content_drop=("</mm:think>",)),
    "step3": tag_format("step3", *THINK, in_reasoning=True),
    "gpt_oss": HARMONY,
    "cohere": tag_format("cohere", "<|START_THINKING|>", "<|END_THINKING|>",
                         content_drop=("<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_TEXT|>", "<|END_TEXT|>")),
    # Nemotron 3 (nano/super) calls tools in Qwen3-Coder's <tool_call>, which may end reasoning too
    "nemotron": tag_format("nemotron", *THINK, end_keep=("<tool_call>",)),
    # plain <think> blocks, open by default only when the prompt opened them (OLMo 3 Think, ...)
    "think": tag_format("think", *THINK),
    # no reasoning markers: all output is content (a model whose reasoning parser is turned off)
    "passthrough": ReasoningFormat("passthrough", ((), (), ())),
    "seed_oss": tag_format("seed_oss", "<seed:think>", "</seed:think>"),
    "mistral": tag_format("mistral", "[THINK]", "[/THINK]"),
    "granite": tag_format("granite", ("Here is my thought process:", "Here's my thought process:"),
                          ("Here is my response:", "Here's my response:")),
}


class ReasoningParser(kernel.ReasoningMachine):
    """Streaming reasoning/content splitter for one response (the compiled machine of
    ``smg._ext.reasoning_scan``; its twin ``reasoning_scan_py`` under ``SMG_NO_EXTENSIONS=1``).

    ``feed(delta) -> ReasoningDelta(reasoning, content)``, ``finish()``, ``parse(text)``,
    ``in_reasoning``.

    Example:
        >>> p = ReasoningParser.create("qwen3")
        >>> p.feed("<think>short</th"), p.feed("ink>Answer."), p.finish()
        (ReasoningDelta(reasoning='short', content=''), ReasoningDelta(reasoning='', content='Answer.'), ReasoningDelta(reasoning='', content=''))
    """

    __slots__ = ()  # no instance dict: attribute lookups on the per-token path stay short

    @classmethod
    def create(cls, name: str, in_reasoning: bool | None = None) -> "ReasoningParser":
        """A parser for family ``name`` (see :func:`reasoning_parser_names`); ``in_reasoning``
        says whether the prompt already opened the reasoning block (None: the family's default)."""
        return cls(reasoning_format(name), in_reasoning)


def reasoning_format(name: str) -> ReasoningFormat:
    """The format of family ``name`` (a parser is made per request: a canonical name is one probe)."""
    fmt = FORMATS.get(name) if type(name) is str else None
    return fmt if fmt is not None else FORMATS[canonical(name, FORMATS)]


def prompt_opens_reasoning(prompt: str, name: str) -> bool | None:
    """Whether a rendered prompt already opened (True) or closed (False) family ``name``'s
    reasoning block; None leaves the family default (e.g. Qwen3 with ``enable_thinking=False``
    ends the prompt with an empty ``<think></think>``, DeepSeek-V3.1 thinking ends it with
    ``<think>``)."""
    table = reasoning_format(name).table
    tail = prompt.rstrip()
    if any(tail.endswith(m) for m, nxt, _ in table[0] if nxt == REASONING):
        return True
    if any(tail.endswith(m) for m, nxt, _ in table[1] if nxt == CONTENT):
        return False
    return None
