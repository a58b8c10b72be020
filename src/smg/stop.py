"""Stop conditions of one generation: stop strings, stop token ids, EOS, min/max tokens.

Per step the gateway hands the checker the generated token id and the text the detokenizer
released for it; the checker answers with the text that may go to the client now and whether
generation is over (``finish_reason`` ``"stop"`` or ``"length"``, ``matched_stop`` the string or
token id), with vLLM's semantics:

* nothing stops before ``min_tokens`` tokens (stop strings and stop ids alike);
* a stop token id (and the tokenizer's EOS ids unless ``ignore_eos``) ends generation; its own
  text is dropped unless ``include_stop_str_in_output``;
* a stop string ends generation where it first completes; the text before it is returned (and
  the string itself with ``include_stop_str_in_output``); text that might begin a stop string is
  held back until it cannot (so what streams out equals the non-streaming result);
* ``max_tokens`` ends generation with ``"length"`` after the token's text.

The checker and the Aho–Corasick string matcher are the compiled kernel ``smg._ext.stop_matcher``
(twin: ``stop_matcher_py``); automata are cached per distinct stop-string set.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable

from smg import _ext
from smg.errors import InvalidRequest

kernel = _ext.load("stop_matcher")

StopChecker = kernel.StopChecker
StopDelta = kernel.StopDelta

__all__ = ["StopParams", "StopDelta", "StopChecker", "new_checker"]


@dataclass(frozen=True)
class StopParams:
    """A request's stop conditions (OpenAI ``stop``/``max_tokens``, vLLM/SGLang extensions)."""

    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    max_tokens: int | None = None
    include_stop_str_in_output: bool = False

    def checker(self, eos_token_ids: Iterable[int] = ()) -> StopChecker:
        """A fresh :class:`StopChecker` for one generation with these conditions."""
        return new_checker(self, eos_token_ids)

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        if any(not isinstance(s, str) or not s for s in stop):
            raise InvalidRequest("stop must be a non-empty string or a list of non-empty strings")
        object.__setattr__(self, "stop", stop)
        ids = tuple(self.stop_token_ids or ())
        if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in ids):
            raise InvalidRequest("stop_token_ids must be non-negative integers")
        object.__setattr__(self, "stop_token_ids", ids)
        if not isinstance(self.min_tokens, int) or self.min_tokens < 0:
            raise InvalidRequest("min_tokens must be a non-negative integer")
        if self.max_tokens is not None:
            if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 1:
                raise InvalidRequest("max_tokens must be a positive integer")
            if self.min_tokens > self.max_tokens:
                raise InvalidRequest(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")


@functools.lru_cache(maxsize=256)
def _automaton(stop: tuple[str, ...]):
    return kernel.StopAutomaton(list(stop))


def new_checker(params: StopParams, eos_token_ids: Iterable[int] = ()) -> StopChecker:
    """A fresh checker for one generation (automata are shared between equal stop sets)."""
    stop_ids = frozenset(params.stop_token_ids)
    if not params.ignore_eos:
        stop_ids |= frozenset(eos_token_ids)
    return kernel.StopChecker(params.stop, stop_ids, params.min_tokens, params.max_tokens or 0,
                              params.include_stop_str_in_output,
                              _automaton(params.stop) if params.stop else None)
