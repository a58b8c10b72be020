"""Types of the compiled tool-call machines (``tool_scan.pyx``; twin ``tool_scan_py``)."""
from typing import Any, Iterable, Mapping, Sequence

from smg._ext.tool_scan_py import ToolBatch as ToolBatch
from smg._ext.tool_scan_py import ToolCallDelta as ToolCallDelta
from smg._ext.tool_scan_py import ToolDelta as ToolDelta

class _ToolMachine:
    calls: int
    def feed(self, text: str) -> ToolDelta: ...
    def feed_batch(self, text: str, ends: Sequence[int]) -> ToolBatch: ...
    def finish(self) -> ToolDelta: ...

class HeaderMachine(_ToolMachine):
    """Marker, header, separator, body, end marker; the body raw JSON or read by ``fmt.decode``."""

    def __init__(self, fmt: Any, tools: Iterable[Mapping[str, Any]] | None = None, state: int = 0,
                 **options: Any) -> None: ...

class JsonMachine(_ToolMachine):
    """JSON call objects inside markers, or bare at the start of the output."""

    START: int
    BLOCK: int
    OBJECT: int
    def __init__(self, fmt: Any, tools: Iterable[Mapping[str, Any]] | None = None, state: int | None = None,
                 **options: Any) -> None: ...
