"""Compiled byte-level BPE encoder behind the cl100k and DeepSeek pre-tokenizers; see ``bpe_py``
(its twin and specification) for the rules. The text is walked as UTF-8 bytes: added tokens are
found with the token cache's scanner, pieces are cut by the patterns' rules written out as code, and
each piece is merged through an open-addressing table of (left id, right id) -> (rank, merged id).
All of it runs without the GIL for texts long enough to be worth it.
"""
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.stdint cimport INT32_MAX, int32_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp

from smg._ext.bpe_py import CL100K_PATTERN, DEEPSEEK_PATTERNS, SCHEMES, char_classes
from smg._ext.token_cache cimport BoundaryScanner, Match

__all__ = ["CL100K_PATTERN", "DEEPSEEK_PATTERNS", "SCHEMES", "ByteLevelBPE"]


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL


cdef enum:  # character classes (bpe_py): NEWLINE has SPACE's bit; M, P, S are OTHER to cl100k
    OTHER = 0
    LETTER = 1
    NUMBER = 2
    SPACE = 4
    NEWLINE_BIT = 8
    NEWLINE = 12
    MARK = 16
    PUNCT = 32
    SYMBOL = 64
    CL100K_MASK = 15
    CL100K = 0
    DEEPSEEK = 1
    SMALL_PIECE = 64  # pieces up to this many bytes merge by rescanning; longer ones use a heap
    NOGIL_BYTES = 2048  # below this, releasing the GIL costs more than it lets others do


cdef struct MergeSlot:
    uint64_t key  # (left << 32 | right) + 1; 0: an empty slot
    int32_t rank
    int32_t merged


cdef struct WordSlot:  # a vocabulary token by its bytes, for ignore_merges
    uint64_t hash  # 0: an empty slot
    Py_ssize_t offset  # of its bytes in the blob
    Py_ssize_t length
    int32_t token


cdef inline uint64_t hash_bytes(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """FNV-1a with a final mix; never 0 (the empty slot's mark)."""
    cdef uint64_t h = 0xCBF29CE484222325ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 0x100000001B3ULL
    h ^= h >> 29
    return h if h else 1


cdef inline Py_ssize_t table_size(Py_ssize_t entries) noexcept:
    """Slots for an open-addressing table of ``entries``: a power of two, at most half full."""
    cdef Py_ssize_t size = 1
    while size < 2 * entries + 2:
        size <<= 1
    return size


cdef struct HeapItem:
    int32_t rank
    int32_t pos
    int32_t merged


cdef struct IdBuffer:
    int32_t* ids
    Py_ssize_t n
    Py_ssize_t cap


cdef inline int push_id(IdBuffer* out, int32_t token) noexcept nogil:
    cdef int32_t* grown
    if out.n == out.cap:
        grown = <int32_t*>realloc(out.ids, (2 * out.cap + 64) * sizeof(int32_t))
        if grown == NULL:
            return -1
        out.ids, out.cap = grown, 2 * out.cap + 64
    out.ids[out.n] = token
    out.n += 1
    return 0


cdef inline bint heap_less(HeapItem* a, HeapItem* b) noexcept nogil:
    return a.rank < b.rank or (a.rank == b.rank and a.pos < b.pos)


cdef inline void heap_push(HeapItem* heap, Py_ssize_t* n, int32_t rank, int32_t pos, int32_t merged) noexcept nogil:
    cdef Py_ssize_t i = n[0], parent
    cdef HeapItem item
    item.rank, item.pos, item.merged = rank, pos, merged
    n[0] += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not heap_less(&item, &heap[parent]):
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = item


cdef inline HeapItem heap_pop(HeapItem* heap, Py_ssize_t* n) noexcept nogil:
    cdef HeapItem top = heap[0], last
    cdef Py_ssize_t i = 0, child, size
    n[0] -= 1
    size = n[0]
    if size == 0:
        return top
    last = heap[size]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap_less(&heap[child + 1], &heap[child]):
            child += 1
        if not heap_less(&heap[child], &last):
            break
        heap[i] = heap[child]
        i = child
    heap[i] = last
    return top


cdef class ByteLevelBPE:
    """See ``bpe_py.ByteLevelBPE``."""

    cdef int32_t byte_ids[256]
    cdef MergeSlot* table
    cdef uint64_t mask
    cdef bytes classes_table  # one class per code point (``bpe_py.char_classes``)
    cdef const uint8_t* classes
    cdef BoundaryScanner added  # the token cache's scanner: finds added tokens as tokenizers does
    cdef int scheme
    cdef WordSlot* words  # NULL: merge every piece
    cdef uint64_t words_mask
    cdef bytes words_blob  # every token's bytes, end to end
    cdef const uint8_t* words_data

    def __cinit__(self, byte_ids, merges, added, normalized_added=(), scheme="cl100k", whole_words=None):
        cdef Py_ssize_t size, i
        cdef uint64_t key, slot
        if len(byte_ids) != 256:
            raise ValueError("byte_ids needs one id per byte value")
        if scheme not in SCHEMES:
            raise ValueError(f"unknown pre-tokenizer scheme {scheme!r}")
        self.scheme = CL100K if scheme == "cl100k" else DEEPSEEK
        for i in range(256):
            self.byte_ids[i] = byte_ids[i]
        merges = list(merges)
        size = table_size(len(merges))
        self.table = <MergeSlot*>calloc(size, sizeof(MergeSlot))  # zeroed: every slot empty
        if self.table == NULL:
            raise MemoryError()
        self.mask = size - 1
        for i, (left, right, merged) in enumerate(merges):
            key = ((<uint64_t><uint32_t>left) << 32 | <uint32_t>right) + 1
            slot = self._slot(key)
            # a repeated pair keeps its last rank, as in tokenizers
            self.table[slot].key, self.table[slot].rank, self.table[slot].merged = key, i, merged
        self.added = BoundaryScanner([(c, i, False) for c, i in added], [(c, i, False) for c, i in normalized_added])
        self.classes_table = char_classes()
        self.classes = <const uint8_t*>self.classes_table
        if whole_words is not None:
            self._build_words(list(whole_words))

    cdef int _build_words(self, list whole_words) except -1:
        cdef Py_ssize_t size = table_size(len(whole_words)), offset = 0
        cdef uint64_t h, slot
        cdef const uint8_t* blob
        self.words = <WordSlot*>calloc(size, sizeof(WordSlot))  # zeroed: every slot empty
        if self.words == NULL:
            raise MemoryError()
        self.words_mask = size - 1
        self.words_blob = b"".join(word for word, _ in whole_words)
        blob = self.words_data = <const uint8_t*>self.words_blob
        for word, token_id in whole_words:
            h = hash_bytes(blob + offset, len(word))
            slot = h & self.words_mask
            while self.words[slot].hash != 0:
                slot = (slot + 1) & self.words_mask
            self.words[slot].hash, self.words[slot].offset = h, offset
            self.words[slot].length, self.words[slot].token = len(word), token_id
            offset += len(word)
        return 0

    def __dealloc__(self):
        free(self.table)
        free(self.words)

    cdef inline int32_t _whole_word(self, const uint8_t* p, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        """The vocabulary token whose bytes are p[start:end], or -1."""
        cdef Py_ssize_t n = end - start
        cdef uint64_t h = hash_bytes(p + start, n)
        cdef uint64_t slot = h & self.words_mask
        cdef const uint8_t* blob = self.words_data
        while self.words[slot].hash != 0:
            if self.words[slot].hash == h and self.words[slot].length == n \
                    and memcmp(blob + self.words[slot].offset, p + start, n) == 0:
                return self.words[slot].token
            slot = (slot + 1) & self.words_mask
        return -1

    cdef inline uint64_t _slot(self, uint64_t key) noexcept nogil:
        """The slot holding ``key``, or the empty slot where it goes."""
        cdef uint64_t slot = ((key * 0x9E3779B97F4A7C15ULL) >> 24) & self.mask
        while self.table[slot].key != 0 and self.table[slot].key != key:
            slot = (slot + 1) & self.mask
        return slot

    cdef inline int32_t _rank(self, int32_t left, int32_t right, int32_t* merged) noexcept nogil:
        """The merge rank of the pair (INT32_MAX: none) and its merged id in *merged."""
        cdef uint64_t key = ((<uint64_t><uint32_t>left) << 32 | <uint32_t>right) + 1
        cdef MergeSlot* found = &self.table[self._slot(key)]
        if found.key == 0:
            return INT32_MAX
        merged[0] = found.merged
        return found.rank

    cdef inline int _class(self, const uint8_t* p, Py_ssize_t i, Py_ssize_t* next_i) noexcept nogil:
        """The class of the character at byte ``i`` (valid UTF-8: Python made it); its end in *next_i."""
        cdef uint32_t b = p[i]
        if b < 0x80:
            next_i[0] = i + 1
            return self.classes[b]
        if b < 0xE0:
            next_i[0] = i + 2
            return self.classes[((b & 0x1F) << 6) | (p[i + 1] & 0x3F)]
        if b < 0xF0:
            next_i[0] = i + 3
            return self.classes[((b & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F)]
        next_i[0] = i + 4
        return self.classes[((b & 0x07) << 18) | ((p[i + 1] & 0x3F) << 12) | ((p[i + 2] & 0x3F) << 6)
                            | (p[i + 3] & 0x3F)]

    cdef inline Py_ssize_t _run(self, const uint8_t* p, Py_ssize_t i, Py_ssize_t end, int cls) noexcept nogil:
        """The end of the run of characters of cl100k class ``cls`` starting at byte ``i``."""
        cdef Py_ssize_t after
        while i < end and (self._class(p, i, &after) & CL100K_MASK) == cls:
            i = after
        return i

    cdef inline Py_ssize_t _run_any(self, const uint8_t* p, Py_ssize_t i, Py_ssize_t end, int bits) noexcept nogil:
        """The end of the run of characters whose class has any of ``bits``, from byte ``i``."""
        cdef Py_ssize_t after
        while i < end and self._class(p, i, &after) & bits:
            i = after
        return i

    cdef inline bint _cjk(self, const uint8_t* p, Py_ssize_t i, Py_ssize_t* next_i) noexcept nogil:
        """Whether the character at ``i`` is in DeepSeek's CJK ranges (all three-byte UTF-8)."""
        cdef uint32_t b = p[i], cp
        if b < 0xE0 or b >= 0xF0:
            self._class(p, i, next_i)
            return False
        next_i[0] = i + 3
        cp = ((b & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F)
        return 0x4E00 <= cp <= 0x9FA5 or 0x3040 <= cp <= 0x309F or 0x30A0 <= cp <= 0x30FF

    cdef Py_ssize_t _whitespace_end(self, const uint8_t* p, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
        """Where \\s*[\\r\\n]+, else \\s+(?!\\S), else \\s+ ends, from the whitespace at ``i``."""
        cdef Py_ssize_t run_end = i, last_start = i, last_newline_end = -1, second
        cdef int c
        while run_end < end:
            c = self._class(p, run_end, &second)
            if not (c & SPACE):
                break
            if c == NEWLINE:
                last_newline_end = second
            last_start, run_end = run_end, second
        if last_newline_end >= 0:
            return last_newline_end
        if run_end == end or last_start == i:
            return run_end
        return last_start

    cdef int _segment(self, const uint8_t* p, Py_ssize_t i, Py_ssize_t end, IdBuffer* out) noexcept nogil:
        """Pre-tokenize p[i:end] (text between added tokens) and merge each piece into ``out``."""
        if self.scheme == CL100K:
            return self._split_cl100k(p, i, end, out)
        return self._split_deepseek(p, i, end, out)

    cdef int _split_deepseek(self, const uint8_t* p, Py_ssize_t i, Py_ssize_t end, IdBuffer* out) noexcept nogil:
        """DEEPSEEK_PATTERNS in turn: number runs cut in threes; in between, CJK runs and the rest,
        each cut by the last pattern."""
        cdef Py_ssize_t j, after, second, k, m, count
        cdef bint cjk
        while i < end:
            if self._class(p, i, &after) == NUMBER:  # \pN{1,3}
                j, count = after, 1
                while count < 3 and j < end and self._class(p, j, &second) == NUMBER:
                    j, count = second, count + 1
                if self._merge(p, i, j, out) < 0:
                    return -1
            else:
                j = after
                while j < end and self._class(p, j, &second) != NUMBER:
                    j = second
                k = i
                while k < j:  # CJK runs and what lies between them, each a text of its own
                    cjk = self._cjk(p, k, &m)
                    while m < j and self._cjk(p, m, &second) == cjk:
                        m = second
                    if self._split_words(p, k, m, out) < 0:
                        return -1
                    k = m
            i = j
        return 0

    cdef int _split_words(self, const uint8_t* p, Py_ssize_t i, Py_ssize_t end, IdBuffer* out) noexcept nogil:
        """The last DeepSeek pattern over p[i:end]: its matches, and the runs between them that no
        alternative matches, each a piece."""
        cdef Py_ssize_t gap = i, j, after
        while i < end:
            j = self._match_words(p, i, end)
            if j:
                if gap < i and self._merge(p, gap, i, out) < 0:
                    return -1
                if self._merge(p, i, j, out) < 0:
                    return -1
                gap = i = j
            else:
                self._class(p, i, &after)
                i = after
        if gap < end:
            return self._merge(p, gap, end, out)
        return 0

    cdef Py_ssize_t _match_words(self, const uint8_t* p, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
        """The end of the last DeepSeek pattern's match at ``i`` (0: no alternative matches there)."""
        cdef Py_ssize_t after, second, j
        cdef int k = self._class(p, i, &after)
        cdef int following = self._class(p, after, &second) if after < end else -1
        cdef uint8_t b = p[i]
        if (0x21 <= b <= 0x2F or 0x3A <= b <= 0x40 or 0x5B <= b <= 0x60 or 0x7B <= b <= 0x7E) and after < end \
                and (0x41 <= (p[after] & 0xDF) <= 0x5A):  # [ASCII punctuation][A-Za-z]+
            j = after
            while j < end and 0x41 <= (p[j] & 0xDF) <= 0x5A:
                j += 1
            return j
        if k & (LETTER | MARK) or (k != NEWLINE and not (k & (LETTER | PUNCT | SYMBOL)) and following > 0
                                   and following & (LETTER | MARK)):  # [^\r\n\pL\pP\pS]?[\pL\pM]+
            return self._run_any(p, after, end, LETTER | MARK)
        if k & (PUNCT | SYMBOL) or (b == 0x20 and following > 0 and following & (PUNCT | SYMBOL)):
            j = self._run_any(p, after, end, PUNCT | SYMBOL)  # " ?[\pP\pS]+[\r\n]*"
            return self._run_any(p, j, end, NEWLINE_BIT)
        if k & SPACE:
            return self._whitespace_end(p, i, end)
        return 0

    cdef int _split_cl100k(self, const uint8_t* p, Py_ssize_t i, Py_ssize_t end, IdBuffer* out) noexcept nogil:
        """CL100K_PATTERN's pieces of p[i:end], each merged into ``out``. -1: out of memory."""
        cdef Py_ssize_t j, after, second, count
        cdef int k, c
        cdef uint8_t b
        while i < end:
            k = self._class(p, i, &after) & CL100K_MASK
            b = p[i]
            j = 0
            if b == 0x27 and after < end:  # 's 't 're 've 'm 'll 'd, any case ('ſ too)
                c = p[after] | 0x20
                if c == 0x73 or c == 0x74 or c == 0x6D or c == 0x64:
                    j = after + 1
                elif p[after] == 0xC5 and after + 1 < end and p[after + 1] == 0xBF:
                    j = after + 2
                elif after + 1 < end and (((c == 0x72 or c == 0x76) and (p[after + 1] | 0x20) == 0x65)
                                          or (c == 0x6C and (p[after + 1] | 0x20) == 0x6C)):
                    j = after + 2
            if j:
                pass
            elif k == LETTER:  # [^\r\n\pL\pN]?\pL+
                j = self._run(p, after, end, LETTER)
            elif (k == OTHER or k == SPACE) and after < end and (self._class(p, after, &second) & CL100K_MASK) == LETTER:
                j = self._run(p, second, end, LETTER)
            elif k == NUMBER:  # \pN{1,3}
                j, count = after, 1
                while count < 3 and j < end and self._class(p, j, &second) == NUMBER:
                    j, count = second, count + 1
            elif k == OTHER or (b == 0x20 and after < end and (self._class(p, after, &second) & CL100K_MASK) == OTHER):
                j = self._run(p, after if k == OTHER else second, end, OTHER)  # " ?[^\s\pL\pN]+[\r\n]*"
                j = self._run(p, j, end, NEWLINE)
            else:  # whitespace
                j = self._whitespace_end(p, i, end)
            if self._merge(p, i, j, out) < 0:
                return -1
            i = j
        return 0

    cdef int _merge(self, const uint8_t* p, Py_ssize_t start, Py_ssize_t end, IdBuffer* out) noexcept nogil:
        """BPE-merge the piece p[start:end] into ``out``: the lowest-ranked pair first, leftmost on ties."""
        cdef Py_ssize_t n = end - start, i, best
        cdef int32_t symbols[SMALL_PIECE]
        cdef int32_t ranks[SMALL_PIECE]
        cdef int32_t merges[SMALL_PIECE]
        if n == 1:
            return push_id(out, self.byte_ids[p[start]])
        if self.words != NULL:  # ignore_merges: a piece that is one vocabulary token is that token
            i = self._whole_word(p, start, end)
            if i >= 0:
                return push_id(out, <int32_t>i)
        if n > SMALL_PIECE:
            return self._merge_long(p, start, end, out)
        for i in range(n):
            symbols[i] = self.byte_ids[p[start + i]]
        for i in range(n - 1):
            ranks[i] = self._rank(symbols[i], symbols[i + 1], &merges[i])
        while n > 1:
            best = 0
            for i in range(1, n - 1):
                if ranks[i] < ranks[best]:
                    best = i
            if ranks[best] == INT32_MAX:
                break
            symbols[best] = merges[best]
            for i in range(best + 1, n - 1):
                symbols[i] = symbols[i + 1]
            for i in range(best, n - 2):
                ranks[i], merges[i] = ranks[i + 1], merges[i + 1]
            n -= 1
            if best > 0:
                ranks[best - 1] = self._rank(symbols[best - 1], symbols[best], &merges[best - 1])
            if best < n - 1:
                ranks[best] = self._rank(symbols[best], symbols[best + 1], &merges[best])
        for i in range(n):
            if push_id(out, symbols[i]) < 0:
                return -1
        return 0

    cdef int _merge_long(self, const uint8_t* p, Py_ssize_t start, Py_ssize_t end, IdBuffer* out) noexcept nogil:
        """``_merge`` for long pieces: linked symbols and a heap of candidate merges, O(n log n)."""
        cdef Py_ssize_t n = end - start, i, size = 0
        cdef int32_t* symbols = <int32_t*>malloc(3 * n * sizeof(int32_t))
        cdef HeapItem* heap = <HeapItem*>malloc(3 * n * sizeof(HeapItem))
        cdef int32_t* prev
        cdef int32_t* nxt
        cdef int32_t rank, merged, pos, right
        cdef HeapItem top
        cdef int status = 0
        if symbols == NULL or heap == NULL:
            free(symbols)
            free(heap)
            return -1
        prev, nxt = symbols + n, symbols + 2 * n
        for i in range(n):
            symbols[i] = self.byte_ids[p[start + i]]
            prev[i], nxt[i] = i - 1, i + 1 if i + 1 < n else -1
        for i in range(n - 1):
            rank = self._rank(symbols[i], symbols[i + 1], &merged)
            if rank != INT32_MAX:
                heap_push(heap, &size, rank, i, merged)
        while size:
            top = heap_pop(heap, &size)
            pos = top.pos
            right = nxt[pos]
            # stale: the left symbol was merged away, or the pair at pos is no longer this merge
            if symbols[pos] < 0 or right < 0 or self._rank(symbols[pos], symbols[right], &merged) != top.rank \
                    or merged != top.merged:
                continue
            symbols[pos], symbols[right] = top.merged, -1
            nxt[pos] = nxt[right]
            if nxt[pos] >= 0:
                prev[nxt[pos]] = pos
                rank = self._rank(symbols[pos], symbols[nxt[pos]], &merged)
                if rank != INT32_MAX:
                    heap_push(heap, &size, rank, pos, merged)
            if prev[pos] >= 0:
                rank = self._rank(symbols[prev[pos]], symbols[pos], &merged)
                if rank != INT32_MAX:
                    heap_push(heap, &size, rank, prev[pos], merged)
        pos = 0
        while pos >= 0:
            if push_id(out, symbols[pos]) < 0:
                status = -1
                break
            pos = nxt[pos]
        free(symbols)
        free(heap)
        return status

    cdef int _encode(self, const uint8_t* p, Py_ssize_t size, IdBuffer* out) noexcept nogil:
        """The added tokens' ids, and the pre-tokenized segments between them. -1: out of memory."""
        cdef Match* found = NULL
        cdef Py_ssize_t n_found = 0, k, start = 0
        cdef int status = self.added.matches(p, size, &found, &n_found)
        for k in range(n_found):
            if status < 0:
                break
            if self._segment(p, start, found[k].start, out) < 0 \
                    or push_id(out, self.added.token_ids[found[k].token]) < 0:
                status = -1
            start = found[k].end
        free(found)
        return status if status < 0 else self._segment(p, start, size, out)

    def encode(self, str text):
        """Token ids of ``text`` (``tokenizers``' ``encode(text, add_special_tokens=False).ids``)."""
        cdef Py_ssize_t size = 0, i
        cdef const uint8_t* p = <const uint8_t*>PyUnicode_AsUTF8AndSize(text, &size)
        cdef IdBuffer out
        cdef int status
        cdef object value
        out.ids, out.n, out.cap = NULL, 0, 0
        if size >= NOGIL_BYTES:
            with nogil:
                status = self._encode(p, size, &out)
        else:
            status = self._encode(p, size, &out)
        if status < 0:
            free(out.ids)
            raise MemoryError()
        try:
            result = PyList_New(out.n)
            for i in range(out.n):
                value = out.ids[i]
                Py_INCREF(value)
                PyList_SET_ITEM(result, i, value)
            return result
        finally:
            free(out.ids)

    def encode_batch(self, texts):
        return [self.encode(text) for text in texts]
