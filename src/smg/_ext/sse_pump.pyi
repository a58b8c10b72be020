"""Types of the compiled plain-stream pump (``sse_pump.pyx``; twin ``sse_pump_py``)."""
from typing import Any, Iterable

from smg._ext.stop_matcher import StopChecker

def json_string(text: str) -> bytes: ...

class PlainPump:
    """One plain choice: detokenizer -> stop rules -> SSE event bytes."""

    started: bool
    finished: bool
    tokens: int
    finish_reason: Any
    matched: Any
    text: str
    def __init__(self, detok: Any, stop: StopChecker, first_head: bytes, head: bytes, tail: bytes) -> None: ...
    def feed(self, token_ids: Iterable[int]) -> bytes | None: ...
    def feed_text(self, token_ids: Iterable[int]) -> str | None: ...
