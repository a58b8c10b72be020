"""Reference twin of ``smg._ext.bpe``: byte-level BPE encoding behind a known Split pre-tokenizer.

This is the executable specification of what the compiled kernel computes, and what HuggingFace
``tokenizers`` computes for a ``tokenizer.json`` whose model is a byte-level BPE without dropout,
unknown token or affixes, and whose pre-tokenizer is one of two known Split schemes followed by
ByteLevel without its own regex:

* ``"cl100k"``: the single Split ``CL100K_PATTERN`` (Llama 3, GPT-4-style vocabularies);
* ``"deepseek"``: the Splits ``DEEPSEEK_PATTERNS`` applied in turn, each to the pieces of the last
  (numbers in runs of up to three, then runs of CJK characters, then words, punctuation and
  whitespace; what the last pattern does not match stays a piece of its own).

1. The text is cut at added tokens (leftmost-longest over the raw text; then, in what is left,
   the ``normalized`` added tokens: the normalizer is the identity), whose ids are emitted as they are.
2. Each remaining segment is split into pieces by the scheme, written out below as the choice of
   alternatives its patterns encode (no regex engine: the kernel walks the same rules in C).
3. A piece whose bytes are one vocabulary token is that token when ``whole_words`` is given (BPE's
   ``ignore_merges``, as in Meta's Llama 3 files). Otherwise its UTF-8 bytes start as one token per
   byte; the pair of adjacent tokens with the lowest merge rank is merged, the leftmost on ties,
   until no adjacent pair has a merge.

Character classes follow the regexes: ``\\p{L}``, ``\\p{N}``, ``\\p{M}``, ``\\p{P}``, ``\\p{S}`` are the
Unicode general categories; ``\\s`` is the Unicode White_Space property. The categories come from
``unicodedata2`` 16.0, the Unicode version of the Oniguruma inside ``tokenizers`` (Python 3.11's
own database is 14.0: ~9,400 newer letters and digits would split differently); the tests check
every code point.
"""
from __future__ import annotations

import functools

import unicodedata2 as unicodedata

from smg._ext.token_cache_py import BoundaryScanner

__all__ = ["CL100K_PATTERN", "DEEPSEEK_PATTERNS", "SCHEMES", "ByteLevelBPE", "char_classes", "split_pieces"]

CL100K_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

DEEPSEEK_PATTERNS = ("\\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
                     "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
                     "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+")
SCHEMES = ("cl100k", "deepseek")

# Classes: one of these, in the low nibble what CL100K_PATTERN tells apart (M, P, S are OTHER there).
OTHER, LETTER, NUMBER, SPACE, NEWLINE, MARK, PUNCT, SYMBOL = 0, 1, 2, 4, 12, 16, 32, 64  # NEWLINE is a SPACE
_CL100K_MASK = 15
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009" \
               "\u200a\u2028\u2029\u202f\u205f\u3000"
# What `(?i:'s|'t|'re|'ve|'m|'ll|'d)` accepts after the apostrophe: case-insensitive, and U+017F
# (long s) folds to "s".
_CONTRACTIONS = frozenset("sS\u017ftTmMdD")
_CONTRACTION_PAIRS = frozenset({("r", "e"), ("v", "e"), ("l", "l")})
_CATEGORY_CLASSES = {"L": LETTER, "N": NUMBER, "M": MARK, "P": PUNCT, "S": SYMBOL}


def char_class(ch: str) -> int:
    if ch in "\r\n":
        return NEWLINE
    if ch in _WHITE_SPACE:
        return SPACE
    return _CATEGORY_CLASSES.get(unicodedata.category(ch)[0], OTHER)


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


def split_pieces(text: str, scheme: str = "cl100k") -> list[str]:
    """The pieces ``scheme``'s pre-tokenizer cuts ``text`` into."""
    table = char_classes()
    classes = [table[ord(ch)] for ch in text]
    pieces: list[str] = []
    if scheme == "cl100k":
        _split_cl100k(text, [k & _CL100K_MASK for k in classes], pieces)
    elif scheme == "deepseek":
        _split_deepseek(text, classes, pieces)
    else:
        raise ValueError(f"unknown pre-tokenizer scheme {scheme!r}")
    return pieces


def _split_cl100k(text: str, classes: list[int], pieces: list[str]) -> None:
    """``CL100K_PATTERN``'s matches (they cover the text: every character starts a match)."""
    n = len(text)
    i = 0
    while i < n:
        k = classes[i]
        j = i
        contraction = _contraction(text, i) if text[i] == "'" else 0
        if contraction:                                                       # 's 't 're 've 'm 'll 'd
            j = i + contraction
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
        else:                                                                 # whitespace
            j = _whitespace_end(classes, i, n)
        pieces.append(text[i:j])
        i = j


def _whitespace_end(classes: list[int], i: int, end: int) -> int:
    """Where ``\\s*[\\r\\n]+``, else ``\\s+(?!\\S)``, else ``\\s+`` ends, from the whitespace at ``i``
    in a text that ends at ``end``."""
    run_end, last_newline = i, -1
    while run_end < end and classes[run_end] & SPACE:
        if classes[run_end] == NEWLINE:
            last_newline = run_end
        run_end += 1
    if last_newline >= 0:
        return last_newline + 1
    if run_end == end or run_end - 1 == i:
        return run_end
    return run_end - 1


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fa5" or "\u3040" <= ch <= "\u309f" or "\u30a0" <= ch <= "\u30ff"


def _split_deepseek(text: str, classes: list[int], pieces: list[str]) -> None:
    """``DEEPSEEK_PATTERNS`` in turn: number runs cut in threes; in between, CJK runs and the rest,
    each cut by the last pattern."""
    n, i = len(text), 0
    while i < n:
        j = i
        if classes[i] == NUMBER:                                            # \pN{1,3}
            while j < n and j < i + 3 and classes[j] == NUMBER:
                j += 1
            pieces.append(text[i:j])
        else:
            while j < n and classes[j] != NUMBER:
                j += 1
            k = i
            while k < j:  # CJK runs and what lies between them, each a text of its own
                cjk, m = _is_cjk(text[k]), k + 1
                while m < j and _is_cjk(text[m]) == cjk:
                    m += 1
                _split_words(text, classes, k, m, pieces)
                k = m
        i = j


def _split_words(text: str, classes: list[int], start: int, end: int, pieces: list[str]) -> None:
    """The last DeepSeek pattern over text[start:end]: its matches, and the runs between them that
    no alternative matches, each a piece."""
    gap = i = start
    while i < end:
        j = _match_words(text, classes, i, end)
        if j:
            if gap < i:
                pieces.append(text[gap:i])
            pieces.append(text[i:j])
            gap = i = j
        else:
            i += 1
    if gap < end:
        pieces.append(text[gap:end])


def _match_words(text: str, classes: list[int], i: int, end: int) -> int:
    """The end of the pattern's match at ``i`` (0: no alternative matches there)."""
    k = classes[i]
    following = classes[i + 1] if i + 1 < end else None
    if text[i] in _ASCII_PUNCT and i + 1 < end and text[i + 1].isascii() and text[i + 1].isalpha():
        j = i + 1                                                           # [punct][A-Za-z]+
        while j < end and text[j].isascii() and text[j].isalpha():
            j += 1
        return j
    if k in (LETTER, MARK) or (k not in (NEWLINE, LETTER, PUNCT, SYMBOL) and following in (LETTER, MARK)):
        j = i + 1                                                           # [^\r\n\pL\pP\pS]?[\pL\pM]+
        while j < end and classes[j] in (LETTER, MARK):
            j += 1
        return j
    if k in (PUNCT, SYMBOL) or (text[i] == " " and following in (PUNCT, SYMBOL)):
        j = i + 1                                                           # " ?[\pP\pS]+[\r\n]*"
        while j < end and classes[j] in (PUNCT, SYMBOL):
            j += 1
        while j < end and classes[j] == NEWLINE:
            j += 1
        return j
    if k & SPACE:
        return _whitespace_end(classes, i, end)
    return 0


class ByteLevelBPE:
    """Encode text to ids. ``byte_ids[b]``: the token of byte ``b``; ``merges``: (left, right,
    merged) token ids in rank order; ``added``: (content, id) of the added tokens matched in the raw
    text, ``normalized_added`` those matched after; ``scheme``: the pre-tokenizer (``SCHEMES``);
    ``whole_words``: (bytes, id) of the vocabulary, for ``ignore_merges`` (None: always merge)."""

    def __init__(self, byte_ids, merges, added, normalized_added=(), scheme: str = "cl100k",
                 whole_words=None) -> None:
        if len(byte_ids) != 256:
            raise ValueError("byte_ids needs one id per byte value")
        if scheme not in SCHEMES:
            raise ValueError(f"unknown pre-tokenizer scheme {scheme!r}")
        self.byte_ids = list(byte_ids)
        self.scheme = scheme
        self.merges: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (left, right, merged) in enumerate(merges):
            self.merges[(left, right)] = (rank, merged)  # a repeated pair keeps its last rank, as in tokenizers
        # the token cache's scanner finds added tokens as tokenizers does (no cuts wanted here)
        self._added = BoundaryScanner([(c, i, False) for c, i in added], [(c, i, False) for c, i in normalized_added])
        self._merged: dict[str, list[int]] = {}  # piece -> its ids (pieces repeat a lot)
        self.whole_words = dict(whole_words) if whole_words is not None else None

    def encode(self, text: str) -> list[int]:
        buf = text.encode("utf-8")  # UnicodeEncodeError for lone surrogates, as the kernel
        ids: list[int] = []
        start = 0
        for begin, end, token_id, _ in self._added.matches(buf):
            self._encode_segment(buf[start:begin].decode("utf-8"), ids)
            ids.append(token_id)
            start = end
        self._encode_segment(buf[start:].decode("utf-8"), ids)
        return ids

    def encode_batch(self, texts) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def _encode_segment(self, text: str, ids: list[int]) -> None:
        for piece in split_pieces(text, self.scheme):
            merged = self._merged.get(piece)
            if merged is None:
                if len(self._merged) >= 1 << 16:
                    self._merged.clear()
                data = piece.encode("utf-8")
                word = self.whole_words.get(data) if self.whole_words is not None else None
                merged = self._merged[piece] = [word] if word is not None else self._merge(
                    [self.byte_ids[b] for b in data])
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
