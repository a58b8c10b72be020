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

from smg.parsers.base import MarkerMachine, ReasoningDelta, check_text

BEFORE, REASONING, CONTENT = 0, 1, 2
_EMPTY = ReasoningDelta("", "")
_new_delta = tuple.__new__  # builds a ReasoningDelta without the namedtuple's Python __new__


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
    "qwen3": tag_format("qwen3", *THINK),
    "qwen3_thinking": tag_format("qwen3_thinking", *THINK, in_reasoning=True),
    "glm45": tag_format("glm45", *THINK, end_keep=("<tool_call>",)),
    "kimi": tag_format("kimi", "◁think▷", "◁/think▷"),
    "kimi_k2": tag_format("kimi_k2", *THINK, end_keep=("<|tool_calls_section_begin|>",)),
    "minimax": tag_format("minimax", *THINK, in_reasoning=True),
    "step3": tag_format("step3", *THINK, in_reasoning=True),
    "gpt_oss": HARMONY,
    "cohere": tag_format("cohere", "<|START_THINKING|>", "<|END_THINKING|>",
                         content_drop=("<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_TEXT|>", "<|END_TEXT|>")),
    "nemotron": tag_format("nemotron", *THINK),
    "seed_oss": tag_format("seed_oss", "<seed:think>", "</seed:think>"),
    "mistral": tag_format("mistral", "[THINK]", "[/THINK]"),
    "granite": tag_format("granite", ("Here is my thought process:", "Here's my thought process:"),
                          ("Here is my response:", "Here's my response:")),
}


class ReasoningParser:
    """Streaming reasoning/content splitter for one response.

    Example:
        >>> p = ReasoningParser.create("qwen3")
        >>> p.feed("<think>\\nshort</th"), p.feed("ink>\\n\\nAnswer."), p.finish()
        (ReasoningDelta(reasoning='short', content=''), ReasoningDelta(reasoning='', content='Answer.'), ReasoningDelta(reasoning='', content=''))
    """

    __slots__ = ("_format", "_machine", "_skip_space", "_reasoning", "_content", "_finished", "_on_text_cb",
                 "_on_marker_cb")

    def __init__(self, fmt: ReasoningFormat, in_reasoning: bool | None = None) -> None:
        self._format = fmt
        start = REASONING if (fmt.in_reasoning if in_reasoning is None else in_reasoning) else BEFORE
        self._machine = MarkerMachine([[m for m, _, _ in row] for row in fmt.table], start)
        self._skip_space = start == REASONING
        self._reasoning = ""
        self._content = ""
        self._finished = False
        self._on_text_cb = self._on_text  # bound once: feed runs per token
        self._on_marker_cb = self._on_marker

    @classmethod
    def create(cls, name: str, in_reasoning: bool | None = None) -> "ReasoningParser":
        """A parser for family ``name`` (see :func:`reasoning_parser_names`); ``in_reasoning``
        says whether the prompt already opened the reasoning block (None: the family's default)."""
        from smg.parsers.registry import reasoning_format

        return cls(reasoning_format(name), in_reasoning)

    @property
    def in_reasoning(self) -> bool:
        return self._machine.state == REASONING

    def _on_text(self, text: str) -> None:
        if self._skip_space:
            text = text.lstrip()
            if not text:
                return
            self._skip_space = False
        if self._machine.state == REASONING:
            self._reasoning += text
        else:
            self._content += text

    def _on_marker(self, index: int) -> None:
        marker, nxt, keep = self._format.table[self._machine.state][index]
        if nxt != self._machine.state and nxt in (REASONING, CONTENT):
            self._skip_space = not keep
        self._machine.state = nxt
        if keep:
            self._on_text(marker)

    def _take(self) -> ReasoningDelta:
        if not self._reasoning and not self._content:
            return _EMPTY
        delta = _new_delta(ReasoningDelta, (self._reasoning, self._content))
        self._reasoning = self._content = ""
        return delta

    def feed(self, delta: str) -> ReasoningDelta:
        if type(delta) is not str or self._finished:
            check_text(delta, self._finished)
        self._machine.run(delta, self._on_text_cb, self._on_marker_cb)
        return self._take()

    def finish(self) -> ReasoningDelta:
        check_text("", self._finished)
        self._finished = True
        held = self._machine.held()
        if held:
            self._on_text(held)
        return self._take()

    def parse(self, text: str) -> ReasoningDelta:
        """Non-streaming: ``feed(text)`` + ``finish()`` of a fresh parser, merged."""
        first, last = self.feed(text), self.finish()
        return ReasoningDelta(first.reasoning + last.reasoning, first.content + last.content)
