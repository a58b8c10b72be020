"""Workers found while serving (smg.discovery): a watched file, DNS, Kubernetes pods. Real
reference engines on 127.0.0.x (the whole 127/8 is loopback), a real gateway; DNS through the
system resolver for `localhost`, and through a resolver function where a name must change its
answers (no DNS server runs here); the Kubernetes API as a protocol fake over HTTP (no API server
runs here)."""
import asyncio
import json
import logging

import pytest
from conftest import until

from smg import Gateway
from smg.config import ConfigError, DiscoveryConfig, GatewayConfig, PoolConfig
from smg.discovery import Discovery, DnsSource, FileSource, resolve_addresses
from smg.engine import ReferenceEngine
from smg.tokenizer.templates import template_path

pytestmark = pytest.mark.no_kernels


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


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
            # (the config's own worker is never drained by the file: drop a listed one then)
            dropped = busy if busy != url[2] else url[0]
            listing.write_text(json.dumps([u for u in url[:2] if u != dropped] + ["grpc://127.0.0.1:1"]))
            await until(lambda: dropped not in urls(gw) and "grpc://127.0.0.1:1" in urls(gw))
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
                {"kind": "dns", "name": "x", "port": 1, "role": "leader"}, {"kind": "kubernetes"}):
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


class FakeKubernetes:
    """The two calls of the Kubernetes API a pod watcher makes, on 127.0.0.1: list pods (by label
    selector) and watch them from a resourceVersion (JSON lines, chunked). A protocol fake: no API
    server runs here. It checks the bearer token and the selector."""

    def __init__(self, token: str) -> None:
        import http.server
        import queue
        import threading

        self.token, self.pods, self.version, self.watches = token, {}, 1, []
        self.requests: list[str] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                from urllib.parse import parse_qs, urlparse

                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append(self.path)
                if (self.headers.get("authorization") != f"Bearer {fake.token}"
                        or url.path != "/api/v1/namespaces/serving/pods" or query.get("labelSelector") != "app=sglang"):
                    body = b'{"kind": "Status", "code": 403}'
                    self.send_response(403)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if query.get("watch") != "1":
                    body = json.dumps({"kind": "PodList", "metadata": {"resourceVersion": str(fake.version)},
                                       "items": list(fake.pods.values())}).encode()
                    self.send_response(200)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                events = queue.Queue()
                fake.watches.append(events)
                self.send_response(200)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                while True:
                    event = events.get()
                    if event is None:
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    line = json.dumps(event).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(line), line))
                    self.wfile.flush()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    @staticmethod
    def pod(name: str, ip: str, port: int, ready: bool = True) -> dict:
        return {"metadata": {"name": name, "annotations": {"smg.ai/port": str(port)}},
                "status": {"phase": "Running" if ready else "Pending", "podIP": ip,
                           "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    def change(self, kind: str, pod: dict) -> None:
        self.version += 1
        if kind == "DELETED":
            self.pods.pop(pod["metadata"]["name"], None)
        else:
            self.pods[pod["metadata"]["name"]] = pod
        for watch in self.watches:
            watch.put({"type": kind, "object": pod})

    def expire_watches(self) -> None:
        """As an API server does when a watch's version is too old: an ERROR event (410)."""
        for watch in self.watches:
            watch.put({"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}})
            watch.put(None)
        self.watches.clear()

    def close(self) -> None:
        for watch in self.watches:
            watch.put(None)
        self.server.shutdown()


def test_kubernetes_pods_by_label_are_watched_into_the_pool(llama, llama_dir, tmp_path):
    token = tmp_path / "token"
    token.write_text("service-account-token\n")
    api = FakeKubernetes("service-account-token")

    async def main():
        servers = [ReferenceEngine(llama, model_id="m").server() for _ in range(3)]
        port = await servers[0].start("127.0.0.2", 0)
        for server, host in zip(servers[1:], ("127.0.0.3", "127.0.0.4")):
            await server.start(host, port)
        api.change("ADDED", api.pod("sglang-a", "127.0.0.2", port))
        api.change("ADDED", api.pod("sglang-b", "127.0.0.3", port, ready=False))
        gw = gateway(llama_dir, [DiscoveryConfig(kind="kubernetes", namespace="serving", label_selector="app=sglang",
                                                 api_server=api.url, token_file=str(token), interval=0.05)])
        async with gw:
            assert set(urls(gw)) == {f"grpc://127.0.0.2:{port}"}  # the ready pod, before serving
            assert await chat(gw)
            await until(lambda: api.watches)
            api.change("MODIFIED", api.pod("sglang-b", "127.0.0.3", port))  # became ready
            await until(lambda: set(urls(gw)) == {f"grpc://127.0.0.2:{port}", f"grpc://127.0.0.3:{port}"})
            api.change("DELETED", api.pod("sglang-a", "127.0.0.2", port))  # drained
            await until(lambda: set(urls(gw)) == {f"grpc://127.0.0.3:{port}"})
            # the watch expires while a pod comes: the source lists again, and finds it
            api.expire_watches()
            api.pods["sglang-c"] = api.pod("sglang-c", "127.0.0.4", port)
            await until(lambda: set(urls(gw)) == {f"grpc://127.0.0.3:{port}", f"grpc://127.0.0.4:{port}"})
            await until(lambda: all(urls(gw).values()))
            assert await chat(gw)
        for server in servers:
            await server.stop(None)

    try:
        run(main())
    finally:
        api.close()
    lists = [r for r in api.requests if "watch=1" not in r]
    assert len(lists) == 2 and all("labelSelector=app%3Dsglang" in r for r in api.requests)
