"""``TorchEngine``: a real (small) ``transformers`` causal LM behind :class:`EngineServer`.

It proves the engine helper with a real model: the model is built from a local config (no
weights are downloaded; they are initialised from a seed), decodes with a KV cache, greedily or by
sampling (temperature, top-k, top-p, seeded per request and sequence). Forward passes run in a
worker thread so the event loop keeps serving other streams. Needs the ``engine`` extra
(``torch``, ``transformers``); ``import smg`` never imports torch.
"""
from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from smg.engine.server import DEFAULT_MAX_NEW_TOKENS, EngineRequest, EngineServer, ScoredTokens
from smg.engines.base import ModelInfo, SamplingOptions
from smg.tokenizer import Tokenizer


class TorchEngine:
    def __init__(self, config: Mapping[str, Any] | str | Path, tokenizer: Tokenizer, seed: int = 0,
                 model_id: str = "smg-torch", tokenizer_dir: str | Path | None = None) -> None:
        try:
            import torch
            from transformers import AutoConfig, AutoModelForCausalLM
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("TorchEngine needs the engine extra: pip install 'smg-gateway[engine]'") from exc
        values = dict(json.loads(Path(config).read_text()) if isinstance(config, (str, Path)) else config)
        model_type = values.pop("model_type")
        values.pop("torch_dtype", None)  # CPU: float32
        hf_config = AutoConfig.for_model(model_type, **values)
        torch.manual_seed(seed)
        self.model = AutoModelForCausalLM.from_config(hf_config).eval()
        self._torch = torch
        self._lock = threading.Lock()  # one forward pass at a time
        eos = values.get("eos_token_id", tokenizer.eos_token_ids)
        self.seed = seed
        self.model_info = ModelInfo(
            model_id=model_id, tokenizer_path=str(tokenizer_dir or ""),
            max_context_length=int(values.get("max_position_embeddings", 4096)), vocab_size=tokenizer.vocab_size,
            eos_token_ids=tuple(eos if isinstance(eos, list) else [eos]), model_type=model_type,
            architectures=tuple(values.get("architectures", ())))
        self._tokenizer_dir = tokenizer_dir

    def _pick(self, logits, sampling: SamplingOptions, generator) -> int:
        torch = self._torch
        if sampling.temperature <= 0 or sampling.top_k == 1:
            return int(torch.argmax(logits))
        logits = logits / sampling.temperature
        if sampling.top_k > 0:
            kth = torch.topk(logits, min(sampling.top_k, logits.numel())).values[-1]
            logits = torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)
        probs = torch.softmax(logits, dim=-1)
        if sampling.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < sampling.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))

    def _step(self, ids: list[int], past, sampling: SamplingOptions, generator, top: int):
        torch = self._torch
        with torch.no_grad(), self._lock:
            out = self.model(input_ids=torch.tensor([ids]), past_key_values=past, use_cache=True)
            logits = out.logits[0, -1].float()
            token = self._pick(logits, sampling, generator)
            scores = None
            if top >= 0:
                logprobs = torch.log_softmax(logits, dim=-1)
                best = torch.topk(logprobs, max(top, 1))
                scores = (float(logprobs[token]), list(zip(best.indices.tolist(), best.values.tolist()))[:top])
            return token, scores, out.past_key_values

    async def generate(self, request: EngineRequest) -> AsyncIterator[list[int]]:
        sampling = request.sampling
        generator = self._torch.Generator().manual_seed(
            (sampling.seed if sampling.seed is not None else self.seed) + request.index)
        limit = sampling.max_new_tokens if sampling.max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS
        ids, past = list(request.input_ids), None
        for _ in range(limit):
            token, scores, past = await asyncio.to_thread(self._step, ids, past, sampling, generator,
                                                          request.top_logprobs)
            yield [token] if scores is None else ScoredTokens([token], [scores[0]], [scores[1]])
            ids = [token]

    def server(self) -> EngineServer:
        return EngineServer(self.generate, self.model_info, self._tokenizer_dir)
