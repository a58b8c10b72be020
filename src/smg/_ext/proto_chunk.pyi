"""Types of the compiled GenerateResponse reader (``proto_chunk.pyx``; twin ``proto_chunk_py``)."""
from typing import Any, Callable

def decode_chunk(data: bytes, layout: tuple[int, int, frozenset, frozenset]) -> tuple | None: ...

class ChunkDecoder:
    """``decoder(raw)``: a GenerateResponse's bytes as an ``output_class`` record, else ``fallback(raw)``."""

    def __init__(self, layout: tuple[int, int, frozenset, frozenset] | None, output_class: type,
                 fallback: Callable[[bytes], Any]) -> None: ...
    def __call__(self, raw: bytes) -> Any: ...
