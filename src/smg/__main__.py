"""Command line: ``python -m smg serve | engine | tokenize ...``."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from smg.errors import SmgError


from smg.multimodal import FAMILIES as MULTIMODAL_FAMILIES
from smg.policies import POLICIES

DEFAULT_STORAGE = "sqlite:///smg.sqlite3"  # smg serve keeps responses and conversations across restarts


def _tokenize(args: argparse.Namespace) -> int:
    from smg.tokenizer import Tokenizer
    from smg.tokenizer.bundled import resolve_tokenizer
    from smg.tokenizer.templates import resolve_template

    tokenizer = Tokenizer.load(resolve_tokenizer(args.tokenizer))
    text = args.text if args.text != "-" else sys.stdin.read()
    if args.chat:
        template = resolve_template(args.chat_template)
        messages = [{"role": "user", "content": text}]
        if args.system:
            messages.insert(0, {"role": "system", "content": args.system})
        text = tokenizer.apply_chat_template(messages, chat_template=template)
    ids = tokenizer.encode(text, add_special_tokens=args.add_special_tokens)
    out = {"num_tokens": len(ids), "ids": ids}
    if args.show_text:
        out["text"] = text
        out["tokens"] = [tokenizer.id_to_token(i) for i in ids]
    json.dump(out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def _engine(args: argparse.Namespace) -> int:
    import logging

    from smg.engine import ReferenceEngine
    from smg.engine.disaggregation import Disaggregation
    from smg.tokenizer import Tokenizer
    from smg.tokenizer.bundled import resolve_tokenizer

    if not args.reference:
        print("error: only --reference is available from the command line; embed EngineServer for your own "
              "generator", file=sys.stderr)
        return 2
    if args.prefix_cache_tokens < 0 or args.prefill_us_per_token < 0:
        print("error: --prefix-cache-tokens and --prefill-us-per-token must not be negative", file=sys.stderr)
        return 2
    if args.script_by_turn and (args.mode != "script" or not args.script):
        print("error: --script-by-turn needs --mode script and at least one --script FILE", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    directory = resolve_tokenizer(args.tokenizer)
    tokenizer = Tokenizer.load(directory)
    scripts = [Path(p).read_text(encoding="utf-8") for p in args.script]
    engine = ReferenceEngine(tokenizer, mode=args.mode, scripts=scripts, delay_ms=args.delay_ms,
                             tokens_per_chunk=args.tokens_per_chunk, seed=args.seed, model_id=args.model_id,
                             tokenizer_dir=directory if directory.is_dir() else directory.parent,
                             prefix_cache_tokens=args.prefix_cache_tokens, prefill_us_per_token=args.prefill_us_per_token,
                             disaggregation=Disaggregation(args.disaggregation_mode, args.bootstrap_port)
                             if args.disaggregation_mode else None, script_by_turn=args.script_by_turn)

    async def serve() -> None:
        server = engine.server()
        port = await server.start(args.host, args.port)
        print(f"reference engine serving on grpc://{args.host}:{port}", flush=True)
        await server.wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


# Collector settings for the serving process (not the library's to set in an embedding app): each
# token allocates a few short-lived containers (records, futures, lists), so at the default
# gen-0 threshold of 700 the collector ran every ~150 tokens, ~1.3% of a served process's busy
# time (py-spy, concurrency 64). What was loaded before serving is frozen out of its scans.
GC_GEN0_THRESHOLD = 20_000


def _tune_gc() -> None:
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def _serve_config(args: argparse.Namespace):
    """The gateway's config: ``--config FILE``, or the single-model flags (a one-model config);
    flags that name the server (host, port, ...) override the file's."""
    import msgspec

    from smg.config import ConfigError, GatewayConfig, convert

    overrides = {key: getattr(args, key) for key in ("host", "port", "server", "keep_alive", "request_head_timeout",
                                                     "request_body_timeout", "response_write_timeout",
                                                     "max_connections",
                                                     "max_concurrent_requests", "max_queue_size", "queue_timeout",
                                                     "admin_key")
                 if getattr(args, key) is not None}
    if args.trust_request_chat_template:
        overrides["trust_request_chat_template"] = True
    if args.access_log:
        overrides["access_log"] = True
    if args.tracing:
        overrides["tracing"] = True
    if args.config:
        single = [flag for flag, value in (("--worker", args.worker), ("--prefill", args.prefill),
                                           ("--decode", args.decode), ("--tokenizer", args.tokenizer),
                                           ("--model", args.model), ("--engine", args.engine),
                                           ("--policy", args.policy), ("--chat-template", args.chat_template),
                                           ("--reasoning-parser", args.reasoning_parser),
                                           ("--tool-parser", args.tool_parser), ("--demo", args.demo),
                                           ("--lora-adapter", args.lora_adapter),
                                           ("--image-processor", args.image_processor)) if value]
        if single:
            raise ConfigError(f"--config names the models; drop {', '.join(single)}")
        values, source = msgspec.to_builtins(GatewayConfig.load(args.config)), "gateway config"
    else:
        values, source = {"workers": list(args.worker), "prefill": list(args.prefill), "decode": list(args.decode),
                          "bootstrap_port": args.bootstrap_port, "tokenizer": args.tokenizer, "model": args.model,
                          "engine": args.engine, "policy": args.policy, "reasoning_parser": args.reasoning_parser,
                          "tool_parser": args.tool_parser, "chat_template": args.chat_template,
                          "lora_adapters": list(args.lora_adapter),
                          "image_processor": args.image_processor}, "command line"
    values = {k: v for k, v in values.items() if v not in (None, [])} | overrides
    # the allow-list and media directories add to the file's
    if args.allow_url_host:
        values["url_allow_list"] = [*values.get("url_allow_list", []), *args.allow_url_host]
    if args.allowed_media_dir:
        media = values.get("media", {})
        values["media"] = {**media, "allowed_dirs": [*media.get("allowed_dirs", []), *args.allowed_media_dir]}
    if args.pin_image_threads:
        values["media"] = {**values.get("media", {}), "pin_threads": True}
    pool = {key: value for key, value in (
        ("read_interval", args.engine_read_interval_ms / 1000 if args.engine_read_interval_ms is not None else None),
        ("first_token_timeout", args.first_token_timeout), ("inter_token_timeout", args.inter_token_timeout),
        ("health_interval", args.health_interval)) if value is not None}
    if pool:
        values["pool"] = {**values.get("pool", {}), **pool}
    # discovered workers add to the file's sources
    sources = [{"kind": "file", "path": path} for path in args.worker_file]
    for spec in args.worker_dns:
        name, sep, port = spec.rpartition(":")
        if not sep or not name or not port.isdigit():
            raise ConfigError(f"--worker-dns takes NAME:PORT, got {spec!r}")
        sources.append({"kind": "dns", "name": name, "port": int(port)})
    for spec in args.worker_pods:
        namespace, sep, selector = spec.partition("/")
        if not sep or not namespace or not selector:
            raise ConfigError(f"--worker-pods takes NAMESPACE/LABEL_SELECTOR, got {spec!r}")
        sources.append({"kind": "kubernetes", "namespace": namespace, "label_selector": selector})
    if sources:
        values["discovery"] = [*values.get("discovery", []), *sources]
    # API keys add to the file's: --api-key KEY (named key-1, key-2, ...) and --api-keys-file
    keys = list(values.get("api_keys", []))
    if args.api_keys_file:
        keys += _api_keys_file(args.api_keys_file)
    keys += [{"name": f"key-{i}", "key": key} for i, key in enumerate(args.api_key, 1)]
    if keys:
        values["api_keys"] = keys
    # MCP servers add to the file's; the loop's limits override it
    for spec in args.mcp_server:
        label, sep, url = spec.partition("=")
        if not sep or not label or not url:
            raise ConfigError(f"--mcp-server takes LABEL=URL, got {spec!r}")
        values["mcp_servers"] = [*values.get("mcp_servers", []), {"label": label, "url": url}]
    mcp = {key: value for key, value in (("call_timeout", args.mcp_call_timeout), ("max_calls", args.mcp_max_calls))
           if value is not None}
    if mcp:
        values["mcp"] = {**values.get("mcp", {}), **mcp}
    if args.storage is not None or "storage" not in values:  # (a config file's storage, unless --storage)
        values["storage"] = {**values.get("storage", {}), "url": args.storage or DEFAULT_STORAGE}
    return convert(values, GatewayConfig, source)


def _api_keys_file(path: str) -> list:
    """``--api-keys-file``: JSON (a list of keys, or ``{"keys": [...]}``) or TOML (``[[keys]]``),
    each key ``{"name", "key", "models"}``."""
    from smg.config import ConfigError, read_config_file

    loaded = read_config_file(path, "API keys file")
    keys = loaded.get("keys") if isinstance(loaded, dict) else loaded
    if not isinstance(keys, list):
        raise ConfigError(f"API keys file {path}: expected a list of keys (or a 'keys' list)")
    return keys


def _serve(args: argparse.Namespace) -> int:
    import logging

    from smg.asgi import create_app
    from smg.gateway import Gateway
    from smg.http_server import HttpServer
    from smg.supervisor import READY_LINE, die_with_supervisor, reuse_port_socket, worker_count

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not (args.demo or args.worker or args.prefill or args.config or args.worker_file or args.worker_dns
            or args.worker_pods):
        print("error: give --worker grpc://HOST:PORT (repeatable), --prefill and --decode workers, --worker-file, "
              "--worker-dns, --config FILE, or --demo", file=sys.stderr)
        return 2
    try:
        args.workers_count = worker_count(args.workers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = _serve_config(args)
    if config.access_log:  # its lines alone, whatever --log-level says of the rest
        access = logging.getLogger("smg.access")
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False

    if args.workers_count > 1 and not args.worker_process:
        return _supervise(args, config)
    if args.worker_process:
        die_with_supervisor()

    async def main() -> None:
        nonlocal config
        engine_server = None
        if args.demo_engine:  # a worker process of --workers N --demo: the supervisor runs the engine
            config = _demo_config(config, args.demo_engine)
        elif args.demo:
            engine_server, url = await _start_demo_engine(args, config)
            config = _demo_config(config, url)
        gateway = Gateway(config=config)
        app = create_app(gateway)
        # a worker process of --workers N listens beside its siblings on the port (smg.supervisor)
        sock = reuse_port_socket(config.host, config.port) if args.worker_process else None
        if config.server == "uvicorn":
            import uvicorn

            server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                                   loop="none", http="httptools", lifespan="on", access_log=False,
                                                   timeout_keep_alive=config.keep_alive,
                                                   limit_concurrency=config.max_connections))
            serving = server.serve(sockets=[sock] if sock is not None else None)
        else:
            server = HttpServer(app, config.host, config.port, keep_alive=config.keep_alive,
                                head_timeout=config.request_head_timeout, body_timeout=config.request_body_timeout,
                                max_connections=config.max_connections, sock=sock,
                                write_timeout=config.response_write_timeout)
            serving = server.serve()
        _tune_gc()
        workers = [w for m in config.model_configs() for w in m.workers]

        async def announce() -> None:  # once it listens (a supervisor waits for this line)
            if isinstance(server, HttpServer):
                await server.listening.wait()
            else:
                while not server.started:
                    await asyncio.sleep(0.02)
            print(f"{READY_LINE} an OpenAI-compatible API on http://{config.host}:{config.port}/v1 "
                  f"(workers: {', '.join(workers)})", flush=True)

        announcing = asyncio.ensure_future(announce())
        try:
            await serving
        finally:
            announcing.cancel()
            if engine_server is not None:
                await engine_server.stop()

    _run_loop(main())
    return 0


def _run_loop(main) -> None:
    try:
        import uvloop

        uvloop.run(main)
    except ImportError:
        asyncio.run(main)


async def _start_demo_engine(args: argparse.Namespace, config):
    """The demo's reference engine, in this process: (its server, its URL)."""
    from smg.engine import ReferenceEngine
    from smg.tokenizer import Tokenizer
    from smg.tokenizer.bundled import resolve_tokenizer

    directory = resolve_tokenizer(config.tokenizer or "llama3.2")
    engine = ReferenceEngine(Tokenizer.load(directory), delay_ms=args.demo_delay_ms,
                             model_id=config.model or "smg-demo", tokenizer_dir=directory)
    engine_server = engine.server()
    port = await engine_server.start("127.0.0.1", 0)
    return engine_server, f"grpc://127.0.0.1:{port}"


def _demo_config(config, url: str):
    from smg.config import replace
    from smg.tokenizer.bundled import resolve_tokenizer

    return replace(config, workers=[*config.workers, url], chat_template=config.chat_template or "llama3",
                   tokenizer=str(resolve_tokenizer(config.tokenizer or "llama3.2")))


def _supervise(args: argparse.Namespace, config) -> int:
    """``--workers N``: this process supervises N worker processes (smg.supervisor)."""
    from smg.supervisor import Supervisor

    worker_args = _without_workers_flag(args.argv)

    async def main() -> None:
        engine_server = None
        if args.demo:  # one engine for every worker process
            engine_server, url = await _start_demo_engine(args, config)
            worker_args.extend(["--demo-engine", url])
        try:
            await Supervisor(worker_args, args.workers_count, config.host, config.port).run()
        finally:
            if engine_server is not None:
                await engine_server.stop()

    _run_loop(main())
    return 0


def _without_workers_flag(argv: list[str]) -> list[str]:
    """``smg serve``'s arguments less ``serve`` and ``--workers N``."""
    out, skip = [], False
    for arg in argv[argv.index("serve") + 1:]:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m smg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tok = sub.add_parser("tokenize", help="encode text (or a one-turn chat) and print the token ids as JSON")
    tok.add_argument("--tokenizer", required=True,
                     help="tokenizer.json, a directory holding it, or a bundled name (llama3.2, deepseek)")
    tok.add_argument("--chat", action="store_true", help="render TEXT as a user turn with the chat template first")
    tok.add_argument("--chat-template", default=None,
                     help="template string, file, or bundled name (llama3, chatml_qwen3, deepseek_v3)")
    tok.add_argument("--system", default=None, help="system message for --chat")
    tok.add_argument("--add-special-tokens", action="store_true", help="let the post-processor add BOS/EOS")
    tok.add_argument("--show-text", action="store_true", help="also print the rendered text and the tokens")
    tok.add_argument("text", help="the text, or - for standard input")
    tok.set_defaults(run=_tokenize)
    eng = sub.add_parser("engine", help="run the reference CPU engine as a gRPC worker (SGLang and vLLM services)")
    eng.add_argument("--reference", action="store_true", help="serve the reference CPU engine")
    eng.add_argument("--host", default="127.0.0.1")
    eng.add_argument("--port", type=int, default=50051)
    eng.add_argument("--tokenizer", default="llama3.2", help="tokenizer dir/file or bundled name (default llama3.2)")
    eng.add_argument("--mode", default="text", choices=["text", "echo", "script"])
    eng.add_argument("--script", action="append", default=[], help="text file to replay in script mode (repeatable)")
    eng.add_argument("--script-by-turn", action="store_true",
                     help="pick the script by the tool results already in the prompt: the first --script before "
                          "any, the second after one, ..., the last from then on (a model that calls a tool, "
                          "then answers)")
    eng.add_argument("--delay-ms", type=float, default=0.0, help="per-step delay")
    eng.add_argument("--tokens-per-chunk", type=int, default=1)
    eng.add_argument("--seed", type=int, default=0)
    eng.add_argument("--model-id", default="smg-reference")
    eng.add_argument("--prefix-cache-tokens", type=int, default=0,
                     help="simulate an LRU prefix (KV) cache of this many tokens (default: none)")
    eng.add_argument("--prefill-us-per-token", type=float, default=0.0,
                     help="simulated prefill time per uncached prompt token, in microseconds")
    eng.add_argument("--disaggregation-mode", choices=["prefill", "decode"], default=None,
                     help="serve one half of prefill/decode disaggregated requests (SGLang's protocol)")
    eng.add_argument("--bootstrap-port", type=int, default=8998,
                     help="a prefill engine's KV handover (bootstrap) port (default 8998)")
    eng.set_defaults(run=_engine)
    srv = sub.add_parser("serve", help="serve an OpenAI-compatible API in front of engine workers")
    srv.add_argument("--config", default=None,
                     help="a TOML (.toml) or JSON file naming the models and settings (see README); the "
                          "single-model flags below are a shorthand for a one-model config")
    srv.add_argument("--worker", action="append", default=[], help="engine worker grpc://HOST:PORT (repeatable)")
    srv.add_argument("--worker-file", action="append", default=[], metavar="PATH",
                     help="workers listed in a JSON or TOML file, read again when it changes: added when listed "
                          "(probed first), drained when gone (repeatable; see docs/serving.md)")
    srv.add_argument("--worker-dns", action="append", default=[], metavar="NAME:PORT",
                     help="workers at every address NAME resolves to (a Kubernetes headless service), resolved "
                          "every 10 s (repeatable)")
    srv.add_argument("--worker-pods", action="append", default=[], metavar="NAMESPACE/SELECTOR",
                     help="workers in the Kubernetes pods a label selector picks (e.g. serving/app=sglang), "
                          "watched through the API with the pod's service account; each pod's port from its "
                          "smg.ai/port annotation (repeatable)")
    srv.add_argument("--prefill", action="append", default=[],
                     help="prefill worker grpc://HOST:PORT of disaggregated serving (repeatable; with --decode)")
    srv.add_argument("--decode", action="append", default=[],
                     help="decode worker grpc://HOST:PORT of disaggregated serving (repeatable; with --prefill)")
    srv.add_argument("--bootstrap-port", type=int, default=None,
                     help="the prefill engines' KV handover (bootstrap) port (default 8998)")
    srv.add_argument("--demo", action="store_true",
                     help="start the reference CPU engine in-process with the bundled Llama 3.2 tokenizer")
    srv.add_argument("--demo-delay-ms", type=float, default=0.0, help="per-token delay of the demo engine")
    srv.add_argument("--tokenizer", default=None,
                     help="tokenizer dir/file or bundled name; default: the path the engine reports")
    srv.add_argument("--model", default=None, help="served model name (default: the engine's)")
    srv.add_argument("--engine", default=None, choices=["sglang", "vllm", "trtllm"], help="default sglang")
    srv.add_argument("--policy", default=None, choices=list(POLICIES),
                     help="routing across a model's workers (default cache_aware; see smg.policies)")
    srv.add_argument("--reasoning-parser", default=None)
    srv.add_argument("--tool-parser", default=None)
    srv.add_argument("--chat-template", default=None, help="template file or bundled name (llama3, chatml_qwen3, deepseek_v3)")
    srv.add_argument("--lora-adapter", action="append", default=[],
                     help="a LoRA adapter the workers serve, requested as MODEL:ADAPTER (repeatable)")
    srv.add_argument("--trust-request-chat-template", action="store_true",
                     help="let requests bring their own chat_template (a template, never a file path)")
    srv.add_argument("--image-processor", default=None, choices=MULTIMODAL_FAMILIES,
                     help="take image inputs, preprocessed as this model family's processor does (its "
                          "preprocessor_config.json from the tokenizer directory)")
    srv.add_argument("--allow-url-host", action="append", default=[], metavar="HOST_OR_CIDR",
                     help="fetch image URLs and connect to requests' MCP server_urls on this host or network "
                          "although it is private, loopback or link-local (refused by default against SSRF; "
                          "repeatable)")
    srv.add_argument("--allowed-media-dir", action="append", default=[], metavar="DIR",
                     help="allow file:// image URLs inside this directory (repeatable; none by default)")
    srv.add_argument("--pin-image-threads", action="store_true",
                     help="bind each image-preprocessing thread to its own CPU (Linux): steadier two-thread "
                          "speed-ups on virtual machines; leave off where other processes keep CPUs busy "
                          "(config: media.pin_threads)")
    srv.add_argument("--storage", default=None, metavar="URL",
                     help="where stored responses and conversations live: memory, sqlite:///FILE (relative; "
                          "sqlite:////FILE absolute) or postgresql://USER@HOST:PORT/DB (default: the config "
                          f"file's, else {DEFAULT_STORAGE}, in the working directory)")
    srv.add_argument("--api-key", action="append", default=[], metavar="KEY",
                     help="a key clients must send (Authorization: Bearer KEY or x-api-key: KEY); repeatable. "
                          "With any key set, every route but /health and /readiness needs one")
    srv.add_argument("--api-keys-file", default=None, metavar="FILE",
                     help="API keys with names and the models each may use: JSON or TOML, a list of "
                          "{name, key, models}")
    srv.add_argument("--access-log", action="store_true",
                     help="log a JSON line per request to stderr (id, method, path, status, key name, model, "
                          "tokens, time to first token, duration; never keys or content)")
    srv.add_argument("--tracing", action="store_true",
                     help="OpenTelemetry: a span per request with its stages, the trace passed to the engines; "
                          "exported over OTLP/HTTP as the OTEL_* variables say (the [tracing] extra)")
    srv.add_argument("--admin-key", default=None, metavar="KEY",
                     help="open the admin API (/admin/models ...: add and remove models and workers, drain a "
                          "worker, their health) to requests carrying this key (default: it is off)")
    srv.add_argument("--max-concurrent-requests", type=int, default=None, metavar="N",
                     help="generation requests served at once; more wait in the queue (default: no limit)")
    srv.add_argument("--max-queue-size", type=int, default=None, metavar="N",
                     help="requests waiting for a slot at most; beyond, a 429 with Retry-After (default 128)")
    srv.add_argument("--queue-timeout", type=float, default=None, metavar="SECONDS",
                     help="seconds a request waits for a slot before a 429 (default 30)")
    srv.add_argument("--mcp-server", action="append", default=[], metavar="LABEL=URL",
                     help="an MCP server requests name by server_label alone: streamable HTTP, or SSE when the "
                          "URL's path ends in /sse (repeatable; stdio servers: the config key mcp_servers)")
    srv.add_argument("--mcp-call-timeout", type=float, default=None, metavar="SECONDS",
                     help="seconds one MCP tool call may take; then the model gets a tool error (default 60)")
    srv.add_argument("--mcp-max-calls", type=int, default=None, metavar="N",
                     help="MCP tool calls one response may make; then it ends incomplete (default 16)")
    srv.add_argument("--workers", default="1", metavar="N",
                     help="worker processes serving the port, each with its own event loop, engine connections "
                          "and caches; auto: one per core (default 1). /metrics and the admission and rate "
                          "limits are the whole server's")
    srv.add_argument("--worker-process", action="store_true", help=argparse.SUPPRESS)  # (smg.supervisor's)
    srv.add_argument("--demo-engine", default=None, help=argparse.SUPPRESS)  # (--demo's engine, in the supervisor)
    srv.add_argument("--host", default=None, help="default 127.0.0.1")
    srv.add_argument("--port", type=int, default=None, help="default 8000")
    srv.add_argument("--server", default=None, choices=["smg", "uvicorn"],
                     help="HTTP server: smg's own HTTP/1.1 server (default, less CPU per streamed token) or "
                          "uvicorn running the same ASGI app")
    srv.add_argument("--log-level", default="warning")
    srv.add_argument("--keep-alive", type=float, default=None,
                     help="seconds an idle client connection is kept open (default 75, longer than "
                          "clients' pools keep idle connections, so a client never reuses one the "
                          "server is closing)")
    srv.add_argument("--request-head-timeout", type=float, default=None,
                     help="seconds a request head may take to arrive, from its first byte (default 30)")
    srv.add_argument("--request-body-timeout", type=float, default=None,
                     help="seconds a request body may take to arrive, from the end of its head (default 60)")
    srv.add_argument("--response-write-timeout", type=float, default=None, metavar="SECONDS",
                     help="a client that reads none of its stream for this long is closed and its engine "
                          "request aborted (default 60; smg's server)")
    srv.add_argument("--max-connections", type=int, default=None,
                     help="open client connections at most; beyond, new ones are closed at once (default 10000)")
    srv.add_argument("--first-token-timeout", type=float, default=None, metavar="SECONDS",
                     help="a streamed engine request that waits longer for its first token ends; the worker is "
                          "out of rotation until a health probe passes, and a request with nothing sent yet is "
                          "retried on another worker (default: no limit)")
    srv.add_argument("--inter-token-timeout", type=float, default=None, metavar="SECONDS",
                     help="the same, for the wait between two tokens (default: no limit)")
    srv.add_argument("--health-interval", type=float, default=None, metavar="SECONDS",
                     help="seconds between health probes of each worker (default 5)")
    srv.add_argument("--engine-read-interval-ms", type=float, default=None,
                     help="read an engine connection whose tokens come faster than every 2 intervals at "
                          "most once an interval, so that one read brings many tokens (default 1; 0 "
                          "reads whenever data arrives: the lowest latency at more CPU per token)")
    srv.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return args.run(args)
    except SmgError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
