"""Real processes for the fault tests: reference engines (``smg engine --reference``) and
``smg serve``, each started, signalled and stopped as an operator's would be."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
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
