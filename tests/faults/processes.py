"""Real processes for the fault tests: reference engines (``smg engine --reference``) and
``smg serve``, each started, signalled and stopped as an operator's would be."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """``smg engine --reference`` on a port of its own; :meth:`start` again serves the same port."""

    def __init__(self, *args: str) -> None:
        self.args, self.port = args, free_port()
        self.url = f"grpc://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "smg", "engine", "--reference", "--port", str(self.port),
                                      *self.args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert "serving" in line, f"the engine did not start: {line!r}"

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # (a stopped process takes no SIGTERM until it runs)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class Served:
    """``smg serve ARGS`` on a free port, until its ready line."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "smg", "serve", *args, "--port", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            assert line, "smg serve exited:\n" + "".join(self.lines)
            self.lines.append(line)
            if line.startswith("smg serving"):
                return
        raise AssertionError("smg serve did not start:\n" + "".join(self.lines))

    def workers_health(self) -> dict[str, bool]:
        """Each engine worker's health, as /readiness shows it."""
        models = httpx.get(f"{self.base}/readiness", timeout=10).json()["models"]
        return {w["url"]: w["healthy"] for m in models.values() for w in m["workers"]}

    def worker_pids(self) -> list[int]:
        """Its worker processes (``--workers N``) alive now."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(parent) == self.proc.pid and b"--worker-process" in cmdline and state != "Z":
                pids.append(int(entry.name))
        return sorted(pids)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return "".join(self.lines) + out


def engine_running(engine: Engine) -> int:
    """Requests the engine is generating now (its GetLoads)."""
    import grpc
    from smg_grpc_proto.generated import sglang_scheduler_pb2 as spb
    from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as spbg

    with grpc.insecure_channel(f"127.0.0.1:{engine.port}") as channel:
        reply = spbg.SglangSchedulerStub(channel).GetLoads(spb.GetLoadsRequest(), timeout=10)
    return sum(load.num_running_reqs + load.num_waiting_reqs for load in reply.loads)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def metric(base: str, series: str) -> float:
    """The sum of /metrics' samples whose line starts with ``series``."""
    text = httpx.get(f"{base}/metrics", headers={"connection": "close"}, timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series))


CHAT = {"model": "smg-reference", "messages": [{"role": "user", "content": "Tell me a long story."}],
        "stream": True}


class GoodTraffic:
    """Short streamed requests one after another, in a thread, counting failures."""

    def __init__(self, base: str) -> None:
        self.base, self.ok, self.failures = base, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "max_tokens": 8}) as reply:
                        body = b"".join(reply.iter_bytes())
                    if reply.status_code == 200 and body.rstrip().endswith(b"data: [DONE]") and b'"error"' not in body:
                        self.ok += 1
                    else:
                        self.failures.append((reply.status_code, body[-200:]))
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def stream(base: str, max_tokens: int) -> tuple[str, float, str]:
    """One streamed chat, read raw: ("ok" | "error event" | what went wrong, seconds it took, the
    error's message when there was one)."""
    started = time.monotonic()
    body = {"model": "smg-reference", "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "Tell me a story."}]}
    try:
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as reply:
            if reply.status_code != 200:
                error = json.loads(reply.read())["error"]  # an error status carries the API's error body
                return f"status {reply.status_code}", time.monotonic() - started, error["message"]
            events = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
    except httpx.HTTPError as exc:
        return "cut", time.monotonic() - started, repr(exc)
    took = time.monotonic() - started
    if events and events[-1] == "[DONE]" and '"error"' not in events[-2]:
        return "ok", took, ""
    if events and '"error"' in events[-1]:
        return "error event", took, json.loads(events[-1])["error"]["message"]
    return "cut without an error", took, repr(events[-2:])
