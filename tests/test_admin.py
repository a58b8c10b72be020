"""The admin API (smg.api.admin) over smg's HTTP server: models and workers added, listed, drained
and removed while serving, behind the admin key; off without one."""
import httpx
import openai
import pytest

from smg.config import GatewayConfig
from smg.engine import ReferenceEngine
from smg.gateway import Gateway
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path
from test_gateway_e2e import Stack, stream_in_thread

pytestmark = pytest.mark.end_to_end
ADMIN = {"authorization": "Bearer admin-secret"}
TEMPLATE = str(template_path("llama3"))


@pytest.fixture(scope="module")
def served():
    """(base URL, engine URLs: alpha's, a second for alpha, beta's, a gateway without an admin key's port)."""
    stack = Stack("smg")
    directory = bundled_tokenizer_dir("llama3.2")

    async def start():
        urls = []
        for name in ("alpha", "alpha", "beta"):
            engine = ReferenceEngine(Tokenizer.from_dir(directory), delay_ms=5, model_id=name, tokenizer_dir=directory)
            urls.append(f"grpc://127.0.0.1:{(await stack.start_engine(engine))[1]}")
        model = {"name": "alpha", "workers": [urls[0]], "chat_template": TEMPLATE}
        keyed = GatewayConfig.load({"models": [model], "admin_key": "admin-secret",
                                    "api_keys": [{"name": "app", "key": "sk-app"}]})
        open_ = GatewayConfig.load({"models": [model]})
        return await stack.start_web(Gateway(config=keyed)), urls, await stack.start_web(Gateway(config=open_))

    port, urls, open_port = stack.call(start())
    yield f"http://127.0.0.1:{port}", urls, f"http://127.0.0.1:{open_port}"
    stack.close()


def test_the_admin_key_opens_it_and_api_keys_do_not(served):
    base, _, open_base = served
    assert httpx.get(base + "/admin/models").status_code == 401
    assert httpx.get(base + "/admin/models", headers={"authorization": "Bearer sk-app"}).status_code == 401
    assert httpx.get(base + "/v1/models", headers=ADMIN).status_code == 401  # nor does it open the APIs
    listed = httpx.get(base + "/admin/models", headers=ADMIN).json()["data"]
    assert [m["name"] for m in listed] == ["alpha"] and listed[0]["policy"] == "CacheAware"
    assert listed[0]["workers"][0]["healthy"] is True
    routing = listed[0]["routing"]  # the policy's own state (one worker: nothing recorded yet)
    assert routing["tree_tokens"] == 0 and routing["routing_keys"] == 0
    off = httpx.get(open_base + "/admin/models", headers=ADMIN)
    assert off.status_code == 404 and "admin API is off" in off.json()["error"]["message"]


def test_models_and_workers_added_drained_and_removed_while_serving(served):
    base, urls, _ = served
    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-app", max_retries=0)
    added = httpx.post(base + "/admin/models", headers=ADMIN,
                       json={"name": "beta", "workers": [urls[2]], "chat_template": TEMPLATE}, timeout=30)
    assert added.status_code == 200 and added.json()["name"] == "beta"
    done = client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert done.choices[0].message.content
    worker = httpx.post(base + "/admin/models/alpha/workers", headers=ADMIN, json={"url": urls[1]}, timeout=30)
    assert worker.status_code == 200 and worker.json()["url"] == urls[1] and worker.json()["healthy"] is True
    workers = httpx.get(base + "/admin/models", headers=ADMIN).json()["data"][0]["workers"]
    assert sorted(w["url"] for w in workers) == sorted(urls[:2])
    # drain the first worker while a stream runs on it: the stream finishes, then the worker goes
    lines = []
    reader = stream_in_thread(base, "alpha", 60, lines, {"authorization": "Bearer sk-app"})
    alpha = httpx.get(base + "/admin/models", headers=ADMIN).json()["data"][0]
    busy = next(w["url"] for w in alpha["workers"] if w["in_flight"])
    assert alpha["routing"]["tree_tokens_by_worker"][busy] > 0  # two workers: the tree records the route
    drained = httpx.delete(base + "/admin/models/alpha/workers", params={"url": busy}, headers=ADMIN, timeout=30)
    reader.join(30)
    assert drained.json() == {"url": busy, "removed": True} and "data: [DONE]" in lines
    left = httpx.get(base + "/admin/models", headers=ADMIN).json()["data"][0]["workers"]
    assert [w["url"] for w in left] == [u for u in urls[:2] if u != busy]
    assert client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=2).choices[0].message.content  # the other serves
    removed = httpx.delete(base + "/admin/models/beta", headers=ADMIN, timeout=30)
    assert removed.json() == {"name": "beta", "removed": True}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "Hi"}])


def test_bad_admin_requests_are_400s_and_404s(served):
    base, _, _ = served
    for method, path, kwargs, status in (
            ("POST", "/admin/models", {"content": b"not json"}, 400),
            ("POST", "/admin/models", {"json": {"name": "x", "bogus": 1}}, 400),
            ("POST", "/admin/models/alpha/workers", {"json": {"host": "x"}}, 400),
            ("POST", "/admin/models/nope/workers", {"json": {"url": "grpc://127.0.0.1:1"}}, 404),
            ("DELETE", "/admin/models/alpha/workers", {}, 400),
            ("DELETE", "/admin/models/alpha/workers", {"params": {"url": "grpc://127.0.0.1:1"}}, 400),
            ("DELETE", "/admin/models/nope", {}, 404)):
        reply = httpx.request(method, base + path, headers=ADMIN, timeout=30, **kwargs)
        assert reply.status_code == status, (method, path, reply.text)
        assert "error" in reply.json()
