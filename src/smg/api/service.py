"""The routes around the APIs: ``/v1/models``, ``/health`` (the process is up), ``/readiness`` (every
model has a healthy worker), ``/health_generate`` (one token through each model), ``/metrics``,
and vLLM's / SGLang's ``/v1/tokenize`` and ``/v1/detokenize`` (also without ``/v1``)."""
from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from smg.api.base import HttpRequest, Reply, json_reply
from smg.engines import GenerateRequest, SamplingOptions
from smg.errors import InvalidRequest, SmgError
from smg.pipeline.prepare import render_chat, template_kwargs, template_message
from smg.protocols import openai as oa
from smg.waiting import wait_within

if TYPE_CHECKING:
    from smg.gateway import Gateway

PROMETHEUS = b"text/plain; version=0.0.4"
HEALTH_GENERATE_TIMEOUT = 20.0


async def _models(gw: "Gateway", http: HttpRequest) -> Reply:
    return Reply(200, oa.encode(gw.list_models()))


async def _health(gw: "Gateway", http: HttpRequest) -> Reply:
    return json_reply({"status": "ok"})


async def _readiness(gw: "Gateway", http: HttpRequest) -> Reply:
    models = list(gw.models)
    not_ready = sorted(m.name for m in models if not m.pool.healthy_workers())
    ready = bool(models) and not not_ready
    return json_reply({"status": "ready" if ready else "not_ready", "not_ready": not_ready,
                       "models": {m.name: {"workers": m.pool.stats()} for m in models}}, 200 if ready else 503)


async def _health_generate(gw: "Gateway", http: HttpRequest) -> Reply:
    """One greedy token from one worker of each model (concurrently), bounded in time."""
    async def first_token(model) -> str | None:
        ids = model.tokenizer.encode("Hi") or [0]
        request = GenerateRequest(f"health-{http.request_id}-{model.name}", ids,
                                  SamplingOptions(temperature=0.0, max_new_tokens=1))
        async with contextlib.aclosing(model.pool.generate(request)) as outputs:
            async for out in outputs:
                if out.finished or out.token_ids:
                    return None
        return "the engine ended the stream without a token"

    async def one(model) -> str | None:
        try:
            return await wait_within(first_token(model), HEALTH_GENERATE_TIMEOUT)
        except asyncio.TimeoutError:
            return f"no token within {HEALTH_GENERATE_TIMEOUT:g} s"
        except SmgError as exc:
            return exc.message

    models = list(gw.models)
    errors = await asyncio.gather(*(one(m) for m in models))
    failed = {m.name: e for m, e in zip(models, errors) if e is not None}
    return json_reply({"status": "unhealthy" if failed or not models else "ok", "failed": failed},
                      503 if failed or not models else 200)


async def _metrics(gw: "Gateway", http: HttpRequest) -> Reply:
    return Reply(200, gw.metrics.render().encode(), PROMETHEUS)


async def _tokenize(gw: "Gateway", http: HttpRequest) -> Reply:
    gw.require_started()
    r = oa.decode_request(await http.read_body(), oa.TokenizeRequest)
    served, _ = gw.models.resolve(r.model)
    tokenizer = served.tokenizer
    if (r.prompt is None) == (r.messages is None):
        raise InvalidRequest("give exactly one of prompt and messages")
    if r.messages is not None:
        tools = [oa.to_dict(t) for t in r.tools] if r.tools else None
        texts: list[str] | str = await render_chat(served, [template_message(m) for m in r.messages], tools,
                                                   template_kwargs(r.chat_template_kwargs), r.add_generation_prompt)
        special = bool(r.add_special_tokens)
    else:
        texts = r.prompt
        special = True if r.add_special_tokens is None else r.add_special_tokens
    if isinstance(texts, str):
        ids = tokenizer.encode(texts, add_special_tokens=special)
        strs = [tokenizer.id_to_token(i) or "" for i in ids] if r.return_token_strs else None
        return Reply(200, oa.encode(oa.TokenizeResponse(tokens=ids, count=len(ids), token_strs=strs,
                                                        max_model_len=served.max_context_length)))
    batch = tokenizer.encode_batch(list(texts), add_special_tokens=special)
    return Reply(200, oa.encode(oa.TokenizeResponse(tokens=batch, count=[len(ids) for ids in batch],
                                                    max_model_len=served.max_context_length)))


async def _detokenize(gw: "Gateway", http: HttpRequest) -> Reply:
    gw.require_started()
    r = oa.decode_request(await http.read_body(), oa.DetokenizeRequest)
    served, _ = gw.models.resolve(r.model)
    tokenizer = served.tokenizer
    vocab = tokenizer.vocab_size
    nested = bool(r.tokens) and isinstance(r.tokens[0], list)
    sequences = r.tokens if nested else [r.tokens]
    for ids in sequences:
        if not isinstance(ids, list) or any(not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab
                                            for t in ids):
            raise InvalidRequest(f"tokens must be token ids in [0, {vocab}) (or lists of them)")
    texts = [tokenizer.decode(ids, skip_special_tokens=r.skip_special_tokens) for ids in sequences]
    text = texts if nested else texts[0]
    return Reply(200, oa.encode(oa.DetokenizeResponse(prompt=text, text=text)))


ROUTES = {
    ("GET", "/v1/models"): _models,
    ("GET", "/health"): _health,
    ("GET", "/readiness"): _readiness,
    ("GET", "/health_generate"): _health_generate,
    ("GET", "/metrics"): _metrics,
    ("POST", "/v1/tokenize"): _tokenize,
    ("POST", "/tokenize"): _tokenize,
    ("POST", "/v1/detokenize"): _detokenize,
    ("POST", "/detokenize"): _detokenize,
}
