"""API keys (smg.auth): the official ``openai`` and ``anthropic`` SDKs against smg's HTTP server in
front of the reference engine serving two models, with keys for all models and for one."""
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

KEYS = [{"name": "ops", "key": "sk-ops-1"}, {"name": "team-a", "key": "sk-team-a", "models": ["alpha-alias"]}]


@pytest.fixture(scope="module")
def base():
    """The base URL of a gateway with API keys serving models ``alpha`` (alias ``alpha-alias``) and ``beta``."""
    stack = Stack("smg")  # (keys are checked in App.respond, which both servers share)
    directory = bundled_tokenizer_dir("llama3.2")

    async def start():
        models = []
        for name in ("alpha", "beta"):
            engine = ReferenceEngine(Tokenizer.from_dir(directory), model_id=name, tokenizer_dir=directory)
            _, port = await stack.start_engine(engine)
            models.append({"name": name, "aliases": [f"{name}-alias"], "workers": [f"grpc://127.0.0.1:{port}"],
                           "chat_template": str(template_path("llama3"))})
        return await stack.start_web(Gateway(config=GatewayConfig.load({"models": models, "api_keys": KEYS})))

    port = stack.call(start())
    yield f"http://127.0.0.1:{port}"
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
