"""API keys (smg.auth): the official ``openai`` and ``anthropic`` SDKs against smg's HTTP server in
front of the reference engine serving two models, with keys for all models and for one."""
import time

import anthropic
import httpx
import openai
import pytest

from smg.config import GatewayConfig
from smg.engine import ReferenceEngine
from smg.gateway import Gateway
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path
from test_gateway_e2e import Stack

pytestmark = pytest.mark.end_to_end

KEYS = [{"name": "ops", "key": "sk-ops-1"}, {"name": "team-a", "key": "sk-team-a", "models": ["alpha-alias"]},
        {"name": "metered", "key": "sk-metered", "requests_per_minute": 2},
        {"name": "thrifty", "key": "sk-thrifty", "tokens_per_minute": 30}]


def serve_two_models(stack: Stack, **config) -> str:
    """A gateway with ``config`` serving models ``alpha`` and ``beta`` (aliases ``alpha-alias``,
    ``beta-alias``), each on its reference engine; its base URL."""
    directory = bundled_tokenizer_dir("llama3.2")

    async def start():
        models = []
        for name in ("alpha", "beta"):
            engine = ReferenceEngine(Tokenizer.from_dir(directory), model_id=name, tokenizer_dir=directory)
            _, port = await stack.start_engine(engine)
            models.append({"name": name, "aliases": [f"{name}-alias"], "workers": [f"grpc://127.0.0.1:{port}"],
                           "chat_template": str(template_path("llama3"))})
        return await stack.start_web(Gateway(config=GatewayConfig.load({"models": models, **config})))

    return f"http://127.0.0.1:{stack.call(start())}"


@pytest.fixture(scope="module")
def base():
    """API keys (keys are checked in App.respond, which both HTTP servers share: smg's here)."""
    stack = Stack("smg")
    yield serve_two_models(stack, api_keys=KEYS)
    stack.close()


def clients(base, key):
    return (openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0),
            anthropic.Anthropic(base_url=base, api_key=key, max_retries=0))


def test_a_known_key_in_either_header_is_served(base):
    oa, an = clients(base, "sk-ops-1")
    chat = oa.chat.completions.create(model="beta", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert chat.choices[0].message.content
    message = an.messages.create(model="alpha", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert message.content[0].text
    assert [m.id for m in oa.models.list().data][:1] == ["alpha"]
    stream = oa.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                        stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_a_missing_or_unknown_key_is_a_401_in_each_apis_shape(base):
    oa, an = clients(base, "sk-wrong")
    with pytest.raises(openai.AuthenticationError) as refused:
        oa.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.body["code"] == "invalid_api_key" and "sk-wrong" not in refused.value.message
    with pytest.raises(openai.AuthenticationError):  # a stream is refused before it starts
        oa.responses.create(model="alpha", input="Hi", stream=True)
    with pytest.raises(anthropic.AuthenticationError) as refused_an:
        an.messages.create(model="alpha", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert refused_an.value.body["error"]["type"] == "authentication_error"
    missing = httpx.post(base + "/v1/chat/completions",
                         json={"model": "alpha", "messages": [{"role": "user", "content": "Hi"}]})
    assert missing.status_code == 401 and "no API key" in missing.json()["error"]["message"]
    basic = httpx.post(base + "/v1/messages", headers={"authorization": "Basic sk-ops-1"},
                       json={"model": "alpha", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    assert basic.status_code == 401 and basic.json()["type"] == "error"  # only Bearer carries a key


def test_per_key_rate_limits_are_429s_with_retry_after(base):
    def chat(key, model="alpha"):
        return httpx.post(base + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                          json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})

    assert [chat("sk-metered").status_code for _ in range(2)] == [200, 200]
    over = chat("sk-metered")
    assert over.status_code == 429 and "requests per minute" in over.json()["error"]["message"]
    assert 25 <= int(over.headers["retry-after"]) <= 30  # one request refills in 60 / 2 s
    assert chat("sk-ops-1").status_code == 200  # other keys are not limited by it
    # ~36 prompt + 2 output tokens: the first request takes the bucket into debt, the next waits
    assert chat("sk-thrifty").status_code == 200
    debt = chat("sk-thrifty")
    assert debt.status_code == 429 and "tokens per minute" in debt.json()["error"]["message"]
    assert int(debt.headers["retry-after"]) >= 1
    an = anthropic.Anthropic(base_url=base, api_key="sk-metered", max_retries=0)
    with pytest.raises(anthropic.RateLimitError):
        an.messages.create(model="alpha", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])


def test_probes_need_no_key_and_metrics_do(base):
    assert httpx.get(base + "/health").status_code == 200
    assert httpx.get(base + "/readiness").status_code == 200
    assert httpx.get(base + "/metrics").status_code == 401
    assert httpx.get(base + "/metrics", headers={"x-api-key": "sk-ops-1"}).status_code == 200
    assert httpx.get(base + "/v1/models").status_code == 401


def test_a_key_limited_to_some_models_gets_a_403_for_the_others(base):
    oa, an = clients(base, "sk-team-a")
    # its list names an alias: the model is allowed by any of its names
    for model in ("alpha", "alpha-alias", ""):  # "" is the default model, alpha
        done = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert done.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'beta'"):
        oa.chat.completions.create(model="beta", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        oa.responses.create(model="beta-alias", input="Hi")
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        an.messages.create(model="beta", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.body["error"]["type"] == "permission_error"
    with pytest.raises(openai.NotFoundError):  # a model nobody serves stays a 404
        oa.chat.completions.create(model="gamma", messages=[{"role": "user", "content": "Hi"}])


# ---- JWT bearer tokens ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def issuers(tmp_path_factory):
    """Two issuers' RSA keys: one published as a JWKS file, one at a URL (a local HTTP server)."""
    import http.server
    import json
    import threading

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    keys = {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("file", "url", "rogue")}

    def jwks(name):
        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys[name].public_key()))
        return json.dumps({"keys": [dict(entry, kid=f"{name}-1", use="sig", alg="RS256")]})

    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(jwks("file"))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = jwks("url").encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield keys, str(path), f"http://127.0.0.1:{server.server_port}/jwks.json"
    server.shutdown()


@pytest.fixture(scope="module")
def jwt_base(issuers):
    _, path, url = issuers
    stack = Stack("smg")
    yield serve_two_models(stack, api_keys=KEYS, jwt_issuers=[
        {"issuer": "https://idp.example", "jwks_file": path, "audience": "smg"},
        {"issuer": "https://other.example", "jwks_url": url}])
    stack.close()


def _token(keys, key, **claims):
    import time as clock

    import jwt

    kid = {"file": "file-1", "url": "url-1", "rogue": "file-1"}[key]
    body = {"iss": "https://idp.example", "aud": "smg", "sub": "svc-a", "exp": int(clock.time()) + 60, **claims}
    return jwt.encode(body, keys[key], algorithm="RS256", headers={"kid": kid})


def test_jwt_bearer_tokens_of_configured_issuers(issuers, jwt_base):
    keys = issuers[0]

    def chat(token, model="alpha"):
        return httpx.post(jwt_base + "/v1/chat/completions", headers={"authorization": f"Bearer {token}"},
                          json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})

    assert chat(_token(keys, "file")).status_code == 200
    other = _token(keys, "url", iss="https://other.example", aud=None)
    assert chat(other).status_code == 200  # its keys fetched from the URL
    assert chat("sk-ops-1").status_code == 200  # API keys still work beside tokens
    limited = _token(keys, "file", models=["beta"], priority=3)
    assert chat(limited, "beta").status_code == 200
    refused = chat(limited, "alpha")
    assert refused.status_code == 403 and "svc-a" in refused.json()["error"]["message"]
    for bad, why in ((_token(keys, "rogue"), "Signature"),  # signed by a key the issuer does not publish
                     (_token(keys, "file", exp=int(time.time()) - 120), "expired"),
                     (_token(keys, "file", aud="someone-else"), "Audience"),
                     (_token(keys, "file", iss="https://evil.example"), "issuer"),
                     (_token(keys, "file", models="beta"), "list of model names"),
                     ("a.b.c", "invalid bearer token")):
        reply = chat(bad)
        assert reply.status_code == 401 and why in reply.json()["error"]["message"], (why, reply.text)


def test_jwt_issuer_configs_are_checked(issuers):
    from smg.config import ConfigError, JwtIssuerConfig

    path = issuers[1]
    for bad, why in (({}, "jwks_file or jwks_url"), ({"jwks_file": path, "jwks_url": "http://x"}, "one of them"),
                     ({"jwks_file": path, "algorithms": ["HS256"]}, "public-key"),
                     ({"jwks_file": path, "algorithms": ["none"]}, "public-key")):
        with pytest.raises(ConfigError, match=why):
            JwtIssuerConfig(issuer="https://idp.example", **bad)
    with pytest.raises(ConfigError, match="cannot read"):
        from smg.auth import JwtIssuers

        JwtIssuers([JwtIssuerConfig(issuer="https://idp.example", jwks_file=path + ".missing")])


def test_jwt_callers_have_rate_limits_by_name_from_the_issuer_or_their_token(issuers, tmp_path):
    import asyncio

    from smg.auth import JwtIssuers
    from smg.config import JwtIssuerConfig
    from smg.errors import Overloaded, Unauthorized
    from smg.shared_state import SharedState

    keys, path, _ = issuers
    config = JwtIssuerConfig(issuer="https://idp.example", jwks_file=path, audience="smg", requests_per_minute=2)

    def admitted(jwts, token, times):
        count = 0
        for i in range(times):
            limits = asyncio.run(jwts[i % len(jwts)].caller(token)).limits
            try:
                limits.admit()
                count += 1
            except Overloaded:
                pass
        return count

    one = JwtIssuers([config])
    assert admitted([one], _token(keys, "file"), 4) == 2  # the issuer's rate, kept across requests
    assert admitted([one], _token(keys, "file", sub="svc-b"), 4) == 2  # each caller its own buckets
    assert admitted([one], _token(keys, "file", sub="svc-c", requests_per_minute=3), 5) == 3  # its token's
    with pytest.raises(Unauthorized, match="positive integer"):
        asyncio.run(one.caller(_token(keys, "file", sub="svc-d", tokens_per_minute="lots")))
    assert asyncio.run(JwtIssuers([JwtIssuerConfig(issuer="https://idp.example", jwks_file=path, audience="smg")])
                       .caller(_token(keys, "file"))).limits is None  # no rate anywhere: no limit
    # two worker processes (two states on one file): the caller's rate is the server's
    SharedState.create(str(tmp_path / "shared")).close()
    states = [SharedState(str(tmp_path / "shared")) for _ in range(2)]
    for state in states:
        state.claim()
    assert admitted([JwtIssuers([config], state) for state in states], _token(keys, "file", sub="svc-e"), 6) == 2
