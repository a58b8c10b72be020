"""Reference twin of ``smg._ext.bpe``: byte-level BPE encoding with the cl100k-style pre-tokenizer.

This is the executable specification of what the compiled kernel computes, and what HuggingFace
``tokenizers`` computes for a ``tokenizer.json`` whose pre-tokenizer is the Split regex
``CL100K_PATTERN`` (Isolated) followed by ByteLevel without its own regex, and whose model is a
byte-level BPE without dropout, unknown token or affixes (Llama 3, GPT-4-style vocabularies):

1. The text is cut at added tokens (leftmost-longest match over the raw text), whose ids are
   emitted as they are.
2. Each remaining segment is split into pieces by ``CL100K_PATTERN``, written out below as the
   choice of alternatives it encodes (no regex engine: the kernel walks the same rules in C).
3. Each piece's UTF-8 bytes start as one token per byte; the pair of adjacent tokens with the
   lowest merge rank is merged, the leftmost on ties, until no adjacent pair has a merge.

Character classes follow the regex: ``\\p{L}`` and ``\\p{N}`` are the Unicode general categories
L* and N*; ``\\s`` is the Unicode White_Space property. The categories come from ``unicodedata2``
16.0, the Unicode version of the Oniguruma inside ``tokenizers`` (Python 3.11's own database is
14.0: ~9,400 newer letters and digits would split differently); the tests check every code point.
"""
from __future__ import annotations

import functools
import re

import unicodedata2 as unicodedata

__all__ = ["CL100K_PATTERN", "ByteLevelBPE", "char_classes", "split_pieces"]

CL100K_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

OTHER, LETTER, NUMBER, SPACE, NEWLINE = 0, 1, 2, 4, 12  # NEWLINE (\r, \n) is a SPACE too
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009" \
               "\u200a\u2028\u2029\u202f\u205f\u3000"
# What `(?i:'s|'t|'re|'ve|'m|'ll|'d)` accepts after the apostrophe: case-insensitive, and U+017F
# (long s) folds to "s".
_CONTRACTIONS = {"s": 1, "S": 1, "\u017f": 1, "t": 1, "T": 1, "m": 1, "M": 1, "d": 1, "D": 1}
_CONTRACTION_PAIRS = {("r", "e"), ("v", "e"), ("l", "l")}


def char_class(ch: str) -> int:
    if ch in "\r\n":
        return NEWLINE
    if ch in _WHITE_SPACE:
        return SPACE
    category = unicodedata.category(ch)[0]
    return LETTER if category == "L" else NUMBER if category == "N" else OTHER


@functools.lru_cache(maxsize=1)
def char_classes() -> bytes:
    """``char_class`` of every code point, as the kernel's lookup table (built once, ~0.2 s)."""
    return bytes(char_class(chr(cp)) if not 0xD800 <= cp < 0xE000 else OTHER for cp in range(0x110000))


def _contraction(text: str, i: int) -> int:
    """Length of the contraction starting at the apostrophe ``text[i]`` (0: none)."""
    if i + 1 >= len(text):
        return 0
    if text[i + 1] in _CONTRACTIONS:
        return 2
    if i + 2 < len(text) and (text[i + 1].lower(), text[i + 2].lower()) in _CONTRACTION_PAIRS:
        return 3
    return 0


def split_pieces(text: str) -> list[str]:
    """``CL100K_PATTERN``'s matches in ``text`` (they cover it: every character starts a match)."""
    table = char_classes()
    classes = [table[ord(ch)] for ch in text]
    n = len(text)
    pieces = []
    i = 0
    while i < n:
        k = classes[i]
        j = i
        if text[i] == "'" and _contraction(text, i):                       # 's 't 're 've 'm 'll 'd
            j = i + _contraction(text, i)
        elif k == LETTER or (k in (OTHER, SPACE) and i + 1 < n and classes[i + 1] == LETTER):
            j = i + 1                                                         # [^\r\n\pL\pN]?\pL+
            while j < n and classes[j] == LETTER:
                j += 1
        elif k == NUMBER:                                                     # \pN{1,3}
            while j < n and j < i + 3 and classes[j] == NUMBER:
                j += 1
        elif k == OTHER or (text[i] == " " and i + 1 < n and classes[i + 1] == OTHER):
            j = i + 1                                                         # " ?[^\s\pL\pN]+[\r\n]*"
            while j < n and classes[j] == OTHER:
                j += 1
            while j < n and classes[j] == NEWLINE:
                j += 1
        else:  # a space: the longest whitespace run ending in a newline, else the \s+ rules
            end, last_newline = i, -1
            while end < n and classes[end] & SPACE:
                if classes[end] == NEWLINE:
                    last_newline = end
                end += 1
            if last_newline >= 0:                                             # \s*[\r\n]+
                j = last_newline + 1
            elif end == n or end - 1 == i:                                    # \s+(?!\S), \s+
                j = end
            else:
                j = end - 1                                                   # \s+(?!\S): leave one
        pieces.append(text[i:j])
        i = j
    return pieces


class ByteLevelBPE:
    """Encode text to ids. ``byte_ids[b]``: the token of byte ``b``; ``merges``: (left, right,
    merged) token ids in rank order; ``added``: (content, id) of the added tokens."""

    def __init__(self, byte_ids, merges, added) -> None:
        if len(byte_ids) != 256:
            raise ValueError("byte_ids needs one id per byte value")
        self.byte_ids = list(byte_ids)
        self.merges: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (left, right, merged) in enumerate(merges):
            self.merges[(left, right)] = (rank, merged)  # a repeated pair keeps its last rank, as in tokenizers
        self.added = dict(added)
        # Alternatives longest first: at the leftmost position that matches, the longest wins.
        self._added_pattern = re.compile("|".join(re.escape(c) for c in sorted(self.added, key=len, reverse=True))) \
            if self.added else None
        self._merged: dict[str, list[int]] = {}  # piece -> its ids (pieces repeat a lot)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        start = 0
        for match in self._added_pattern.finditer(text) if self._added_pattern is not None else ():
            self._encode_segment(text[start:match.start()], ids)
            ids.append(self.added[match.group()])
            start = match.end()
        self._encode_segment(text[start:], ids)
        return ids

    def encode_batch(self, texts) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def _encode_segment(self, text: str, ids: list[int]) -> None:
        for piece in split_pieces(text):
            merged = self._merged.get(piece)
            if merged is None:
                if len(self._merged) >= 1 << 16:
                    self._merged.clear()
                merged = self._merged[piece] = self._merge([self.byte_ids[b] for b in piece.encode("utf-8")])
            ids.extend(merged)

    def _merge(self, symbols: list[int]) -> list[int]:
        while len(symbols) > 1:
            best = None
            for i in range(len(symbols) - 1):
                found = self.merges.get((symbols[i], symbols[i + 1]))
                if found is not None and (best is None or found[0] < best[0]):
                    best = (found[0], i, found[1])
            if best is None:
                break
            _, i, merged = best
            symbols[i:i + 2] = [merged]
        return symbols
