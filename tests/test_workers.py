"""smg serve --workers N: worker processes on one port, one /metrics, the server's limits,
supervision; and an app's own worker processes (uvicorn --workers), one Gateway each."""
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from faults.processes import Served, free_port, metric

pytestmark = pytest.mark.end_to_end

CHAT = {"model": "smg-demo", "messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 4}


def chat(base: str, headers: dict | None = None, **extra) -> httpx.Response:
    # a connection per request: the kernel spreads connections, not requests, over the processes
    return httpx.post(f"{base}/v1/chat/completions", json={**CHAT, **extra},
                      headers={"connection": "close", **(headers or {})}, timeout=60)


def test_worker_processes_share_the_port_and_metrics_and_come_back_when_one_dies():
    served = Served("--demo", "--workers", "2")
    try:
        pids = served.worker_pids()
        assert len(pids) == 2
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: chat(served.base), range(24)))
        assert all(r.status_code == 200 for r in replies)
        # 24 connections spread over two processes; whichever answers /metrics counts them all
        for _ in range(4):
            assert metric(served.base, 'smg_requests_total{route="chat",stream="false"}') == 24
            assert metric(served.base, 'smg_worker_healthy{model="smg-demo"') == 1
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(served.worker_pids()) < 2 or pids[0] in served.worker_pids():
            assert time.monotonic() < deadline, "the worker was not started again"
            time.sleep(0.2)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: chat(served.base), range(16)))
        assert all(r.status_code == 200 for r in replies)
        assert metric(served.base, 'smg_requests_total{route="chat",stream="false"}') == 40  # the dead one's too
    finally:
        log = served.stop()
    assert "worker process 0" in log and "exited with code -9; starting it again" in log
    assert served.proc.returncode == 0 and not served.worker_pids()


def test_admission_and_rate_limits_are_the_servers_not_each_processs(tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([{"name": "team", "key": "sk-team", "requests_per_minute": 5},
                                {"name": "ops", "key": "sk-ops"}]))
    served = Served("--demo", "--demo-delay-ms", "150", "--workers", "2", "--api-keys-file", str(keys),
                    "--max-concurrent-requests", "1", "--max-queue-size", "0")
    try:
        ops = {"authorization": "Bearer sk-ops"}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: chat(served.base, max_tokens=8, headers=ops), range(8)))
        # one slot for the server: of 8 requests at once (on connections the kernel spread over
        # both processes), one runs and the rest are refused
        codes = sorted(r.status_code for r in replies)
        assert codes.count(200) == 1 and codes.count(429) == 7, codes
        assert all(r.json()["error"]["type"] for r in replies if r.status_code == 429)
        team = {"authorization": "Bearer sk-team"}
        codes = [chat(served.base, headers=team).status_code for _ in range(9)]
        assert codes.count(200) == 5 and codes[-1] == 429, codes  # 5 a minute, whichever process answers
    finally:
        served.stop()


def test_a_slot_held_by_a_killed_worker_returns_to_the_server():
    served = Served("--demo", "--demo-delay-ms", "100", "--workers", "2", "--max-concurrent-requests", "1",
                    "--max-queue-size", "0")
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            long = pool.submit(lambda: chat(served.base, max_tokens=200))
            time.sleep(1.0)
            assert chat(served.base).status_code == 429  # the slot is held
            for pid in served.worker_pids():  # the one holding it among them
                os.kill(pid, signal.SIGKILL)
            with pytest.raises(httpx.HTTPError):
                long.result().raise_for_status()
        deadline = time.monotonic() + 30
        while True:
            try:
                if chat(served.base).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the dead worker's slot never came back"
            time.sleep(0.3)
    finally:
        served.stop()


APP = """
import os
from smg import Gateway
from smg.asgi import create_app

def app():
    # one Gateway per worker process, made in the process (never shared across a fork)
    return create_app(Gateway(workers=[os.environ["ENGINE"]], tokenizer=os.environ["TOKENIZER"],
                              chat_template="llama3", model="smg-demo"))
"""


def test_an_apps_own_uvicorn_workers_run_a_gateway_each(tmp_path, llama_dir):
    (tmp_path / "smg_app.py").write_text(APP)
    engine_port, port = free_port(), free_port()
    engine = subprocess.Popen([sys.executable, "-m", "smg", "engine", "--reference", "--port", str(engine_port)],
                              stdout=subprocess.PIPE, text=True)
    assert "serving" in engine.stdout.readline()
    from smg.shared_state import SharedState

    SharedState.create(str(tmp_path / "shared")).close()  # the server's state, as docs/serving.md says
    (tmp_path / "metrics").mkdir()
    env = {**os.environ, "ENGINE": f"grpc://127.0.0.1:{engine_port}", "TOKENIZER": str(llama_dir),
           "PYTHONPATH": str(tmp_path), "SMG_SHARED_STATE": str(tmp_path / "shared"),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    app = subprocess.Popen([sys.executable, "-m", "uvicorn", "smg_app:app", "--factory", "--workers", "2",
                            "--port", str(port), "--log-level", "warning"], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and app.poll() is None, "uvicorn did not start"
            time.sleep(0.3)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: chat(base), range(16)))
        assert all(r.status_code == 200 and r.json()["choices"][0]["message"]["content"] for r in replies)
        for _ in range(4):  # whichever process answers, the server's count
            assert metric(base, 'smg_requests_total{route="chat",stream="false"}') == 16
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(60)
        engine.terminate()
        engine.wait(30)
