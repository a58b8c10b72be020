"""The L1 kernel: the compiled module equals its twin, and the scan equals tokenizers' matching."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg._ext import token_cache_py as twin

ALPHABET = ["<", "|", ">", "a", "b", "é", "☃", "😀", " ", "\n", "｜", "▁"]
token_text = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=5).map("".join)
tokens = st.lists(st.tuples(token_text, st.integers(0, 50), st.booleans()), max_size=8)
texts = st.lists(st.sampled_from(ALPHABET + ["<|a|>", "xyz"]), max_size=60).map("".join)


@given(raw=tokens, normalized=tokens, text=texts)
@settings(max_examples=300, deadline=None)
def test_scan_matches_twin(token_cache_impl, raw, normalized, text):
    expected = twin.BoundaryScanner(raw, normalized).scan(text)
    assert token_cache_impl.BoundaryScanner(raw, normalized).scan(text) == expected


@given(raw=tokens, text=texts)
@settings(max_examples=200, deadline=None)
def test_cuts_are_consistent(token_cache_impl, raw, text):
    cuts = token_cache_impl.BoundaryScanner(raw).scan(text)
    data = text.encode()
    for k, cut in enumerate(cuts):
        assert cut.prefix_hash == twin.prefix_hash([c.byte_end for c in cuts[: k + 1]], data)
        assert any(text.startswith(c, cut.char_start) and data[: cut.byte_end].endswith(c.encode())
                   for c, i, is_cut in raw if i == cut.token_id and is_cut)
    assert [c.byte_end for c in cuts] == sorted(c.byte_end for c in cuts)


def test_scan_is_leftmost_longest(token_cache_impl):
    scanner = token_cache_impl.BoundaryScanner([("<a>", 1, True), ("<a>b", 2, True), ("a>b<", 3, True)])
    assert [c.token_id for c in scanner.scan("x<a>b<a>")] == [2, 1]


def test_second_pass_only_in_gaps(token_cache_impl):
    # "ab" (normalized) would match first at 0 if the passes were merged; tokenizers finds "bc".
    scanner = token_cache_impl.BoundaryScanner([("bc", 1, True)], [("ab", 2, True)])
    assert [(c.char_start, c.token_id) for c in scanner.scan("abcab")] == [(1, 1), (3, 2)]


def test_lone_surrogate_raises_unicode_error(token_cache_impl):
    with pytest.raises(UnicodeEncodeError):
        token_cache_impl.BoundaryScanner([("<a>", 1, True)]).scan("x\ud800<a>")


@given(text=texts, other=texts, raw=tokens)
@settings(max_examples=200, deadline=None)
def test_find_longest_prefix_matches_twin(token_cache_impl, text, other, raw):
    scanner = twin.BoundaryScanner(raw)
    table = {}
    other_cuts = scanner.scan(other)
    if other_cuts:
        entry = twin.Entry(other.encode()[: other_cuts[-1].byte_end], list(range(100)), [], 0)
        for n, cut in enumerate(other_cuts):
            table[cut.prefix_hash] = (entry, n)
    cuts = scanner.scan(text)
    expected = twin.find_longest_prefix(cuts, text, table)
    assert token_cache_impl.find_longest_prefix(cuts, text, table) == expected
    if expected[0] >= 0:
        assert text.encode()[: cuts[expected[0]].byte_end] == expected[1].utf8[: cuts[expected[0]].byte_end]


def test_hash_collision_is_a_miss(token_cache_impl):
    scanner = twin.BoundaryScanner([("<a>", 1, True)])
    cut = scanner.scan("x<a>")[0]
    forged = twin.Entry(b"y<a>", [5, 1], [], 0)  # same length, same key, other bytes
    assert token_cache_impl.find_longest_prefix([cut], "x<a>", {cut.prefix_hash: (forged, 2)}) == (-1, None, 0)


@given(ids=st.lists(st.integers(0, 20), max_size=40), data=st.data())
@settings(max_examples=200, deadline=None)
def test_cut_positions_and_splice_match_twin(token_cache_impl, ids, data):
    cut_id_set = data.draw(st.sets(st.integers(0, 20), max_size=4))
    bitmap = bytearray(3)
    for i in cut_id_set:
        bitmap[i >> 3] |= 1 << (i & 7)
    cuts = [twin.Cut(0, 0, 0, i) for i in ids if i in cut_id_set]
    if data.draw(st.booleans()) and cuts:
        cuts = cuts[:-1]  # misaligned on purpose
    assert token_cache_impl.cut_positions(ids, cuts, bytes(bitmap)) == twin.cut_positions(ids, cuts, bytes(bitmap))
    n = data.draw(st.integers(0, len(ids)))
    tail = data.draw(st.lists(st.integers(0, 99), max_size=10))
    skip = data.draw(st.integers(0, len(tail)))
    assert token_cache_impl.splice(ids, n, tail, skip) == twin.splice(ids, n, tail, skip)
