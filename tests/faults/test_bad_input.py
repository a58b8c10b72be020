"""Bad input on every route of a real `smg serve` (the route table itself, so a new route is
covered): malformed JSON, wrong types, deep nesting, invalid UTF-8, a body over the limit,
10,000 tools, a million-character message. Each is a 4xx in the route's API error shape (a
large but valid request may be answered), never a 500, while a background stream of good
requests sees no failure."""
import json

import httpx
import pytest

from faults.processes import Engine, GoodTraffic, Served
from smg.api import Router
from smg.api.anthropic import ERRORS as ANTHROPIC_ERRORS
from smg.asgi import MAX_BODY

pytestmark = pytest.mark.end_to_end

ADMIN = "admin-secret"
DEEP = b"[" * 100_000 + b"]" * 100_000
MALFORMED = {
    "malformed JSON": b'{"model": "smg-reference", "messages": [',
    "wrong types": json.dumps({"model": 5, "messages": "hello", "max_tokens": "many", "stream": "yes",
                               "input": 7, "items": {}, "text": 3, "tokens": "x"}).encode(),
    "deep nesting": DEEP,
    "deep nesting in a field": b'{"model": "smg-reference", "messages": ' + DEEP + b"}",
    "invalid UTF-8": b'{"model": "smg-reference", "messages": [{"role": "user", "content": "\xff\xfe\xfd"}]}',
    "not an object": b"[1, 2, 3]",
}
LARGE = {  # answered or refused, never a 5xx: too large for the model, or a body some routes need not have
    "empty": b"",
    "10,000 tools": json.dumps({
        "model": "smg-reference", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": f"tool_{i}", "description": "does a thing",
                                                    "parameters": {"type": "object", "properties": {}}}}
                  for i in range(10_000)]}).encode(),
    "a million-character message": json.dumps({
        "model": "smg-reference", "max_tokens": 4, "input": "word " * 200_000,
        "messages": [{"role": "user", "content": "word " * 200_000}]}).encode(),
}


def error_shaped(reply: httpx.Response, anthropic: bool) -> bool:
    body = reply.json()
    if anthropic:
        return body.get("type") == "error" and {"type", "message"} <= set(body["error"])
    return {"message", "type"} <= set(body["error"])


def test_bad_input_on_every_route_is_a_4xx_in_its_shape_and_harms_no_one():
    engine = Engine()
    served = Served("--worker", engine.url, "--tokenizer", "llama3.2", "--chat-template", "llama3",
                    "--storage", "memory", "--admin-key", ADMIN)
    good = GoodTraffic(served.base)
    router = Router()
    routes = [(method, path, route) for (method, path), route in router.exact.items()]
    routes += [(method, "/" + "/".join("nope" if part[0] == "{" else part for part in pattern), route)
               for method, pattern, route in router.patterns]
    failures, answered = [], 0
    try:
        with httpx.Client(base_url=served.base, timeout=120) as client:
            for method, path, route in routes:
                headers = {"authorization": f"Bearer {ADMIN}"} if route.admin else {}
                anthropic = route.errors is ANTHROPIC_ERRORS
                if method not in ("POST", "PUT", "PATCH"):
                    reply = client.request(method, path + "?limit=abc&order=sideways&after=%ff", headers=headers)
                    if reply.status_code >= 500 or (reply.status_code >= 400 and not error_shaped(reply, anthropic)):
                        failures.append((method, path, "query", reply.status_code, reply.text[:200]))
                    continue
                for case, body in MALFORMED.items():
                    reply = client.request(method, path, content=body, headers={**headers,
                                                                                "content-type": "application/json"})
                    if not 400 <= reply.status_code < 500 or not error_shaped(reply, anthropic):
                        failures.append((method, path, case, reply.status_code, reply.text[:200]))
                for case, body in LARGE.items():
                    reply = client.request(method, path, content=body, headers={**headers,
                                                                                "content-type": "application/json"})
                    answered += reply.status_code < 300
                    if reply.status_code >= 500 or (reply.status_code >= 400 and not error_shaped(reply, anthropic)):
                        failures.append((method, path, case, reply.status_code, reply.text[:200]))
            for path in ("/v1/chat/completions", "/v1/messages"):  # over the body limit: refused unread
                reply = client.post(path, content=b" " * (MAX_BODY + 1), headers={"content-type": "application/json"})
                if reply.status_code not in (400, 413):
                    failures.append(("POST", path, "huge body", reply.status_code, reply.text[:200]))
        good.stop()
        assert not failures, "\n".join(map(repr, failures))
        assert answered > 0  # (some large requests are fine: counting tokens of a long message)
        assert not good.failures and good.ok > 0, good.failures[:3]
    finally:
        good.stop()
        served.stop()
        engine.stop()
