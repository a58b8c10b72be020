"""An engine that stops answering (SIGSTOP) for 20 s under streams: the inter-token timeout ends
its streams with an error event, the other engine's streams and new requests go on, and the
stopped engine is out of rotation until it answers again, then back."""
import concurrent.futures
import signal
import time

import openai
import pytest

from faults.processes import Engine, Served

pytestmark = pytest.mark.end_to_end

STOPPED_FOR = 20.0


def stream(base: str, max_tokens: int) -> tuple[str, float, int]:
    """One streamed chat: ("ok" | the error, seconds it took, tokens seen)."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=60)
    started, tokens = time.monotonic(), 0
    try:
        for chunk in client.chat.completions.create(model="smg-reference", max_tokens=max_tokens, stream=True,
                                                    messages=[{"role": "user", "content": "Tell me a story."}]):
            if chunk.choices and chunk.choices[0].delta.content:
                tokens += 1
        return "ok", time.monotonic() - started, tokens
    except openai.APIError as exc:
        return str(exc), time.monotonic() - started, tokens


def test_a_stopped_engine_ends_its_streams_in_time_and_returns_after(tmp_path):
    engines = [Engine("--delay-ms", "20"), Engine("--delay-ms", "20")]
    served = Served(*(a for e in engines for a in ("--worker", e.url)), "--tokenizer", "llama3.2",
                    "--chat-template", "llama3", "--policy", "round_robin", "--inter-token-timeout", "1",
                    "--first-token-timeout", "2", "--health-interval", "0.5", "--storage", "memory")
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            streams = [pool.submit(stream, served.base, 200) for _ in range(10)]  # ~4 s each
            time.sleep(1.0)
            engines[0].signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            results = [s.result(timeout=60) for s in streams]
            # requests while it is stopped: served by the other engine (the stopped one is out of rotation)
            during = [pool.submit(stream, served.base, 5) for _ in range(6)]
            assert all(r.result(timeout=60)[0] == "ok" for r in during)
        failed = [r for r in results if r[0] != "ok"]
        assert 3 <= len(failed) <= 7, results  # round robin: about half were on the stopped engine
        for error, took, tokens in failed:  # an error event, within the limit (and its check) of the stall
            assert "no token from the engine in 1 s" in error and tokens > 0 and took < 1.0 + 1.0 + 1.5, results
        assert all(tokens == 200 for status, _, tokens in results if status == "ok")
        assert served.workers_health() == {engines[0].url: False, engines[1].url: True}
        time.sleep(max(0.0, STOPPED_FOR - (time.monotonic() - stopped_at)))
        engines[0].signal(signal.SIGCONT)
        deadline = time.monotonic() + 25  # (the health probe's backoff, 1 s doubling, at most this late)
        while not served.workers_health()[engines[0].url]:
            assert time.monotonic() < deadline, "the engine never came back into rotation"
            time.sleep(0.25)
        results = [stream(served.base, 5) for _ in range(4)]
        assert all(r[0] == "ok" for r in results), results
    finally:
        served.stop()
        for engine in engines:
            engine.stop()
