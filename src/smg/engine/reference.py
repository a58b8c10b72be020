"""``ReferenceEngine``: a CPU engine behind :class:`EngineServer`, for demos, tests and benchmarks.

No GPU and no downloads: it needs only a tokenizer. Outputs are deterministic from the request's
seed (or the engine's), in one of three modes:

* ``text`` — realistic English (a corpus written for this project), from an offset chosen by
  the seed and the sequence index, until ``max_new_tokens``;
* ``echo`` — the prompt's own ids, then EOS;
* ``script`` — one of the given texts (say, a model family's reasoning and tool-call format),
  tokenized, then EOS; sequence ``i`` of a request with seed ``s`` replays text ``(s + i) % len``.
  With ``script_by_turn`` the text is picked by the number of tool results already in the prompt
  instead: the first text before any, the second after one, ..., the last one from then on, so a
  scripted model calls a tool and then answers with its result (tool results are found by the
  markers chat templates put around them, ``TOOL_RESULT_MARKERS``).

Being deterministic, it reports a log-probability of 0 for every token it emits (and that token
as the only alternative) when logprobs are asked for. ``delay_ms`` is the per-step delay and ``tokens_per_chunk`` the ids per step, so it can mimic a
GPU's decode rhythm; it honours ``max_new_tokens``, stop ids, EOS and abort through the server.

``prefix_cache_tokens`` / ``prefill_us_per_token`` give it a simulated KV prefix cache
(:mod:`smg.engine.kv_cache`): cached prompt tokens are reported, prefill time is waited for the
uncached ones, and ``GetLoads`` answers from it, so routing policies can be measured on CPUs.
``disaggregation`` makes it the prefill or the decode half of disaggregated serving
(:mod:`smg.engine.disaggregation`).
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator, Sequence

from smg.engine.disaggregation import Disaggregation
from smg.engine.kv_cache import SimulatedPrefixCache
from smg.engine.server import EngineRequest, EngineServer, ScoredTokens
from smg.engines.base import ModelInfo
from smg.tokenizer import Tokenizer

CORPUS = (
    "Serving a language model well is mostly a matter of keeping the accelerator busy. Requests arrive "
    "at uneven times, with prompts of every length, and each one wants its first token quickly and the "
    "rest at a steady pace. The scheduler batches whatever is ready, the kernels do the arithmetic, and "
    "everything else, from reading the request to writing the last byte of the response, should cost "
    "as little as possible and never stand in the way. Tokenization turns text into numbers before the "
    "first step; detokenization turns numbers back into text after every step. Stop sequences must be "
    "found the moment they appear, and structured outputs such as tool calls must be recognised while "
    "they stream. When those jobs run next to the model, behind a single interpreter lock, they steal "
    "time from it. Moving them into a gateway lets the engine do only tensor math, and lets the gateway "
    "scale across many engines, pick the least loaded one, and retry elsewhere when one fails. "
)

MODES = ("text", "echo", "script")
# What chat templates put before each tool result in a prompt (Llama 3's ipython/tool turns, Hermes
# and Qwen's <tool_response>, DeepSeek's tool output, Mistral's, GLM's observation).
TOOL_RESULT_MARKERS = ("<|start_header_id|>ipython<|end_header_id|>", "<|start_header_id|>tool<|end_header_id|>",
                       "<tool_response>", "<｜tool▁output▁begin｜>", "[TOOL_RESULTS]", "<|observation|>")


class ReferenceEngine:
    """A deterministic CPU token generator (see the module docstring)."""

    def __init__(self, tokenizer: Tokenizer, mode: str = "text", scripts: Sequence[str] = (),
                 delay_ms: float = 0.0, tokens_per_chunk: int = 1, seed: int = 0,
                 model_id: str = "smg-reference", eos_token_ids: Sequence[int] | None = None,
                 tokenizer_dir: str | Path | None = None, max_context_length: int = 131072,
                 prefix_cache_tokens: int = 0, prefill_us_per_token: float = 0.0,
                 disaggregation: Disaggregation | None = None, script_by_turn: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "script" and not scripts:
            raise ValueError("script mode needs at least one script")
        if script_by_turn and mode != "script":
            raise ValueError("script_by_turn needs script mode")
        self.script_by_turn = script_by_turn
        if tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be at least 1")
        self.tokenizer = tokenizer
        self.mode = mode
        self.delay = delay_ms / 1000.0
        self.tokens_per_chunk = tokens_per_chunk
        self.seed = seed
        eos = list(eos_token_ids) if eos_token_ids is not None else list(tokenizer.eos_token_ids)
        eot = tokenizer.token_to_id("<|eot_id|>")  # Llama 3 ends a turn with it
        if eos_token_ids is None and eot is not None and eot not in eos:
            eos.append(eot)
        self.eos_token_ids = tuple(eos)
        self._corpus = tokenizer.encode(CORPUS * 4)
        self._scripts = [tokenizer.encode(text) for text in scripts]
        self.model_info = ModelInfo(
            model_id=model_id, tokenizer_path=str(tokenizer_dir or ""), max_context_length=max_context_length,
            vocab_size=tokenizer.vocab_size, eos_token_ids=self.eos_token_ids,
            bos_token_id=tokenizer.token_to_id(tokenizer.special_tokens_map.get("bos_token", "")) or None,
            model_type="reference", architectures=("ReferenceEngine",))
        self._tokenizer_dir = tokenizer_dir
        self.prefix_cache = (SimulatedPrefixCache(prefix_cache_tokens, prefill_us_per_token)
                             if prefix_cache_tokens or prefill_us_per_token else None)
        self.disaggregation = disaggregation

    def _ids(self, request: EngineRequest) -> tuple[list[int], bool]:
        """The ids to stream and whether to end with EOS."""
        seed = (request.sampling.seed if request.sampling.seed is not None else self.seed) + request.index
        if self.mode == "echo":
            return list(request.input_ids), True
        if self.mode == "script":
            if self.script_by_turn:
                return self._scripts[min(self.tool_results(request.input_ids), len(self._scripts) - 1)], True
            return self._scripts[seed % len(self._scripts)], True
        start = (seed * 7919 + len(request.input_ids)) % len(self._corpus)
        limit = request.sampling.max_new_tokens or 256
        ids = []
        while len(ids) < limit:
            ids += self._corpus[start:start + limit - len(ids)]
            start = 0
        return ids, False

    def tool_results(self, input_ids: Sequence[int]) -> int:
        """How many tool results the prompt holds (an error result counts as one)."""
        prompt = self.tokenizer.decode(list(input_ids), skip_special_tokens=False)
        return sum(prompt.count(marker) for marker in TOOL_RESULT_MARKERS)

    async def generate(self, request: EngineRequest) -> AsyncIterator[list[int]]:
        ids, eos = self._ids(request)
        if eos and self.eos_token_ids:
            ids = ids + [self.eos_token_ids[0]]
        step = self.tokens_per_chunk
        for start in range(0, len(ids), step):
            if self.delay:
                await asyncio.sleep(self.delay)
            chunk = ids[start:start + step]
            if request.top_logprobs >= 0:
                # Deterministic: each token has probability 1, so its logprob is 0 and no
                # alternative has any mass.
                yield ScoredTokens(chunk, [0.0] * len(chunk), [[(t, 0.0)] for t in chunk])
            else:
                yield chunk

    def server(self) -> EngineServer:
        return EngineServer(self.generate, self.model_info, self._tokenizer_dir, self.prefix_cache,
                            self.disaggregation)
