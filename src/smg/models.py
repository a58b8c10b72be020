"""The model registry: the models one gateway serves, and which one (and which LoRA adapter) a
request's ``model`` names.

A :class:`ServedModel` owns what is per model: its workers' pool (and policy), tokenizer with its
L0/L1 cache, chat template, parsers, context length and EOS ids. :class:`ModelRegistry` maps names,
aliases and ``base:adapter`` names onto them in one dict probe.
"""
from __future__ import annotations

import asyncio
import io
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from smg.config import CacheConfig, ModelConfig, PoolConfig, check_lora_engine, replace
from smg.engines.base import ModelInfo
from smg.engines.disaggregated import DisaggregatedPool
from smg.engines.pool import WorkerPool
from smg.errors import InvalidRequest, ModelNotFound, TokenizerLoadError
from smg.multimodal.media import MediaPolicy
from smg.parsers import parser_for_model
from smg.policies import make_policy
from smg.protocols import openai as oa
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import resolve_tokenizer
from smg.tokenizer.templates import resolve_template

if TYPE_CHECKING:
    from smg.multimodal.stage import ImageStage

log = logging.getLogger("smg.models")


class ServedModel:
    """One model of a gateway: pool, tokenizer, template, parsers (see the module docstring).

    ``name`` and the values left unset in its config are known once :meth:`start` has asked the
    engine (model id, context length, tokenizer path, EOS ids)."""

    def __init__(self, config: ModelConfig, pool_config: PoolConfig, cache: CacheConfig,
                 tokenizer: Tokenizer | None = None, media: MediaPolicy | None = None,
                 max_images: int = 16, pin_image_threads: bool = False) -> None:
        engine = config.engine or pool_config.default_engine
        check_lora_engine(config.name, config.lora_adapters, engine)
        self.config = config
        policy = config.policy or pool_config.policy
        self.pool: WorkerPool | DisaggregatedPool
        if config.prefill:  # (the pool refuses engines other than SGLang's)
            side = replace(pool_config, default_engine=engine)
            self.pool = DisaggregatedPool(
                config.prefill, config.decode, side, config.bootstrap_port,
                make_policy(config.prefill_policy or policy, side.routing),
                make_policy(config.decode_policy or policy, side.routing))
        else:
            self.pool = WorkerPool(config.workers, replace(pool_config, policy=policy, default_engine=engine))
        self.name: str | None = config.name
        self.aliases = tuple(config.aliases)
        self.adapters = frozenset(config.lora_adapters)
        self.tokenizer: Tokenizer = tokenizer  # type: ignore[assignment]  # set by start() otherwise
        self.chat_template = resolve_template(config.chat_template)
        self.reasoning_parser: str | None = None
        self.tool_parser: str | None = None
        self.max_context_length = config.context_length
        self.eos_token_ids: tuple[int, ...] = ()
        self._cache = config.cache or cache
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._media = (media or MediaPolicy(), max_images, pin_image_threads)
        self.images: ImageStage | None = None  # set by start() when the model takes images

    async def start(self) -> "ServedModel":
        await self.pool.start()
        info = self.pool.model_info() or ModelInfo()
        if self.tokenizer is None:
            self.tokenizer = await self._load_tokenizer(info)
        await asyncio.to_thread(self.tokenizer.warm_up, self.chat_template)  # not on the first request's time
        self.name = self.name or info.model_id or "default"
        self.max_context_length = self.max_context_length or info.max_context_length or None
        self.eos_token_ids = tuple(dict.fromkeys([*self.tokenizer.eos_token_ids, *info.eos_token_ids]))
        self.reasoning_parser, self.tool_parser = parser_for_model(self.name, self.config.reasoning_parser,
                                                                   self.config.tool_parser)
        if self.config.image_processor is not None:
            self.images = await asyncio.to_thread(self._image_stage)
        log.info("model %s: %d worker(s), reasoning=%s tools=%s", self.name, len(self.pool.workers),
                 self.reasoning_parser, self.tool_parser)
        return self

    def _image_stage(self) -> ImageStage:
        """The model's image path; the kernels load here, not on the first request's time."""
        from smg.multimodal import warm_up
        from smg.multimodal.processor import ImageProcessor
        from smg.multimodal.stage import ImageStage

        source = self.config.preprocessor_config
        if source is None and self.config.tokenizer is not None:
            directory = Path(resolve_tokenizer(self.config.tokenizer))
            directory = directory if directory.is_dir() else directory.parent
            source = str(directory) if (directory / "preprocessor_config.json").exists() else None
        if source is None:
            log.warning("model %s: no preprocessor_config.json; the %s processor uses its defaults", self.name,
                        self.config.image_processor)
        processor = ImageProcessor.create(self.config.image_processor, source)
        token_ids = {}
        for token in dict.fromkeys((processor.image_token, *processor.structure_tokens)):
            token_ids[token] = self.tokenizer.token_to_id(token)
            if token_ids[token] is None:
                raise TokenizerLoadError(f"model {self.name}: the tokenizer has no {token!r} token, which the "
                                         f"{self.config.image_processor} processor's prompts use")
        warm_up()
        policy, max_images, pin_threads = self._media
        return ImageStage(processor, token_ids, policy, max_images, pin_threads)

    async def close(self) -> None:
        await self.pool.close()
        if self.images is not None:
            await self.images.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def _load_tokenizer(self, info: ModelInfo) -> Tokenizer:
        if self.config.tokenizer is not None:
            return Tokenizer.load(resolve_tokenizer(self.config.tokenizer), self._cache)
        if info.tokenizer_path and Path(info.tokenizer_path).exists():
            return Tokenizer.load(info.tokenizer_path, self._cache)
        for worker in self.pool.healthy_workers():
            data = await worker.adapter.tokenizer_archive(timeout=30)
            self._tmp = tempfile.TemporaryDirectory(prefix="smg-tokenizer-")
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                archive.extractall(self._tmp.name)
            return Tokenizer.from_dir(self._tmp.name, self._cache)
        raise TokenizerLoadError(f"model {self.name or '?'}: no tokenizer: give one, or use an engine that "
                                 f"reports one")

    async def encode(self, text: str) -> list[int]:
        """Encode off the event loop when much of it is not cached: the encoder releases the GIL
        on long texts, so the loop keeps streaming other requests (and a second core does the encode)."""
        tokenizer = self.tokenizer
        # the hand-off costs GIL waits that a short encode or a cached prefix does not repay
        limit = tokenizer.offload_chars
        if len(text) < limit or tokenizer.uncached_chars(text) < limit:
            return tokenizer.encode(text)
        return await asyncio.to_thread(tokenizer.encode, text)

    def logprob_entry(self, lp) -> oa.TokenLogprobOut:
        def token(token_id: int) -> tuple[str, list[int]]:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            return text, list(text.encode("utf-8"))

        text, raw = token(lp.token_id)
        tops = []
        for token_id, value in lp.top:
            t, b = token(token_id)
            tops.append(oa.TopLogprob(token=t, logprob=value, bytes=b))
        return oa.TokenLogprobOut(token=text, logprob=lp.logprob, bytes=raw, top_logprobs=tops)

    def cards(self, created: int) -> list[oa.ModelCard]:
        """``/v1/models`` entries: the model, its aliases and its adapters (``parent`` = the model)."""
        name = self.name or "default"
        cards = [oa.ModelCard(id=n, created=created, root=name, max_model_len=self.max_context_length)
                 for n in (name, *self.aliases)]
        cards += [oa.ModelCard(id=f"{name}:{adapter}", created=created, root=name, parent=name,
                               max_model_len=self.max_context_length) for adapter in sorted(self.adapters)]
        return cards


class ModelRegistry:
    """Names -> served models. The first model added is the default (for a request without ``model``)."""

    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}  # by canonical name, in the order added
        self._names: dict[str, ServedModel] = {}  # canonical names and aliases

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)

    def add(self, model: ServedModel) -> None:
        names = [model.name, *model.aliases]
        taken = [n for n in names if n in self._names]
        if taken:
            raise InvalidRequest(f"model name or alias already served: {', '.join(map(repr, taken))}")
        self._models[model.name] = model
        for name in names:
            self._names[name] = model

    def remove(self, name: str) -> ServedModel:
        model = self._models.pop(name, None)
        if model is None:
            raise ModelNotFound(f"the model {name!r} does not exist")
        for n in [model.name, *model.aliases]:
            self._names.pop(n, None)
        return model

    def get(self, name: str) -> ServedModel:
        model = self._names.get(name)
        if model is None:
            raise ModelNotFound(f"the model {name!r} does not exist")
        return model

    @property
    def default(self) -> ServedModel | None:
        return next(iter(self._models.values()), None)

    def resolve(self, name: str) -> tuple[ServedModel, str | None]:
        """``(model, LoRA adapter or None)`` for a request's ``model``: a name or alias, ``base:adapter``
        (as vLLM and SGLang name adapters), or empty for the default model."""
        model = self._names.get(name)
        if model is not None:
            return model, None
        if not name and self._models:
            return self.default, None  # type: ignore[return-value]
        base, sep, adapter = name.rpartition(":")
        model = self._names.get(base) if sep else None
        if model is not None and adapter in model.adapters:
            return model, adapter
        raise ModelNotFound(f"the model {name!r} does not exist; served: "
                            f"{', '.join(sorted(self._names)) or 'none'}")
