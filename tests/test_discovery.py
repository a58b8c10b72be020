"""Workers found while serving (smg.discovery): a watched file and DNS. Real reference engines on
127.0.0.x (the whole 127/8 is loopback), a real gateway; DNS through the system resolver for
`localhost`, and through a resolver function where a name must change its answers (no DNS
server runs here)."""
import asyncio
import json
import logging

import pytest

from smg import Gateway
from smg.config import ConfigError, DiscoveryConfig, GatewayConfig, PoolConfig
from smg.discovery import Discovery, DnsSource, FileSource, resolve_addresses
from smg.engine import ReferenceEngine
from smg.tokenizer.templates import template_path

pytestmark = pytest.mark.no_kernels


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def until(condition, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def gateway(llama_dir, discovery, workers=()) -> Gateway:
    return Gateway(config=GatewayConfig(
        model="m", workers=list(workers), tokenizer=str(llama_dir), chat_template=str(template_path("llama3")),
        discovery=discovery, pool=PoolConfig(health_interval=0.2)))


def urls(gw) -> dict[str, bool]:
    return {w.url: w.healthy for w in gw.models.get("m").pool.workers}


async def chat(gw) -> str:
    reply = await gw.chat({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    return reply.choices[0].message.content


def test_a_watched_file_adds_probes_and_drains_workers(llama, llama_dir, tmp_path, caplog):
    listing = tmp_path / "workers.json"

    async def main():
        engines = [ReferenceEngine(llama, model_id="m", delay_ms=5) for _ in range(3)]
        servers = [e.server() for e in engines]
        ports = [await s.start() for s in servers]
        url = [f"grpc://127.0.0.1:{p}" for p in ports]
        listing.write_text(json.dumps({"workers": [url[0], {"url": url[1], "model": "m"}]}))
        gw = gateway(llama_dir, [DiscoveryConfig(kind="file", path=str(listing), interval=0.05)], workers=[url[2]])
        async with gw:
            assert urls(gw) == {url[2]: True, url[0]: True, url[1]: True}  # listed at start: there before serving
            assert await chat(gw)
            # a long request on url[0], then url[0] leaves the file: drained (it finishes), then closed
            long = asyncio.ensure_future(gw.chat({"model": "m", "max_tokens": 200,
                                                  "messages": [{"role": "user", "content": "hi"}]}))
            await until(lambda: any(w.in_flight for w in gw.models.get("m").pool.workers))
            busy = next(w.url for w in gw.models.get("m").pool.workers if w.in_flight)
            listing.write_text(json.dumps([u for u in url[:2] if u != busy] + ["grpc://127.0.0.1:1"]))
            await until(lambda: busy not in urls(gw) and "grpc://127.0.0.1:1" in urls(gw))
            assert (await long).usage.completion_tokens == 200  # finished on the drained worker
            assert urls(gw)["grpc://127.0.0.1:1"] is False  # probed, never healthy: gets no traffic
            assert all([await chat(gw) for _ in range(4)])
            # a file that does not parse: logged, and the last set kept (a typo drains nothing)
            before = urls(gw)
            with caplog.at_level(logging.ERROR, logger="smg.discovery"):
                listing.write_text("{not json")
                await asyncio.sleep(0.3)
            assert urls(gw) == before and "keeping its last" in caplog.text
            # the config's own worker is never drained by the file
            listing.write_text("[]")
            await until(lambda: set(urls(gw)) == {url[2]})
        for server in servers:
            await server.stop(None)

    run(main())


def test_dns_names_add_and_drain_the_workers_at_their_addresses(llama, llama_dir):
    answers = {"engines.local": ["127.0.0.2", "127.0.0.3"]}

    async def resolve(name, port):
        if name not in answers:
            raise OSError(f"no such name {name}")
        return answers[name]

    async def main():
        engines = [ReferenceEngine(llama, model_id="m") for _ in range(3)]
        servers = [e.server() for e in engines]
        port = await servers[0].start("127.0.0.2", 0)  # one port, three addresses: as pods behind a service
        for server, host in zip(servers[1:], ("127.0.0.3", "127.0.0.4")):
            await server.start(host, port)
        config = DiscoveryConfig(kind="dns", name="engines.local", port=port, model="m", interval=0.05)
        gw = gateway(llama_dir, [config])
        gw._discovery = Discovery(gw, [(DnsSource(config, resolve), 0.05)])
        async with gw:
            assert set(urls(gw)) == {f"grpc://127.0.0.2:{port}", f"grpc://127.0.0.3:{port}"}
            assert await chat(gw)
            answers["engines.local"] = ["127.0.0.3", "127.0.0.4"]  # a pod replaced
            await until(lambda: set(urls(gw)) == {f"grpc://127.0.0.3:{port}", f"grpc://127.0.0.4:{port}"})
            await until(lambda: all(urls(gw).values()))
            del answers["engines.local"]  # the name stops resolving: the last set is kept
            await asyncio.sleep(0.3)
            assert len(urls(gw)) == 2 and await chat(gw)
        for server in servers:
            await server.stop(None)

    run(main())


def test_the_system_resolver_and_the_config_checks():
    assert "127.0.0.1" in run(resolve_addresses("localhost", 80))
    source = DnsSource(DiscoveryConfig(kind="dns", name="localhost", port=30000))
    assert "grpc://127.0.0.1:30000" in {f.url for f in run(source.look())}
    for bad in ({"kind": "zookeeper"}, {"kind": "file"}, {"kind": "dns", "name": "x"},
                {"kind": "dns", "name": "x", "port": 1, "role": "leader"}):
        with pytest.raises(ConfigError):
            DiscoveryConfig(**bad)


def test_a_worker_file_entry_is_checked(tmp_path):
    path = tmp_path / "workers.toml"
    path.write_text('[[workers]]\nurl = "grpc://10.0.0.1:30000"\nrole = "prefill"\nmodel = "big"\n')
    found = run(FileSource(str(path)).look())
    assert {(f.model, f.url, f.role) for f in found} == {("big", "grpc://10.0.0.1:30000", "prefill")}
    path.write_text('[[workers]]\nurl = "grpc://10.0.0.1:30000"\nrole = "leader"\n')
    with pytest.raises(ConfigError, match="role must be one of"):
        run(FileSource(str(path)).look())
