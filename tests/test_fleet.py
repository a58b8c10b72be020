"""One gateway for a fleet: several models (different tokenizers and engines), aliases, LoRA
adapters, models and workers added and removed while serving."""
import asyncio

import pytest

from smg import Gateway, ModelConfig, ModelNotFound
from smg.config import ConfigError
from smg.engine import EngineServer, ReferenceEngine
from smg.models import ModelRegistry, ServedModel
from smg.config import CacheConfig, PoolConfig

# Whole fleets of gateways and engines; the twins' pass covers their kernels in test_gateway (CI time).
pytestmark = pytest.mark.end_to_end

USER = [{"role": "user", "content": "Who are you?"}]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Recording:
    """A reference engine in script mode that keeps every request it got."""

    def __init__(self, tokenizer, directory, text: str, model_id: str, delay_ms: float = 0.0) -> None:
        self.engine = ReferenceEngine(tokenizer, mode="script", scripts=[text], model_id=model_id,
                                      tokenizer_dir=directory, delay_ms=delay_ms)
        self.requests = []

    async def generate(self, request):
        self.requests.append(request)
        async for chunk in self.engine.generate(request):
            yield chunk

    def server(self) -> EngineServer:
        return EngineServer(self.generate, self.engine.model_info, self.engine._tokenizer_dir)


def test_the_registry_resolves_names_aliases_adapters_and_the_default():
    registry = ModelRegistry()
    pool = PoolConfig()
    a = ServedModel(ModelConfig(name="llama", aliases=["llama-3.2"], lora_adapters=["sql"]), pool, CacheConfig())
    b = ServedModel(ModelConfig(name="deepseek"), pool, CacheConfig())
    registry.add(a)
    registry.add(b)
    assert registry.resolve("llama") == (a, None) == registry.resolve("llama-3.2") == registry.resolve("")
    assert registry.resolve("llama:sql") == (a, "sql") and registry.resolve("llama-3.2:sql") == (a, "sql")
    assert registry.resolve("deepseek") == (b, None)
    for unknown in ("gpt-4", "llama:nope", "deepseek:sql", ":sql"):
        with pytest.raises(ModelNotFound) as info:
            registry.resolve(unknown)
        assert info.value.status_code == 404 and info.value.to_openai()["error"]["code"] == "model_not_found"
    with pytest.raises(Exception, match="already served"):
        registry.add(ServedModel(ModelConfig(name="x", aliases=["llama"]), pool, CacheConfig()))
    registry.remove("llama")
    with pytest.raises(ModelNotFound):
        registry.resolve("llama-3.2")
    assert registry.resolve("") == (b, None)


def test_lora_adapters_need_a_protocol_that_carries_them():
    with pytest.raises(ConfigError, match="LoRA"):
        ModelConfig(name="m", engine="vllm", lora_adapters=["a"])
    with pytest.raises(ConfigError, match="LoRA"):  # the engine taken from the pool's default
        ServedModel(ModelConfig(name="m", lora_adapters=["a"]), PoolConfig(default_engine="vllm"), CacheConfig())


def test_two_models_with_their_own_tokenizers_engines_and_adapters(llama, llama_dir, deepseek, deepseek_dir):
    from smg.tokenizer.templates import template_path

    llama_engine = Recording(llama, llama_dir, "I am Llama.", "meta-llama/Llama-3.2-1B-Instruct")
    deepseek_engine = Recording(deepseek, deepseek_dir, "I am DeepSeek.", "deepseek-ai/DeepSeek-V3")

    async def main():
        servers = [llama_engine.server(), deepseek_engine.server()]
        ports = [await s.start() for s in servers]
        models = [
            {"name": "llama", "aliases": ["llama-3.2"], "workers": [f"grpc://127.0.0.1:{ports[0]}"],
             "tokenizer": str(llama_dir), "chat_template": "llama3", "lora_adapters": ["sql-expert"]},
            ModelConfig(name="deepseek", workers=[f"grpc://127.0.0.1:{ports[1]}"], tokenizer=str(deepseek_dir),
                        chat_template=str(template_path("deepseek_v3")), policy="least_load"),
        ]
        try:
            async with Gateway(models=models) as gw:
                a = await gw.chat({"model": "llama", "messages": USER})
                b = await gw.chat({"model": "deepseek", "messages": USER})
                c = await gw.chat({"model": "llama-3.2:sql-expert", "messages": USER, "max_tokens": 8})
                streamed = [x async for x in gw.chat_stream({"model": "deepseek", "messages": USER, "stream": True})]
                with pytest.raises(ModelNotFound):
                    await gw.chat({"model": "gpt-4o", "messages": USER})
                with pytest.raises(ModelNotFound):
                    await gw.complete({"model": "llama:other-adapter", "prompt": "x"})
                listed = {(m.id, m.parent) for m in gw.list_models().data}
                policies = {m.name: m.pool.policy.name for m in gw.models}
                return a, b, c, streamed, listed, policies
        finally:
            for s in servers:
                await s.stop()

    a, b, c, streamed, listed, policies = run(main())
    assert a.choices[0].message.content == "I am Llama." and a.model == "llama"
    assert b.choices[0].message.content == "I am DeepSeek." and b.model == "deepseek"
    assert "".join(x.choices[0].delta.content or "" for x in streamed if x.choices) == "I am DeepSeek."
    # each prompt went through its own model's template and tokenizer
    llama_prompt = llama.encode(llama.apply_chat_template(USER, chat_template=str(_template("llama3"))))
    deepseek_prompt = deepseek.encode(deepseek.apply_chat_template(USER, chat_template=str(_template("deepseek_v3"))))
    assert list(llama_engine.requests[0].input_ids) == llama_prompt
    assert list(deepseek_engine.requests[0].input_ids) == deepseek_prompt
    assert a.usage.prompt_tokens == len(llama_prompt) and b.usage.prompt_tokens == len(deepseek_prompt)
    # the adapter reached the engine; plain requests carry none
    assert [r.lora_id for r in llama_engine.requests] == [None, "sql-expert"] and c.model == "llama-3.2:sql-expert"
    assert listed == {("llama", None), ("llama-3.2", None), ("llama:sql-expert", "llama"), ("deepseek", None)}
    assert policies == {"llama": "cache_aware", "deepseek": "least_load"}


def _template(name):
    from smg.tokenizer.templates import template_path

    return template_path(name)


def test_models_and_workers_come_and_go_while_serving(llama, llama_dir, deepseek, deepseek_dir):
    """add_model / remove_model / add_worker / remove_worker on a live gateway; a request in
    flight on a worker being removed finishes."""
    slow = Recording(llama, llama_dir, "one two three four five six", "slow", delay_ms=30)
    fast = Recording(llama, llama_dir, "fast", "fast")
    other = Recording(deepseek, deepseek_dir, "other", "other")

    async def main():
        servers = [slow.server(), fast.server(), other.server()]
        ports = [await s.start() for s in servers]
        urls = [f"grpc://127.0.0.1:{p}" for p in ports]
        try:
            async with Gateway([urls[0]], llama_dir, "llama", chat_template=str(_template("llama3"))) as gw:
                request = {"model": "llama", "messages": USER}
                in_flight = asyncio.create_task(gw.chat(request))
                await asyncio.sleep(0.1)  # it is streaming from the slow worker
                await gw.add_worker("llama", urls[1])
                removal = asyncio.create_task(gw.remove_worker("llama", urls[0]))
                await asyncio.sleep(0.05)
                assert not removal.done()  # it waits for the request in flight
                during = await gw.chat(request)  # new requests go to the remaining worker
                finished = await in_flight
                await removal
                after = await gw.chat(request)
                await gw.add_model({"name": "other", "workers": [urls[2]], "tokenizer": str(deepseek_dir),
                                    "chat_template": "deepseek_v3"})
                added = await gw.chat({"model": "other", "messages": USER})
                names_with = [m.id for m in gw.list_models().data]
                with pytest.raises(Exception, match="already served"):
                    await gw.add_model({"name": "other", "workers": [urls[2]], "tokenizer": str(deepseek_dir)})
                await gw.remove_model("other")
                with pytest.raises(ModelNotFound):
                    await gw.chat({"model": "other", "messages": USER})
                return finished, during, after, added, names_with, [m.id for m in gw.list_models().data]
        finally:
            for s in servers:
                await s.stop()

    finished, during, after, added, names_with, names_after = run(main())
    assert finished.choices[0].message.content == "one two three four five six"
    assert finished.choices[0].finish_reason == "stop"
    assert during.choices[0].message.content == "fast" == after.choices[0].message.content
    assert added.choices[0].message.content == "other"
    assert names_with == ["llama", "other"] and names_after == ["llama"]


def test_smg_serve_with_a_config_file_serves_two_models_to_the_openai_client(tmp_path, llama, llama_dir, deepseek,
                                                                             deepseek_dir):
    """Two reference engines serving different models (different tokenizers) behind one
    ``smg serve --config FILE.toml``, driven by the official openai client."""
    import json
    import socket
    import subprocess
    import sys
    import threading
    import time

    import httpx
    import openai

    engines = [Recording(llama, llama_dir, "Llama here.", "llama-engine"),
               Recording(deepseek, deepseek_dir, "DeepSeek here.", "deepseek-engine")]
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    servers = [e.server() for e in engines]
    ports = [asyncio.run_coroutine_threadsafe(s.start(), loop).result(30) for s in servers]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "fleet.toml"
    config.write_text(f'''
host = "127.0.0.1"
port = {port}
[[models]]
name = "llama"
aliases = ["llama-3.2"]
workers = ["grpc://127.0.0.1:{ports[0]}"]
engine = "sglang"
tokenizer = "{llama_dir}"
chat_template = "llama3"
lora_adapters = ["sql-expert"]
[[models]]
name = "deepseek"
workers = ["grpc://127.0.0.1:{ports[1]}"]
tokenizer = "deepseek"
chat_template = "deepseek_v3"
policy = "least_load"
''')
    proc = subprocess.Popen([sys.executable, "-m", "smg", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readiness").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "smg serve did not start"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        listed = {m.id: getattr(m, "parent", None) for m in client.models.list()}
        a = client.chat.completions.create(model="llama-3.2", messages=USER)
        b = client.chat.completions.create(model="deepseek", messages=USER)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="deepseek", messages=USER, stream=True) if c.choices)
        lora = client.chat.completions.create(model="llama:sql-expert", messages=USER,
                                              extra_headers={"X-Request-Id": "client-42"})
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="gpt-4o", messages=USER)
        tokenized = httpx.post(f"http://127.0.0.1:{port}/v1/tokenize",
                               json={"model": "deepseek", "messages": USER}).json()
        raw = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                         json={"model": "llama", "messages": USER}, headers={"x-request-id": "trace-7"})
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
        for s in servers:
            asyncio.run_coroutine_threadsafe(s.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
    assert proc.returncode == 0 and "Traceback" not in output, output
    assert listed == {"llama": None, "llama-3.2": None, "llama:sql-expert": "llama", "deepseek": None}
    assert a.choices[0].message.content == "Llama here." and a.model == "llama-3.2"
    assert b.choices[0].message.content == "DeepSeek here." == streamed
    deepseek_prompt = deepseek.encode(deepseek.apply_chat_template(USER, chat_template=str(_template("deepseek_v3"))))
    assert b.usage.prompt_tokens == len(deepseek_prompt) == tokenized["count"]
    assert tokenized["tokens"] == deepseek_prompt
    assert lora.choices[0].message.content == "Llama here."
    assert [r.lora_id for r in engines[0].requests] == [None, "sql-expert", None]
    assert engines[0].requests[1].request_id.startswith("client-42-")  # X-Request-Id prefixes the engine's id
    assert missing.value.status_code == 404 and missing.value.body["code"] == "model_not_found"
    assert raw.headers["x-request-id"] == "trace-7" and json.loads(raw.content)["model"] == "llama"


def test_a_gateway_starts_its_models_together_once(llama, llama_dir, deepseek, deepseek_dir):
    """Models start concurrently and keep their configured order (the first is the default); the
    gauges are listed once; a closed Gateway does not pretend to start again."""
    from smg.errors import SmgError

    engines = [Recording(llama, llama_dir, "a", "a"), Recording(deepseek, deepseek_dir, "b", "b")]

    async def main():
        servers = [e.server() for e in engines]
        ports = [await s.start() for s in servers]
        gw = Gateway(models=[{"name": "first", "workers": [f"grpc://127.0.0.1:{ports[0]}"], "tokenizer": str(llama_dir)},
                             {"name": "second", "workers": [f"grpc://127.0.0.1:{ports[1]}"],
                              "tokenizer": str(deepseek_dir)}])
        try:
            async with gw:
                default = gw.default_model.name
                metrics = gw.metrics.render()
            with pytest.raises(SmgError, match="closed"):
                await gw.start()
            return default, metrics
        finally:
            for s in servers:
                await s.stop()

    default, metrics = run(main())
    assert default == "first"
    assert sum(line.startswith("smg_worker_healthy{") for line in metrics.splitlines()) == 2
