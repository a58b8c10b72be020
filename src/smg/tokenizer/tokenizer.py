"""``Tokenizer``: a HuggingFace ``tokenizer.json`` with its config, a chat template and the cache."""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import threading
import weakref
from pathlib import Path
from collections.abc import Mapping, Sequence  # not typing's: their isinstance is ~10x slower
from typing import Any

from smg.config import CacheConfig
from smg.errors import ChatTemplateError, TokenizerError, TokenizerLoadError
from smg.tokenizer.cache import CacheInfo, TokenCache, kernel
from smg.tokenizer.chat_template import ChatTemplate, resolve_template_source
from smg.tokenizer.detokenizer import DecodeStream, DetokenizerFactory, clean_up_tokenization
from smg.tokenizer.fast_encoder import build_fast_encoder, scheme_of

# The named special tokens transformers passes to chat templates.
_NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                         "cls_token", "mask_token")
_MAX_COMPILED_TEMPLATES = 16
# Below this many characters a miss is encoded with the GIL-holding `encode` (~0.1 ms per 1,000
# characters); above it with `encode_batch`, which releases the GIL so threads overlap.
_SHORT_ENCODE_CHARS = 1024
# Uncached text past which an encode is worth a worker thread (see ``offload_chars``): ~2.5 ms of
# work with smg's encoder (~0.02 µs a char), ~3 ms with tokenizers' (~0.35 µs a char).
_OFFLOAD_CHARS_FAST = 131072
_OFFLOAD_CHARS_BACKEND = 8192


def _token_content(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TokenizerLoadError(f"cannot read {path}: {exc}") from exc


def _read_json(path: Path) -> tuple[str, dict]:
    """The file's text and its parsed JSON object."""
    return _parse_json(path, _read_bytes(path))


def _parse_json(path: Path, text: bytes) -> tuple[str, dict]:
    """The file's text decoded, and its parsed JSON object."""
    try:
        source = text.decode("utf-8")
        data = json.loads(source)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TokenizerLoadError(f"{path} must hold a JSON object")
    return source, data


def _is_identity_normalizer(normalizer: Any) -> bool:
    if normalizer is None:
        return True
    return (isinstance(normalizer, dict) and normalizer.get("type") == "Sequence"
            and all(_is_identity_normalizer(n) for n in normalizer.get("normalizers", [])))


class _TokenizerFile:
    """What a ``tokenizer.json``'s text alone determines, none of which a request changes: the
    ``tokenizers`` backend, the added tokens, the L1 boundary scanner, smg's encoder and the
    detokenizer tables (both built on first use). Every :class:`Tokenizer` of the same text in a
    process shares one (:meth:`load`), so several models of one family, or an engine beside its
    gateway, parse and build it once (~1.5 s and ~0.3 GB for a 128K vocabulary)."""

    _loaded: "weakref.WeakValueDictionary[bytes, _TokenizerFile]" = weakref.WeakValueDictionary()
    _loading = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> "_TokenizerFile":
        text = _read_bytes(path)
        key = hashlib.blake2b(text, digest_size=20).digest()  # (~10 ms for a 10 MB file)
        with cls._loading:
            loaded = cls._loaded.get(key)
            if loaded is None:
                loaded = cls._loaded[key] = cls(path, text)
            return loaded

    def __init__(self, path: Path, text: bytes) -> None:
        from tokenizers import Tokenizer as Backend

        source, raw = _parse_json(path, text)
        try:
            self.backend = Backend.from_str(source)
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise TokenizerLoadError(f"{path} is not a valid tokenizer.json: {exc}") from exc
        # A serving gateway never truncates or pads silently.
        self.backend.no_truncation()
        self.backend.no_padding()
        added = [t for t in raw.get("added_tokens", []) if isinstance(t, dict) and "content" in t]
        self.special_tokens: list[str] = [t["content"] for t in added if t.get("special")]
        self.special_ids = frozenset(t["id"] for t in added if t.get("special"))
        self.vocab_size: int = self.backend.get_vocab_size(with_added_tokens=True)
        self.scanner, self.cut_ids, self.scanner_reason = self._build_scanner(raw, added)
        self.affixes = self._find_special_affixes()
        self._decoder_config = raw.get("decoder")
        self._detokenizers: dict[bool, DetokenizerFactory] = {}
        # smg's compiled encoder when the file is a shape it reproduces exactly (byte-level BPE
        # behind the cl100k or DeepSeek pre-tokenizer): 12-17x tokenizers' encode, whose
        # pre-tokenizer regex is nearly all its time. Built on first use or by warm_up (~0.4 s:
        # 280k merges to read); until then the file's text is kept, not its parsed objects (~10x
        # the size), and a file of another shape keeps nothing.
        self.fast_encoder = None
        _, self.fast_encoder_reason = scheme_of(raw)
        self._fast_encoder_source = source if self.fast_encoder_reason is None else None
        self._lock = threading.Lock()  # (building the encoder)
        self._detokenizers_lock = threading.Lock()

    def encoder(self):
        """smg's encoder for this file, built on first call; None when tokenizers encodes."""
        if self._fast_encoder_source is not None:
            with self._lock:
                if self._fast_encoder_source is not None:
                    self.fast_encoder, self.fast_encoder_reason = build_fast_encoder(
                        json.loads(self._fast_encoder_source), self.backend)
                    self._fast_encoder_source = None
        return self.fast_encoder

    def detokenizers(self, cleanup: bool) -> DetokenizerFactory:
        """The detokenizer factory for the config's ``clean_up_tokenization_spaces``."""
        with self._detokenizers_lock:
            factory = self._detokenizers.get(cleanup)
            if factory is None:
                factory = self._detokenizers[cleanup] = DetokenizerFactory(
                    self.backend, self._decoder_config, self.special_ids, cleanup)
            return factory

    def _build_scanner(self, raw: dict, added: list[dict]):
        """The L1 boundary scanner, or why L1 cannot be used for this tokenizer."""
        if not added:
            return None, b"", "the tokenizer has no added tokens to cut at"
        model_ids = set(self.backend.get_vocab(with_added_tokens=False).values())
        identity = _is_identity_normalizer(raw.get("normalizer"))
        raw_tokens, normalized_tokens, cut_ids = [], [], set()
        for t in added:
            plain = not (t.get("lstrip") or t.get("rstrip") or t.get("single_word"))
            # A cut token's id must be impossible to produce from plain text (see cut_positions).
            is_cut = plain and t["id"] not in model_ids
            if t.get("normalized", not t.get("special", False)):
                if not identity:
                    continue  # matched inside segments after normalization: never crosses a cut
                normalized_tokens.append((t["content"], t["id"], is_cut))
            else:
                raw_tokens.append((t["content"], t["id"], is_cut))
            if is_cut:
                cut_ids.add(t["id"])
        if not cut_ids:
            return None, b"", "no added token is a safe cut point"
        bitmap = bytearray(max(cut_ids) // 8 + 1)
        for token_id in cut_ids:
            bitmap[token_id >> 3] |= 1 << (token_id & 7)
        return kernel.BoundaryScanner(raw_tokens, normalized_tokens), bytes(bitmap), None

    def _find_special_affixes(self) -> tuple[list[int], list[int]] | None:
        """Ids the post-processor puts around one sequence, if it only adds fixed ids."""
        affixes = None
        for probe in ("a", "Hello world", "x y z 12"):
            plain = self.backend.encode(probe, add_special_tokens=False).ids
            full = self.backend.encode(probe, add_special_tokens=True).ids
            for start in range(len(full) - len(plain) + 1):
                if full[start:start + len(plain)] == plain:
                    found = (full[:start], full[start + len(plain):])
                    break
            else:
                return None
            if affixes is not None and found != affixes:
                return None
            affixes = found
        return affixes


class Tokenizer:
    """A tokenizer loaded from HuggingFace files, with an L0/L1 encode cache.

    Example:
        >>> tok = Tokenizer.from_dir("path/to/model")            # doctest: +SKIP
        >>> ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Hi"}]))  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer_json: Path,
        config: Mapping[str, Any] | None = None,
        directory: Path | None = None,
        cache: CacheConfig | None = None,
    ) -> None:
        self._file = file = _TokenizerFile.load(tokenizer_json)
        self._backend = file.backend
        self._config = dict(config or {})
        self._directory = directory
        # by (chat_template argument, with tools): resolving an argument stats and reads a file,
        # which per request was 5% of a served request
        self._templates: dict[tuple[str | None, bool], ChatTemplate] = {}
        self._templates_lock = threading.Lock()
        self.special_tokens: list[str] = list(file.special_tokens)
        self._special_ids = file.special_ids
        self.vocab_size: int = file.vocab_size
        self.eos_token_ids: list[int] = self._find_eos_ids()
        self.clean_up_tokenization_spaces = bool(self._config.get("clean_up_tokenization_spaces", False))
        named = {name: _token_content(self._config.get(name)) for name in _NAMED_SPECIAL_TOKENS}
        self._named_special = {name: value for name, value in named.items() if value is not None}
        self._detokenizers = file.detokenizers(self.clean_up_tokenization_spaces)
        self._cache = TokenCache(self._encode_backend, self._encode_backend_one, file.scanner, file.cut_ids,
                                 cache or CacheConfig(), file.scanner_reason)
        self._affixes = file.affixes

    # ---- loading ------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, cache: CacheConfig | None = None) -> "Tokenizer":
        """Load a ``tokenizer.json``; a ``tokenizer_config.json`` beside it is read too."""
        path = Path(path)
        if not path.is_file():
            raise TokenizerLoadError(f"no tokenizer file at {path}")
        config_path = path.parent / "tokenizer_config.json"
        config = _read_json(config_path)[1] if config_path.is_file() else None
        return cls(path, config, path.parent, cache)

    @classmethod
    def from_dir(cls, path: str | Path, cache: CacheConfig | None = None) -> "Tokenizer":
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json``, ``chat_template.jinja``) from a directory."""
        path = Path(path)
        if not path.is_dir():
            raise TokenizerLoadError(f"no tokenizer directory at {path}")
        if not (path / "tokenizer.json").is_file():
            raise TokenizerLoadError(f"{path} has no tokenizer.json")
        return cls.from_file(path / "tokenizer.json", cache)

    @classmethod
    def load(cls, path: str | Path, cache: CacheConfig | None = None) -> "Tokenizer":
        """``from_dir`` for a directory, ``from_file`` otherwise."""
        return cls.from_dir(path, cache) if Path(path).is_dir() else cls.from_file(path, cache)

    def _find_eos_ids(self) -> list[int]:
        ids: list[int] = []
        eos = _token_content(self._config.get("eos_token"))
        if eos is not None and self._backend.token_to_id(eos) is not None:
            ids.append(self._backend.token_to_id(eos))
        for name in ("generation_config.json", "config.json"):
            if self._directory is None or not (self._directory / name).is_file():
                continue
            value = _read_json(self._directory / name)[1].get("eos_token_id")
            for token_id in value if isinstance(value, list) else [value]:
                if isinstance(token_id, int) and token_id not in ids:
                    ids.append(token_id)
        return ids

    # ---- encode / decode ----------------------------------------------------------------------

    def _encode_backend(self, texts: Sequence[str]) -> list[list[int]]:
        # smg's encoder and tokenizers' encode_batch release the GIL (tokenizers' encode does not),
        # so misses in threads overlap.
        try:
            encoder = self._file.encoder()
            if encoder is not None:
                return encoder.encode_batch(texts)
            return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]
        except UnicodeEncodeError:
            raise
        except Exception as exc:
            raise TokenizerError(f"tokenizer cannot encode the input: {exc}") from exc

    def _encode_backend_one(self, text: str) -> list[int]:
        # A short text is encoded in well under a millisecond: the GIL-holding `encode` costs less
        # than `encode_batch`'s dispatch there; longer ones release the GIL for other threads.
        try:
            encoder = self._file.encoder()
            if encoder is not None:
                return encoder.encode(text)
            if len(text) < _SHORT_ENCODE_CHARS:
                return self._backend.encode(text, add_special_tokens=False).ids
            return self._backend.encode_batch([text], add_special_tokens=False)[0].ids
        except UnicodeEncodeError:
            raise
        except Exception as exc:
            raise TokenizerError(f"tokenizer cannot encode the input: {exc}") from exc

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``, identical to ``tokenizers``' ``encode(...).ids``, through the cache."""
        if add_special_tokens or type(text) is not str:
            return self.encode_batch([text], add_special_tokens)[0]
        try:
            return self._cache.encode_one(text)
        except UnicodeEncodeError as exc:
            raise TokenizerError(f"input is not valid Unicode (lone surrogate at {exc.start})") from exc

    def uncached_chars(self, text: str) -> int:
        """How many chars of ``text`` ``encode`` would hand to the backend now (0 when cached whole,
        the tail after a cached prefix otherwise): what is worth moving off an event loop."""
        return self._cache.uncached_chars(text)

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        """``encode`` of each text; misses are encoded in one backend batch."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TokenizerError("texts must be a list of str")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TokenizerError(f"text #{i} must be a str, got {type(text).__name__}")
        try:
            if not add_special_tokens:
                return self._cache.encode_many(texts)
            if self._affixes is not None:
                prefix, suffix = self._affixes
                return [prefix + ids + suffix for ids in self._cache.encode_many(texts)]
        except UnicodeEncodeError as exc:
            raise TokenizerError(f"input is not valid Unicode (lone surrogate at {exc.start})") from exc
        try:
            return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=True)]
        except Exception as exc:
            raise TokenizerError(f"tokenizer cannot encode the input: {exc}") from exc

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` as ``transformers``' ``decode`` renders it (incl. clean-up spaces)."""
        try:
            text = self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        except (TypeError, OverflowError, ValueError) as exc:
            raise TokenizerError(f"cannot decode ids: {exc}") from exc
        return clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

    def decode_stream(self, skip_special_tokens: bool = True, prompt_ids: Sequence[int] | None = None,
                      spaces_between_special_tokens: bool = True) -> DecodeStream:
        """A per-request incremental detokenizer: ``step(id)``, ``feed(ids)``, ``finish()``.

        The deltas and ``finish()`` concatenate to ``decode(ids, skip_special_tokens)``. With
        ``prompt_ids``, the prompt's last ids are left context (a character split across the
        prompt/output boundary, SentencePiece's leading space). ``spaces_between_special_tokens``
        is accepted for API compatibility: as in vLLM and SGLang with HuggingFace *fast*
        tokenizers, it does not change the text of a ``tokenizers``-backed tokenizer.

        Example:
            >>> stream = tok.decode_stream()                     # doctest: +SKIP
            >>> "".join(stream.step(i) for i in ids) + stream.finish() == tok.decode(ids)  # doctest: +SKIP
            True
        """
        return self._detokenizers.stream(skip_special_tokens, prompt_ids)

    def warm_up(self, chat_template: str | None = None) -> None:
        """Build now what the first request would otherwise build: the detokenizer's token table
        (~0.4 s for a 128K vocabulary), smg's encoder (~0.4 s) and the compiled chat template
        (~80 ms with the Jinja import), which would stall the first request and every request
        served beside it. A missing or broken template is left to raise its error when a chat
        request uses it."""
        self._detokenizers.ensure_table()
        self._file.encoder()
        with contextlib.suppress(ChatTemplateError):
            self._compiled_template(chat_template, False)

    @property
    def fast_encoder_reason(self) -> str | None:
        """Why ``tokenizers`` encodes for this tokenizer (None: smg's compiled encoder does)."""
        self._file.encoder()
        return self._file.fast_encoder_reason

    @property
    def offload_chars(self) -> int:
        """Uncached characters past which encoding is worth moving off an event loop (both
        encoders release the GIL on long texts)."""
        return _OFFLOAD_CHARS_FAST if self._file.encoder() is not None else _OFFLOAD_CHARS_BACKEND

    @property
    def detokenizer_fallback_reason(self) -> str | None:
        """Why ``decode_stream`` uses the general path for this tokenizer (None: the fast table)."""
        self._detokenizers.ensure_table()
        return self._detokenizers.fallback_reason

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    def is_special_id(self, token_id: int) -> bool:
        return token_id in self._special_ids

    @property
    def backend(self):
        """The underlying ``tokenizers.Tokenizer``, for reading only: every Tokenizer of the same
        file text in the process shares it (changing its truncation or padding would change
        theirs)."""
        return self._backend

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """Named special tokens from the config (``bos_token``...), as chat templates see them."""
        return dict(self._named_special)

    def cache_info(self) -> CacheInfo:
        return self._cache.info()

    def clear_cache(self) -> None:
        self._cache.clear()

    # ---- chat template ------------------------------------------------------------------------

    def _compiled_template(self, chat_template: str | None, with_tools: bool, allow_file: bool = True) -> ChatTemplate:
        """The compiled template for an argument (template files are read once per process)."""
        key = (chat_template, with_tools, allow_file)
        template = self._templates.get(key)
        if template is not None:
            return template
        # a template that may not be a file is a request's: compiled to render within limits
        template = ChatTemplate(resolve_template_source(chat_template, self._directory,
                                                        self._config.get("chat_template"), with_tools, allow_file),
                                bounded=not allow_file)
        with self._templates_lock:
            if len(self._templates) >= _MAX_COMPILED_TEMPLATES:
                self._templates.clear()  # per-request templates must not grow memory forever
            self._templates[key] = template
        return template

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        allow_template_file: bool = True,
        limits: tuple[float, int] | None = None,
        **template_kwargs: Any,
    ) -> str:
        """Render messages with the model's chat template, as ``transformers`` does.

        The template is ``chat_template`` (a template string, a file path, or a named template of
        the config; a file path only with ``allow_template_file``, which a gateway turns off for a
        request's template), else ``chat_template.jinja`` beside the tokenizer, else ``chat_template`` in
        ``tokenizer_config.json``; without any, a ``ChatTemplateError``. A template file is read
        and compiled the first time it is used, then reused (edits need a new ``Tokenizer``). Extra keyword arguments
        (``enable_thinking=False``, ``date_string=...``) are passed to the template. ``limits``:
        ``(seconds, characters)`` a render may take and produce (a request's own template), beyond
        which it raises ``ChatTemplateError``.
        """
        template = self._compiled_template(chat_template, bool(tools), allow_template_file)
        return template.render(messages, tools=tools, documents=documents,
                               add_generation_prompt=add_generation_prompt,
                               special_tokens=self._named_special, limits=limits, **template_kwargs)


def _named_parameters(function) -> set[str]:
    return {name for name, p in inspect.signature(function).parameters.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


# Names a template variable passed as a keyword cannot take: they are the arguments of
# ``apply_chat_template`` and ``ChatTemplate.render`` themselves (the request's own parts).
RESERVED_TEMPLATE_VARIABLES = frozenset(_named_parameters(Tokenizer.apply_chat_template)
                                        | _named_parameters(ChatTemplate.render))
