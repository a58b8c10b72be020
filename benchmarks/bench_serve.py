"""`smg serve` over HTTP: smg's own HTTP/1.1 server against uvicorn running the same ASGI app.

    python -m benchmarks.bench_serve [--conc 1,16,64,256] [--rounds 2] [--duration 6]

Both serve the same gateway in front of the reference engine (``python -m smg engine --reference``,
one token per message, no delay) with the bundled Llama 3.2 tokenizer; the load is
``../shared/bench/loadgen.py`` (streaming, ~100-token prompts, 256 output tokens). Gateway pinned to
core 0, engine and load generator to core 1 (as ``gateway_vs_smg.sh`` does). The servers take turns
``--rounds`` times per concurrency (served numbers move ~5% run to run); the table shows each
one's median and smg's CPU per token as a fraction of uvicorn's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks._common import free_port, pin, wait_for_port

LOADGEN = Path(__file__).resolve().parents[2] / "shared" / "bench" / "loadgen.py"
SERVERS = ("uvicorn", "smg")


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {seconds:g} s")


def one_cell(server: str, worker: str, concurrency: int, duration: float) -> dict:
    port = free_port()
    gateway = subprocess.Popen([sys.executable, "-m", "smg", "serve", "--worker", worker, "--tokenizer", "llama3.2",
                                "--chat-template", "llama3", "--server", server, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin(0))
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/models", gateway)
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as out:
            subprocess.run([sys.executable, str(LOADGEN), "--base-url", f"http://127.0.0.1:{port}",
                            "--concurrency", str(concurrency), "--prompt-tokens", "100", "--max-tokens", "256",
                            "--duration", str(duration), "--mode", "stream", "--gateway-pid", str(gateway.pid),
                            "--json-out", out.name], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, preexec_fn=pin(1))
            return json.loads(Path(out.name).read_text().splitlines()[-1])
    finally:
        gateway.terminate()
        gateway.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conc", default="1,16,64,256")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=6.0)
    args = parser.parse_args()
    if not LOADGEN.exists():
        raise SystemExit(f"needs the load generator at {LOADGEN} (the shared/ folder beside the checkout)")
    engine_port = free_port()
    engine = subprocess.Popen([sys.executable, "-m", "smg", "engine", "--reference", "--port", str(engine_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin(1))
    try:
        wait_for_port(engine_port, 60)
        print("server  conc |    tok/s | TTFT p50 ms | CPU ms/1k tok | CPU vs uvicorn")
        for concurrency in map(int, args.conc.split(",")):
            cells: dict[str, list[dict]] = {name: [] for name in SERVERS}
            for _ in range(args.rounds):
                for name in SERVERS:
                    cells[name].append(one_cell(name, f"grpc://127.0.0.1:{engine_port}", concurrency, args.duration))
            cpu = {name: statistics.median(c["gw_cpu_s_per_1k_tok"] * 1000 for c in cells[name]) for name in SERVERS}
            for name in SERVERS:
                rate = statistics.median(c["out_tok_per_s"] for c in cells[name])
                ttft = statistics.median(c["ttft_p50_ms"] for c in cells[name])
                ratio = f"x{cpu[name] / cpu['uvicorn']:.2f}" if name != "uvicorn" else ""
                print(f"{name:7s} {concurrency:4d} | {rate:8.0f} | {ttft:11.1f} | {cpu[name]:13.1f} | {ratio:>14s}",
                      flush=True)
    finally:
        engine.terminate()
        engine.wait(30)


if __name__ == "__main__":
    main()
