"""Types of the compiled byte-level BPE encoder (``bpe.pyx``; twin ``bpe_py``)."""
from typing import Any, Iterable, Sequence

CL100K_PATTERN: str
DEEPSEEK_PATTERNS: tuple[str, ...]
SCHEMES: tuple[str, ...]

class ByteLevelBPE:
    """Pre-tokenisation (``scheme``) and byte-level BPE merges, the GIL released per text."""

    def __init__(self, byte_ids: Sequence[int], merges: Any, added: Any, normalized_added: Any = (),
                 scheme: str = "cl100k", whole_words: Any = None) -> None: ...
    def encode(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]: ...
