"""The admin API (``/admin/...``): the models and workers while serving. On only when the gateway has
an ``admin_key`` (``smg serve --admin-key``), which every admin request must carry (``Authorization:
Bearer`` or ``x-api-key``); API keys do not open it.

* ``GET /admin/models``: every model with its policy, aliases, adapters and workers (health, in
  flight, served, failures, the last error, the engine's reported load).
* ``POST /admin/models``: serve one more model (a model config: ``name``, ``workers``, ...); its
  workers are connected and its tokenizer loaded first.
* ``DELETE /admin/models/{model}``: stop serving a model; its requests in flight finish first.
* ``POST /admin/models/{model}/workers`` (``{"url", "engine"}``): add a worker; it takes requests
  once its health probe passes.
* ``DELETE /admin/models/{model}/workers?url=URL``: drain a worker: no new requests at once, the
  ones in flight finish (up to ``grace`` seconds, a query parameter, default 30), then it closes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from smg.api.base import HttpRequest, Reply, json_reply
from smg.errors import InvalidRequest, TokenizerLoadError
from smg.policies.base import ReportsState

if TYPE_CHECKING:
    from smg.gateway import Gateway
    from smg.models import ServedModel

ADMIN = True  # (smg.api.Router: these routes take the admin key, not an API key)


def _model_state(model: "ServedModel") -> dict:
    pool = model.pool
    policy = pool.policy
    return {"name": model.name, "aliases": list(model.aliases), "adapters": sorted(model.adapters),
            "policy": type(policy).__name__, "workers": pool.stats(),
            "routing": policy.state() if isinstance(policy, ReportsState) else {}}


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body or b"{}")
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{what}: the body is not JSON ({exc})") from None
    except RecursionError:  # (the decoder unwinds cleanly)
        raise InvalidRequest(f"{what}: the body is nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what}: the body must be a JSON object")
    return value


async def _models(gw: "Gateway", http: HttpRequest) -> Reply:
    gw.require_started()
    return json_reply({"object": "list", "data": [_model_state(m) for m in gw.models]})


async def _add_model(gw: "Gateway", http: HttpRequest) -> Reply:
    gw.require_started()
    try:
        served = await gw.add_model(_json_object(await http.read_body(), "a model config"))
    except TokenizerLoadError as exc:  # (the tokenizer the config names, or its workers report, is the caller's)
        raise InvalidRequest(f"the model cannot be served: {exc.message}") from None
    return json_reply(_model_state(served))


async def _remove_model(gw: "Gateway", http: HttpRequest) -> Reply:
    name = http.params["model"]
    await gw.remove_model(name)
    return json_reply({"name": name, "removed": True})


async def _add_worker(gw: "Gateway", http: HttpRequest) -> Reply:
    body = _json_object(await http.read_body(), "a worker")
    url, engine = body.get("url"), body.get("engine")
    if set(body) - {"url", "engine"} or not isinstance(url, str) or not isinstance(engine, (str, type(None))):
        raise InvalidRequest("a worker is {\"url\": \"grpc://HOST:PORT\", \"engine\": optional}")
    model = gw.models.get(http.params["model"])
    await gw.add_worker(http.params["model"], url, engine)
    return json_reply(next(w for w in model.pool.stats() if w["url"] == url))


async def _remove_worker(gw: "Gateway", http: HttpRequest) -> Reply:
    query = http.query_params()
    url = query.get("url")
    if not url:
        raise InvalidRequest("name the worker: ?url=grpc://HOST:PORT")
    try:
        grace = float(query.get("grace", 30))
    except ValueError:
        raise InvalidRequest("grace must be seconds") from None
    await gw.models.get(http.params["model"]).pool.remove_worker(url, grace)
    return json_reply({"url": url, "removed": True})


ROUTES = {
    ("GET", "/admin/models"): _models,
    ("POST", "/admin/models"): _add_model,
    ("DELETE", "/admin/models/{model}"): _remove_model,
    ("POST", "/admin/models/{model}/workers"): _add_worker,
    ("DELETE", "/admin/models/{model}/workers"): _remove_worker,
}
