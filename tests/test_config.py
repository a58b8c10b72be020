"""Configuration in one place: records validated on construction and on load (TOML or JSON), the
pool's own policy and engine kept, and `smg serve --config` checked before anything starts."""
import json
import subprocess
import sys
import time

import pytest

from smg import Gateway, GatewayConfig, ModelConfig, PoolConfig
from smg.config import ConfigError

pytestmark = pytest.mark.no_kernels  # (the twins' pass leaves it out)

TOML = '''
port = 9001
trust_request_chat_template = true
[pool]
policy = "least_load"
health_interval = 1.5
[[models]]
name = "a"
aliases = ["a1"]
workers = ["grpc://127.0.0.1:1"]
tokenizer = "llama3.2"
lora_adapters = ["x"]
[[models]]
name = "b"
engine = "vllm"
policy = "random"
context_length = 4096
'''


def test_toml_and_json_with_the_same_keys_load_the_same(tmp_path):
    try:
        import tomllib
    except ImportError:  # Python 3.10: what smg reads TOML with there
        import tomli as tomllib

    (tmp_path / "g.toml").write_text(TOML)
    (tmp_path / "g.json").write_text(json.dumps(tomllib.loads(TOML)))
    a, b = GatewayConfig.load(tmp_path / "g.toml"), GatewayConfig.load(tmp_path / "g.json")
    assert a == b and a.port == 9001 and a.pool.policy == "least_load" and a.pool.health_interval == 1.5
    assert [m.name for m in a.model_configs()] == ["a", "b"] and a.models[1].context_length == 4096


@pytest.mark.parametrize("values,fragment", [
    ({"models": [{"name": "a", "policy": "fastest"}]}, "unknown policy 'fastest'"),
    ({"models": [{"name": "a", "wrokers": []}]}, "unknown field `wrokers` - at `$.models[0]`"),
    ({"models": [{"name": "a", "engine": "tgi"}]}, "unknown engine 'tgi'"),
    ({"models": [{"name": "a", "context_length": 0}]}, "context_length"),
    ({"models": [{"name": "a"}, {"name": "b", "aliases": ["a"]}]}, "'a' is given twice"),
    ({"models": [{"name": "a:b"}]}, "no ':'"),
    ({"models": [{"name": "a", "engine": "vllm", "lora_adapters": ["x"]}]}, "LoRA"),
    ({"models": [{"name": "a"}], "workers": ["grpc://h:1"]}, "not both"),
    ({"port": "8000"}, "Expected `int`, got `str` - at `$.port`"),
    ({"port": 70000}, "port"),
    ({"server": "gunicorn"}, "server"),
    ({"pool": {"read_interval": 5}}, "read_interval"),
    ({"pool": {"max_attempts": 0}}, "max_attempts"),
    ({"cache": {"l0_max_bytes": -1}}, "l0_max_bytes"),
    ({"request_head_timeout": 0}, "request_head_timeout"),
])
def test_a_bad_key_or_value_is_an_error_naming_it(values, fragment):
    with pytest.raises(ConfigError) as info:
        GatewayConfig.load(values)
    assert fragment in str(info.value)


def test_the_pools_own_policy_and_engine_are_kept_unless_named():
    """Gateway(pool_config=PoolConfig(policy=...)) and {"pool": {"policy": ...}} were replaced by
    the Gateway's default policy (and the engine by sglang)."""
    def pool_of(gw):
        return gw.default_model.pool

    kept = Gateway(["grpc://127.0.0.1:1"], pool_config=PoolConfig(policy="least_load", default_engine="vllm"))
    assert (pool_of(kept).policy.name, pool_of(kept).config.default_engine) == ("least_load", "vllm")
    loaded = Gateway.from_config({"workers": ["grpc://127.0.0.1:1"], "pool": {"policy": "power_of_two"}})
    assert pool_of(loaded).policy.name == "power_of_two"
    named = Gateway(["grpc://127.0.0.1:1"], policy="random", engine="trtllm",
                    pool_config=PoolConfig(policy="least_load"))
    assert (pool_of(named).policy.name, pool_of(named).config.default_engine) == ("random", "trtllm")
    assert pool_of(Gateway(["grpc://127.0.0.1:1"])).policy.name == "cache_aware"  # the default, as in Rust
    per_model = Gateway(models=[ModelConfig(name="m", policy="random")], pool_config=PoolConfig(policy="least_load"))
    assert pool_of(per_model).policy.name == "random"


def _smg(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "smg", *args], capture_output=True, text=True, timeout=timeout)


def test_serve_checks_its_config_before_starting_anything(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[models]]\nname = "a"\nworkers = ["grpc://127.0.0.1:1"]\npolicy = "fastest"\n')
    started = time.monotonic()
    out = _smg("serve", "--config", str(bad))
    assert out.returncode == 2 and "unknown policy 'fastest'" in out.stderr and "$.models[0]" in out.stderr
    assert "Traceback" not in out.stderr and time.monotonic() - started < 30
    broken = tmp_path / "broken.toml"
    broken.write_text("[[models]\n")
    out = _smg("serve", "--config", str(broken))
    assert out.returncode == 2 and "cannot read gateway config" in out.stderr
    out = _smg("serve", "--config", str(bad), "--worker", "grpc://127.0.0.1:1")
    assert out.returncode == 2 and "--worker" in out.stderr


def test_serve_flags_and_a_config_file_make_one_config(tmp_path):
    from smg.__main__ import _serve_config, build_parser

    def config(*argv):
        return _serve_config(build_parser().parse_args(["serve", *argv]))

    flags = config("--worker", "grpc://127.0.0.1:1", "--request-head-timeout", "5", "--max-connections", "10",
                   "--lora-adapter", "sql", "--policy", "least_load", "--engine-read-interval-ms", "0")
    assert (flags.request_head_timeout, flags.max_connections, flags.pool.read_interval) == (5.0, 10, 0.0)
    assert flags.model_configs()[0].lora_adapters == ["sql"] and flags.model_configs()[0].policy == "least_load"
    (tmp_path / "g.toml").write_text(TOML)
    overridden = config("--config", str(tmp_path / "g.toml"), "--port", "9100", "--engine-read-interval-ms", "2")
    assert overridden.port == 9100 and overridden.pool.read_interval == 0.002
    assert overridden.pool.policy == "least_load" and overridden.trust_request_chat_template  # the file's, kept


def test_the_readme_fleet_config_loads(tmp_path):
    """README's example config is a valid config (it must stay true)."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "fleet.toml"
    path.write_text(block, encoding="utf-8")
    config = GatewayConfig.load(path)
    names = [m.name for m in config.model_configs()]
    assert names == ["llama", "deepseek", "qwen-pd"]
    assert config.pool.policy == "cache_aware" and config.pool.routing.cache_threshold == 0.5
    assert config.model_configs()[2].decode_policy == "least_load"
