import json
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.no_kernels  # (the twins' pass leaves it out)


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "smg", *args], capture_output=True, text=True, input=stdin)


def test_tokenize_chat_with_bundled_tokenizer(llama):
    out = run("tokenize", "--tokenizer", "llama3.2", "--chat", "--chat-template", "llama3", "--show-text", "Hello")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["text"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert result["ids"] == llama.encode(result["text"]) and result["num_tokens"] == len(result["ids"])
    assert result["ids"][0] == 128000 and result["tokens"][0] == "<|begin_of_text|>"


def test_tokenize_stdin_and_special_tokens(llama_dir, llama):
    out = run("tokenize", "--tokenizer", str(llama_dir / "tokenizer.json"), "--add-special-tokens", "-",
              stdin="plain text")
    assert json.loads(out.stdout)["ids"] == llama.encode("plain text", add_special_tokens=True)


def test_errors_exit_2_with_message(tmp_path):
    out = run("tokenize", "--tokenizer", str(tmp_path / "nope"), "x")
    assert out.returncode == 2 and "error: no tokenizer" in out.stderr and "Traceback" not in out.stderr
    out = run("tokenize", "--tokenizer", "llama3.2", "--chat", "x")
    assert out.returncode == 2 and "no chat template" in out.stderr


def test_plain_script_example_runs():
    import pathlib

    script = pathlib.Path(__file__).parent.parent / "examples" / "plain_script.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "reply:" in out.stdout and "usage: Usage(prompt_tokens=" in out.stdout


def test_engine_cli_requires_reference():
    out = run("engine")
    assert out.returncode == 2 and "--reference" in out.stderr


def test_engine_cli_refuses_a_negative_simulated_cache():
    out = run("engine", "--reference", "--prefill-us-per-token", "-1")
    assert out.returncode == 2 and "must not be negative" in out.stderr


def test_serve_cli_requires_workers_or_demo():
    out = run("serve")
    assert out.returncode == 2 and "--demo" in out.stderr


def test_serve_engine_read_interval_is_checked_before_anything_starts():
    from smg.__main__ import _serve_config, build_parser

    assert _serve_config(build_parser().parse_args(["serve", "--demo"])).pool.read_interval == 0.001
    out = run("serve", "--demo", "--engine-read-interval-ms", "5000")
    assert out.returncode == 2 and "read_interval" in out.stderr


def _get_health(sock):
    """One GET /health on ``sock``, read to the end of its body (the connection stays usable)."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(4096)
    return head


@pytest.mark.parametrize("server", ["smg", "uvicorn"])
def test_serve_keeps_idle_connections_open_longer_than_client_pools_and_stops_cleanly(server):
    """uvicorn closes idle connections after 5 s, so a client pool reusing one after that races the
    close (seen as 'cannot write request body' under load): smg serve keeps them 75 s, --keep-alive N.
    SIGTERM stops either server without an error."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "smg", "serve", "--demo", "--port", str(port), "--keep-alive", "0.5",
                             "--server", server], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:  # until the server answers (a cold start may take seconds)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as probe:
                    if b" 200 " in _get_health(probe):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "smg serve did not start"
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            assert b" 200 " in _get_health(sock)
            time.sleep(1.5)  # idle past --keep-alive: the server closes the connection
            assert sock.recv(1) == b""
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
    # uvicorn re-raises the signal once it has shut down gracefully
    assert proc.returncode == (0 if server == "smg" else -signal.SIGTERM) and "Traceback" not in output, output
    from smg.__main__ import _serve_config, build_parser

    assert _serve_config(build_parser().parse_args(["serve", "--demo"])).keep_alive == 75.0


def test_serving_process_collector_settings():
    """smg serve freezes what it loaded and collects young objects less often (a per-token
    cost otherwise); in a fresh interpreter, as the setting is process-wide."""
    code = ("import gc; from smg.__main__ import GC_GEN0_THRESHOLD, _tune_gc; _tune_gc(); "
            "assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD > 700 and gc.get_freeze_count() > 0; print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"


def test_request_chat_templates_are_off_unless_serve_is_told():
    from smg.__main__ import build_parser

    assert build_parser().parse_args(["serve", "--demo"]).trust_request_chat_template is False
    assert build_parser().parse_args(["serve", "--demo", "--trust-request-chat-template"]).trust_request_chat_template


def test_serve_storage_defaults_to_a_sqlite_file_and_takes_a_url(tmp_path):
    from smg.__main__ import _serve_config, build_parser

    assert _serve_config(build_parser().parse_args(["serve", "--demo"])).storage.url == "sqlite:///smg.sqlite3"
    url = "postgresql://smg@127.0.0.1:5432/smg"
    assert _serve_config(build_parser().parse_args(["serve", "--demo", "--storage", url])).storage.url == url
    config = tmp_path / "gw.toml"
    config.write_text('workers = ["grpc://127.0.0.1:1"]\n[storage]\nurl = "memory"\npool_size = 3\n')
    from_file = _serve_config(build_parser().parse_args(["serve", "--config", str(config)]))
    assert from_file.storage.url == "memory" and from_file.storage.pool_size == 3
    assert _serve_config(build_parser().parse_args(["serve", "--config", str(config), "--storage",
                                                    url])).storage.url == url


def test_serve_mcp_flags_add_servers_to_the_config_files_and_set_the_loop_limits(tmp_path):
    from smg.__main__ import _serve_config, build_parser
    from smg.config import ConfigError

    def config(*flags):
        return _serve_config(build_parser().parse_args(["serve", *flags]))

    default = config("--demo")
    assert default.mcp_servers == [] and default.mcp.call_timeout == 60 and default.mcp.max_calls == 16
    flagged = config("--demo", "--mcp-server", "docs=http://127.0.0.1:9000/mcp", "--mcp-server",
                     "feed=https://example.com/sse", "--mcp-call-timeout", "2.5", "--mcp-max-calls", "3",
                     "--allow-url-host", "10.0.0.0/8")
    assert [(s.label, s.url) for s in flagged.mcp_servers] == [("docs", "http://127.0.0.1:9000/mcp"),
                                                               ("feed", "https://example.com/sse")]
    assert flagged.mcp.call_timeout == 2.5 and flagged.mcp.max_calls == 3 and flagged.url_allow_list == ["10.0.0.0/8"]
    file = tmp_path / "gw.toml"
    file.write_text('workers = ["grpc://127.0.0.1:1"]\n[[mcp_servers]]\nlabel = "local"\ncommand = "python"\n'
                    'args = ["server.py"]\n[mcp]\nmax_calls = 5\n')
    merged = config("--config", str(file), "--mcp-server", "docs=http://127.0.0.1:9000/mcp", "--mcp-call-timeout", "9")
    assert [s.label for s in merged.mcp_servers] == ["local", "docs"] and merged.mcp_servers[0].args == ["server.py"]
    assert merged.mcp.max_calls == 5 and merged.mcp.call_timeout == 9
    assert not default.media.pin_threads and config("--demo", "--pin-image-threads").media.pin_threads
    for bad in (["--mcp-server", "nolabel"], ["--mcp-server", "x=ftp://h/mcp"], ["--mcp-max-calls", "0"],
                ["--mcp-server", "a=http://h/mcp", "--mcp-server", "a=http://g/mcp"]):
        with pytest.raises(ConfigError):
            config("--demo", *bad)


def test_serve_api_keys_from_flags_and_a_file(tmp_path):
    from smg.__main__ import _serve_config, build_parser
    from smg.config import ConfigError

    def config(*flags):
        return _serve_config(build_parser().parse_args(["serve", "--demo", *flags]))

    assert config().api_keys == []
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text('[[keys]]\nname = "team-a"\nkey = "sk-a"\nmodels = ["llama"]\n')
    keys = config("--api-key", "sk-1", "--api-key", "sk-2", "--api-keys-file", str(keys_file)).api_keys
    assert [(k.name, k.key, k.models) for k in keys] == [("team-a", "sk-a", ["llama"]), ("key-1", "sk-1", []),
                                                         ("key-2", "sk-2", [])]
    json_file = tmp_path / "keys.json"
    json_file.write_text('[{"name": "ops", "key": "sk-ops"}]')
    assert [k.name for k in config("--api-keys-file", str(json_file)).api_keys] == ["ops"]
    for bad in (["--api-key", "sk-1", "--api-key", "sk-1"], ["--api-key", "has space"],
                ["--api-keys-file", str(tmp_path / "missing.json")]):
        with pytest.raises(ConfigError):
            config(*bad)
    json_file.write_text('{"keys": 3}')
    with pytest.raises(ConfigError, match="list of keys"):
        config("--api-keys-file", str(json_file))


def test_serve_access_log_and_admin_key_flags():
    from smg.__main__ import _serve_config, build_parser

    default = _serve_config(build_parser().parse_args(["serve", "--demo"]))
    assert default.access_log is False and default.admin_key is None
    set_ = _serve_config(build_parser().parse_args(["serve", "--demo", "--access-log", "--admin-key", "adm-1"]))
    assert set_.access_log is True and set_.admin_key == "adm-1"


def test_serve_admission_flags():
    from smg.__main__ import _serve_config, build_parser
    from smg.config import ConfigError

    default = _serve_config(build_parser().parse_args(["serve", "--demo"]))
    assert default.max_concurrent_requests is None and default.max_queue_size == 128 and default.queue_timeout == 30
    set_ = _serve_config(build_parser().parse_args(["serve", "--demo", "--max-concurrent-requests", "8",
                                                    "--max-queue-size", "0", "--queue-timeout", "2.5"]))
    assert (set_.max_concurrent_requests, set_.max_queue_size, set_.queue_timeout) == (8, 0, 2.5)
    for bad in (["--max-concurrent-requests", "0"], ["--max-queue-size", "-1"], ["--queue-timeout", "0"]):
        with pytest.raises(ConfigError):
            _serve_config(build_parser().parse_args(["serve", "--demo", *bad]))


def test_engine_cli_script_by_turn_needs_scripts():
    out = run("engine", "--reference", "--script-by-turn")
    assert out.returncode == 2 and "--script-by-turn needs" in out.stderr
