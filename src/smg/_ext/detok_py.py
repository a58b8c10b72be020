"""Reference twin of ``detok.pyx``: incremental UTF-8 detokenization over a token -> bytes table.

For byte-level tokenizers (GPT-2 style ``ByteLevel`` decoder: Llama 3, DeepSeek, Qwen, GPT-OSS)
``decode(ids)`` is exactly ``concat(table[id] for id in ids).decode("utf-8", "replace")``, with
special tokens left out when skipped. Streaming that is a matter of UTF-8 boundaries:

* a token whose bytes are complete UTF-8 on their own, arriving with nothing held back, is emitted
  as its precomputed str (the common case: one table lookup, no allocation);
* otherwise the held bytes and the token's bytes are joined; the longest tail that is a *valid but
  incomplete* UTF-8 sequence (at most 3 bytes) is held back, everything before it is decoded with
  U+FFFD for invalid sequences, exactly as the one-shot decode will render it (maximal subparts);
* ``finish`` decodes what is still held (an incomplete sequence at the end becomes U+FFFD, as in
  ``decode``).

Clean-up of tokenization spaces (transformers' ``clean_up_tokenization``, on when the tokenizer
config says so: it drops the space before ``. ? ! ,`` and contractions) is streamed too: text is
released up to the last point no clean-up pattern can span, i.e. unless the text after the last
space is a proper prefix of a pattern's remainder (``""``, ``'``, ``n``, ``n'``, ``'v``, ``'r``),
at most four characters are held. A token that needs no holding on its own has its cleaned str
precomputed, so the common case stays one lookup.

Invariant: ``"".join(step(i) for i in ids) + finish() == decode(ids)`` for every id sequence.
Cost per token: O(1) for complete tokens, O(len(token)) otherwise.
"""
from __future__ import annotations

from typing import Iterable, Sequence

SPECIAL = 1
COMPLETE = 2
CLEAN_SAFE = 4  # its text needs no clean-up hold-back on its own

_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
# Proper prefixes of what follows the space in a clean-up pattern: after a space, these may still
# grow into a pattern, so the text from that space on is held back.
_HOLD_TAILS = frozenset({"", "'", "n", "n'", "'v", "'r"})


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: drop spaces before punctuation and contractions."""
    for old, new in _CLEANUPS:
        text = text.replace(old, new)
    return text


def cleanup_cut(text: str) -> int:
    """The longest prefix of ``text`` whose clean-up cannot change whatever follows."""
    end = len(text)
    while True:
        space = text.rfind(" ", 0, end)
        if space < 0 or text[space + 1 : end] not in _HOLD_TAILS:
            return end
        end = space


class CleanupStage:
    """Streams ``clean_up_tokenization`` over text deltas (used by the general decode path)."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        if not text:
            return ""
        buf = self._held + text
        cut = cleanup_cut(buf)
        self._held = buf[cut:]
        return clean_up_tokenization(buf[:cut])

    def finish(self) -> str:
        out, self._held = clean_up_tokenization(self._held), ""
        return out


def incomplete_tail(buf: bytes) -> int:
    """Length of the trailing valid-but-incomplete UTF-8 sequence of ``buf`` (0 to 3)."""
    n = len(buf)
    for back in range(1, min(3, n) + 1):
        lead = buf[n - back]
        if lead & 0xC0 == 0x80:  # continuation byte: keep looking for the lead
            continue
        if 0xC2 <= lead <= 0xDF:
            need = 2
        elif 0xE0 <= lead <= 0xEF:
            need = 3
        elif 0xF0 <= lead <= 0xF4:
            need = 4
        else:
            return 0  # ASCII or an invalid lead: nothing to wait for
        if back >= need:
            return 0
        if back >= 2:  # the second byte has a narrower range after some leads
            second = buf[n - back + 1]
            low, high = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF),
                         0xF4: (0x80, 0x8F)}.get(lead, (0x80, 0xBF))
            if not low <= second <= high:
                return 0
        return back
    return 0


class TokenTable:
    """Per-tokenizer table: id -> bytes, whether it is special, and its str when complete (cleaned
    up when ``cleanup``)."""

    def __init__(self, token_bytes: Sequence[bytes | None], special_ids: Iterable[int],
                 cleanup: bool = False) -> None:
        self.cleanup = cleanup
        self.data = [b if b is not None else b"" for b in token_bytes]
        self.flags = [0] * len(self.data)
        self.texts: list[str | None] = [None] * len(self.data)
        for i, b in enumerate(self.data):
            try:
                text = b.decode("utf-8")
            except UnicodeDecodeError:
                continue
            self.flags[i] |= COMPLETE
            if cleanup_cut(text) == len(text):
                self.flags[i] |= CLEAN_SAFE
            self.texts[i] = clean_up_tokenization(text) if cleanup else text
        for i in special_ids:
            if 0 <= i < len(self.data):
                self.flags[i] |= SPECIAL

    def __len__(self) -> int:
        return len(self.data)


class ByteStreamDecoder:
    """One request's incremental decoder over a :class:`TokenTable`."""

    def __init__(self, table: TokenTable, skip_special_tokens: bool = True) -> None:
        self._table = table
        self._skip = skip_special_tokens
        self._pending = b""
        self._held = ""  # clean-up hold-back (always "" without clean-up)

    def step(self, token_id: int) -> str:
        if token_id < 0:
            raise ValueError(f"token id {token_id} is negative")
        table = self._table
        if token_id >= len(table.data):
            return ""  # unknown ids decode to nothing, as in tokenizers
        flags = table.flags[token_id]
        if self._skip and flags & SPECIAL:
            return ""
        if not self._pending and not self._held and flags & COMPLETE and (
                flags & CLEAN_SAFE or not table.cleanup):
            return table.texts[token_id]  # type: ignore[return-value]
        return self._emit(self._pending + table.data[token_id])

    def _emit(self, buf: bytes) -> str:
        keep = incomplete_tail(buf)
        self._pending = buf[len(buf) - keep :]
        text = buf[: len(buf) - keep].decode("utf-8", "replace")
        if not self._table.cleanup:
            return text
        text = self._held + text
        cut = cleanup_cut(text)
        self._held = text[cut:]
        return clean_up_tokenization(text[:cut])

    def feed(self, ids: Iterable[int]) -> str:
        buf = b"".join(self._table.data[i] for i in self._checked(ids)
                       if i < len(self._table.data) and not (self._skip and self._table.flags[i] & SPECIAL))
        return self._emit(self._pending + buf)

    @staticmethod
    def _checked(ids: Iterable[int]) -> list[int]:
        ids = list(ids)
        for i in ids:
            if i < 0:
                raise ValueError(f"token id {i} is negative")
        return ids

    def start_output(self) -> None:
        """The ids fed so far were prompt context: keep their incomplete UTF-8 tail, drop the
        clean-up hold-back (clean-up applies to the generated text alone)."""
        self._held = ""

    def finish(self) -> str:
        text = self._held + self._pending.decode("utf-8", "replace")
        self._pending, self._held = b"", ""
        return clean_up_tokenization(text) if self._table.cleanup else text
