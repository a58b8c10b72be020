"""Incremental detokenization: token ids in, text deltas out, equal to a one-shot ``decode``.

Two raw decoders, chosen once per tokenizer:

* **Table (fast path)**, for the GPT-2 style ``ByteLevel`` decoder (Llama 3, DeepSeek, Qwen,
  GPT-OSS, Mistral Tekken...): a token is a table lookup of its bytes and a UTF-8 boundary check in
  the compiled kernel (``smg._ext.detok``). The table is verified against ``tokenizers``' own
  ``decode`` over the whole vocabulary before it is used.
* **Window (general path)**, for every other decoder (``Metaspace``/SentencePiece with
  ``ByteFallback``, ``WordPiece``, BPE without a decoder...): the prefix/read-offset algorithm of
  vLLM and SGLang over a short window of ids, decoding with ``tokenizers`` itself.

Then, when the tokenizer config asks for ``clean_up_tokenization_spaces`` (transformers' rule that
drops the space before ``. ? ! ,`` and contractions), the clean-up is streamed too, holding back at
most a space and three characters until the next delta shows whether the rule applies (inside
the kernel on the fast path, see ``smg._ext.detok_py``).

Invariant (hypothesis-tested on both shipped tokenizers and a SentencePiece-style one):
``"".join(deltas) + finish() == tokenizer.decode(ids)``.
"""
from __future__ import annotations

import threading
from typing import Iterable, Sequence

from smg import _ext
from smg.errors import TokenizerError

kernel = _ext.load("detok")

_VERIFY_CHUNK = 1024
_WINDOW_CONTEXT = 5  # prompt ids kept as left context by the general path, as vLLM does

clean_up_tokenization = kernel.clean_up_tokenization


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte -> printable char map, inverted: char -> byte."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _is_byte_level(decoder: object) -> bool:
    if not isinstance(decoder, dict):
        return False
    if decoder.get("type") == "ByteLevel":
        return True
    return (decoder.get("type") == "Sequence"
            and [d.get("type") for d in decoder.get("decoders", []) if isinstance(d, dict)] == ["ByteLevel"])


def build_token_table(backend, decoder_config: object, special_ids: Iterable[int], cleanup: bool):
    """The fast-path table for this tokenizer, or ``(None, reason)`` when its decoder needs the
    general path. The table is checked against ``backend.decode`` over the whole vocabulary."""
    if not _is_byte_level(decoder_config):
        kind = decoder_config.get("type") if isinstance(decoder_config, dict) else decoder_config
        return None, f"decoder {kind!r} is not ByteLevel: using the general (windowed) path"
    alphabet = byte_level_alphabet()
    size = backend.get_vocab_size(with_added_tokens=True)
    token_bytes: list[bytes | None] = []
    for token_id in range(size):
        token = backend.id_to_token(token_id)
        if token is None:
            token_bytes.append(None)
            continue
        try:
            token_bytes.append(bytes([alphabet[c] for c in token]))
        except KeyError:  # a char outside the alphabet: ByteLevel keeps the token's own UTF-8
            token_bytes.append(token.encode("utf-8"))
    special = sorted(special_ids)
    table = kernel.TokenTable(token_bytes, special, cleanup)
    for start in range(0, size, _VERIFY_CHUNK):
        ids = list(range(start, min(size, start + _VERIFY_CHUNK)))
        expected = backend.decode(ids, skip_special_tokens=False)
        got = b"".join(b for b in (token_bytes[i] for i in ids) if b).decode("utf-8", "replace")
        if got != expected:
            return None, f"byte table disagrees with decode near id {start}: using the general path"
    probe = special[:64] + list(range(min(size, 64)))
    stream = kernel.ByteStreamDecoder(kernel.TokenTable(token_bytes, special), True)
    if backend.decode(probe, skip_special_tokens=True) != stream.feed(probe) + stream.finish():
        return None, "skip_special_tokens disagrees with decode: using the general path"
    return table, None


class _WindowDecoder:
    """General path: decode a short window of ids with the tokenizer itself (vLLM/SGLang's
    prefix_offset/read_offset algorithm); text is released once it does not end in U+FFFD."""

    def __init__(self, backend, skip_special_tokens: bool, prompt_ids: Sequence[int] | None) -> None:
        self._backend = backend
        self._skip = skip_special_tokens
        self._ids = list(prompt_ids[-_WINDOW_CONTEXT:]) if prompt_ids else []
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return self._backend.decode(ids, skip_special_tokens=self._skip)

    def _release(self, final: bool) -> str:
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        if not final and (len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd")):
            return ""
        delta = new_text[len(prefix_text):]
        # Slide the window: the ids before the old read offset are never decoded again.
        del self._ids[:self._prefix_offset]
        self._read_offset -= self._prefix_offset
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return delta

    def step(self, token_id: int) -> str:
        if token_id < 0:
            raise ValueError(f"token id {token_id} is negative")
        self._ids.append(token_id)
        return self._release(final=False)

    def feed(self, ids: Iterable[int]) -> str:
        for token_id in ids:
            if token_id < 0:
                raise ValueError(f"token id {token_id} is negative")
            self._ids.append(token_id)
        return self._release(final=False)

    def finish(self) -> str:
        return self._release(final=True) if self._read_offset < len(self._ids) else ""


class DecodeStream:
    """One request's detokenizer (see :meth:`Tokenizer.decode_stream`)."""

    __slots__ = ("_raw", "_cleanup", "_fast")

    def __init__(self, raw, cleanup: bool, fast: bool) -> None:
        self._raw = raw
        self._cleanup = kernel.CleanupStage() if cleanup else None  # the fast path cleans inside
        self._fast = fast

    @property
    def uses_fast_path(self) -> bool:
        return self._fast

    @property
    def raw_decoder(self):
        """The table decoder when its text is the stream's (fast path): kernels call it directly."""
        return self._raw if self._fast else None  # the fast path cleans inside: no stage after it

    def step(self, token_id: int) -> str:
        """Text completed by one more token (possibly ``""``)."""
        try:
            text = self._raw.step(token_id)
        except (ValueError, OverflowError, TypeError) as exc:
            raise TokenizerError(f"cannot decode token id {token_id!r}: {exc}") from exc
        return self._cleanup.feed(text) if self._cleanup is not None else text

    def feed(self, ids: Sequence[int]) -> str:
        """Text completed by a batch of tokens."""
        try:
            text = self._raw.feed(ids)
        except (ValueError, OverflowError, TypeError) as exc:
            raise TokenizerError(f"cannot decode token ids: {exc}") from exc
        return self._cleanup.feed(text) if self._cleanup is not None else text

    def finish(self) -> str:
        """Whatever is still held back, rendered as ``decode`` renders it."""
        text = self._raw.finish()
        if self._cleanup is None:
            return text
        return self._cleanup.feed(text) + self._cleanup.finish()


class DetokenizerFactory:
    """Per-tokenizer: builds (once, lazily, thread-safely) the table, then makes streams."""

    def __init__(self, backend, decoder_config: object, special_ids: Iterable[int], cleanup: bool) -> None:
        self._backend = backend
        self._decoder_config = decoder_config
        self._special_ids = list(special_ids)
        self._cleanup = cleanup
        self._lock = threading.Lock()
        self._built = False
        self._table = None
        self.fallback_reason: str | None = None

    def ensure_table(self) -> None:
        """Build the token table (once; ~0.4 s for a 128K vocabulary)."""
        with self._lock:
            if not self._built:
                self._table, self.fallback_reason = build_token_table(
                    self._backend, self._decoder_config, self._special_ids, self._cleanup)
                self._built = True

    def stream(self, skip_special_tokens: bool, prompt_ids: Sequence[int] | None) -> DecodeStream:
        self.ensure_table()
        if self._table is not None:
            raw = kernel.ByteStreamDecoder(self._table, skip_special_tokens)
            if prompt_ids:
                # Only an incomplete UTF-8 tail of the prompt can change the generated text; the
                # clean-up applies to the generated text alone.
                raw.feed(list(prompt_ids[-8:]))
                raw.start_output()
            return DecodeStream(raw, cleanup=False, fast=True)
        return DecodeStream(_WindowDecoder(self._backend, skip_special_tokens, prompt_ids),
                            self._cleanup, fast=False)
