"""Reference twin of ``token_cache.pyx``: the specification of the L1 cache's hot part.

Algorithm (shared by both implementations, which tests hold equal):

* **Boundary scan.** HuggingFace ``tokenizers`` first cuts the input at added tokens, then
  normalizes, pre-tokenizes and models each piece on its own. Tokens not marked ``normalized`` are
  found on the raw text by a leftmost-longest scan; ``normalized`` ones afterwards, inside the gaps,
  on the normalized text. :class:`BoundaryScanner` replays exactly those two passes over the UTF-8
  bytes (the second only when the normalizer is the identity) so its matches are the tokenizer's.
  A match of a *cut* token (no lstrip/rstrip/single_word, an id the model can never produce from
  plain text) is a safe place to splice: the ids before it never depend on the text after it.
* **Hashing.** For every cut the scan reports a 64-bit hash of the UTF-8 bytes that end with the
  token: the L1 key of that prefix. It is chained cut to cut (``h_k = mix(h_{k-1}, segment_k)``,
  eight bytes per multiply), which is a function of the prefix alone because the cuts before a cut
  are (whenever that cut exists, the matches before it saw the same bytes). A key hit is confirmed
  by comparing the bytes themselves, so a hash collision costs a miss, never a wrong result.
* **Lookup.** :func:`find_longest_prefix` tries the cuts from the last to the first.
* **Splice.** The cached prefix ids, then the ids of ``token + rest`` without their first id (the
  token is re-encoded with the tail so position-dependent pre-tokenizers see the same context).

Complexity: scan and hash O(len(text)) bytes; lookup O(cuts) dict probes plus one memcmp;
splice O(ids). Cut = ``(char_start, byte_end, prefix_hash, token_id)``.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

HASH_SEED = 0xCBF29CE484222325
_WORD_PRIME = 0x9E3779B97F4A7C15
_BYTE_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


class Cut(NamedTuple):
    char_start: int  # index in the str where the token starts
    byte_end: int  # UTF-8 length of the prefix that ends with the token
    prefix_hash: int  # chained hash of those bytes (see mix_segment)
    token_id: int


class Entry:
    """One cached prefix: its UTF-8 bytes (up to its last cut) and their ids."""

    __slots__ = ("utf8", "ids", "keys", "nbytes")

    def __init__(self, utf8: bytes, ids: list[int], keys: list[int], nbytes: int) -> None:
        self.utf8 = utf8
        self.ids = ids
        self.keys = keys
        self.nbytes = nbytes


def mix_segment(h: int, data: bytes) -> int:
    """Fold one segment into the chained prefix hash: 8-byte little-endian words, then the tail
    bytes, then the length, each step an xor and a multiply (plus a shift to spread high bits)."""
    n = len(data)
    i = 0
    while i + 8 <= n:
        h = ((h ^ int.from_bytes(data[i : i + 8], "little")) * _WORD_PRIME) & _MASK
        h ^= h >> 29
        i += 8
    for b in data[i:]:
        h = ((h ^ b) * _BYTE_PRIME) & _MASK
    h = ((h ^ n) * _WORD_PRIME) & _MASK
    return h ^ (h >> 32)


def prefix_hash(cut_ends: list[int], data: bytes) -> int:
    """The key of ``data[:cut_ends[-1]]`` given the byte ends of all cuts up to it."""
    h, pos = HASH_SEED, 0
    for end in cut_ends:
        h = mix_segment(h, data[pos:end])
        pos = end
    return h


class BoundaryScanner:
    """Finds the added-token matches of a text as ``tokenizers`` does, and reports the cuts.

    ``raw_tokens`` / ``normalized_tokens``: ``(content, token_id, is_cut)`` for the tokens matched
    on the raw text and, in a second pass inside the gaps, those matched after normalization.
    """

    def __init__(
        self,
        raw_tokens: Iterable[tuple[str, int, bool]],
        normalized_tokens: Iterable[tuple[str, int, bool]] = (),
    ) -> None:
        self._passes = [self._index(raw_tokens), self._index(normalized_tokens)]

    @staticmethod
    def _index(tokens: Iterable[tuple[str, int, bool]]) -> dict[int, list[tuple[bytes, int, bool]]]:
        by_first: dict[int, list[tuple[bytes, int, bool]]] = {}
        for content, token_id, is_cut in tokens:
            data = content.encode("utf-8")
            if data:
                by_first.setdefault(data[0], []).append((data, token_id, is_cut))
        for candidates in by_first.values():
            candidates.sort(key=lambda c: -len(c[0]))  # longest first: leftmost-longest
        return by_first

    @staticmethod
    def _matches(index, buf: bytes, start: int, end: int) -> list[tuple[int, int, int, bool]]:
        found = []
        i = start
        while i < end:
            for data, token_id, is_cut in index.get(buf[i], ()):
                if i + len(data) <= end and buf.startswith(data, i):
                    found.append((i, i + len(data), token_id, is_cut))
                    i += len(data)
                    break
            else:
                i += 1
        return found

    def matches(self, buf: bytes) -> list[tuple[int, int, int, bool]]:
        """The added-token matches of ``buf`` (UTF-8) in order, ``(start, end, token_id, is_cut)``,
        as ``tokenizers`` finds them: leftmost-longest over the raw text, then the normalized
        tokens in the gaps."""
        first = self._matches(self._passes[0], buf, 0, len(buf))
        if not self._passes[1]:
            return first
        matches = []
        gap_start = 0
        for m in first + [(len(buf), len(buf), -1, False)]:
            matches += self._matches(self._passes[1], buf, gap_start, m[0])
            matches.append(m)
            gap_start = m[1]
        matches.pop()
        return matches

    def scan(self, text: str) -> list[Cut]:
        buf = text.encode("utf-8")  # UnicodeEncodeError for lone surrogates, as the kernel
        matches = self.matches(buf)
        cuts = []
        h, pos, chars = HASH_SEED, 0, 0
        for start, end, token_id, is_cut in matches:
            if not is_cut:
                continue
            chars += _count_chars(buf, pos, start)
            h = mix_segment(h, buf[pos:end])
            cuts.append(Cut(chars, end, h, token_id))
            chars += _count_chars(buf, start, end)
            pos = end
        return cuts


def _count_chars(buf: bytes, start: int, end: int) -> int:
    return sum(1 for b in buf[start:end] if b & 0xC0 != 0x80)


def find_longest_prefix(cuts: list[Cut], text: str, table: dict) -> tuple[int, Entry | None, int]:
    """The last cut whose prefix is cached: ``(cut index, entry, number of ids)``, or ``(-1, None, 0)``."""
    buf = None
    for k in range(len(cuts) - 1, -1, -1):
        cut = cuts[k]
        found = table.get(cut.prefix_hash)
        if found is None:
            continue
        entry, n_ids = found
        if buf is None:
            buf = text.encode("utf-8")
        if len(entry.utf8) >= cut.byte_end and entry.utf8[: cut.byte_end] == buf[: cut.byte_end]:
            return k, entry, n_ids
    return -1, None, 0


def cut_positions(ids: list[int], cuts: list[Cut], cut_ids: bytes) -> list[int] | None:
    """For each cut, how many ids end with its token; None if the ids do not align with the cuts.

    ``cut_ids`` is a bitmap (bit ``i`` set when id ``i`` is a cut token's), so any id in it can only
    come from an added-token match, and the j-th such id in ``ids`` is the j-th cut.
    """
    positions = []
    j = 0
    for p, token_id in enumerate(ids):
        if token_id >> 3 < len(cut_ids) and cut_ids[token_id >> 3] >> (token_id & 7) & 1:
            if j == len(cuts) or cuts[j].token_id != token_id:
                return None
            positions.append(p + 1)
            j += 1
    return positions if j == len(cuts) else None


def splice(prefix_ids: list[int], n_prefix: int, tail_ids: list[int], skip: int) -> list[int]:
    """``prefix_ids[:n_prefix] + tail_ids[skip:]`` as a new list."""
    return prefix_ids[:n_prefix] + tail_ids[skip:]
