"""MCP tools: the gateway's overhead per tool round trip, the gateway running the loop (``mcp``
tools) against the loop clients run today (function tools: the client calls the MCP server itself
and sends the result back with ``previous_response_id``).

    python -m benchmarks.bench_mcp [--requests 200] [--rounds 3]

``smg serve`` (core 0, SQLite storage as it serves by default) serves two models, each from a
reference engine: ``qwen3-loop`` plays a Qwen3 model that calls ``weather`` and then answers
(``--script-by-turn``), ``qwen3-flat`` writes the same tokens in one turn (the call's text then the
answer, no tools). The MCP server of the tests (streamable HTTP) and this client share core 1; one
request at a time. Medians over ``--requests`` per condition, each condition in turn ``--rounds``
times:

* ``flat``: the same output in one request, no tool: the engine's and HTTP's share of a loop;
* ``tool``: the MCP call from this client (the tool's own time, with its transport);
* ``smg loop``: one request with the ``mcp`` tool (the gateway lists the tools, cached per
  session; runs the call; prepares and runs the second turn; stores the response);
* ``client loop``: a request with the function tool, the client's MCP call, and the result sent
  back by ``previous_response_id``.

Overhead per round trip = loop - flat - tool: what taking the call to the MCP server and its
result back into the model's next turn costs beyond the tool itself. CPU per loop: the gateway's
(/proc) and this client's.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import cpu_seconds, free_port, pin, pin_self, wait_for_port
from benchmarks.bench_serve import wait_ready

TOOL_SERVER = Path(__file__).resolve().parent.parent / "tests" / "mcp_tool_server.py"
CALL = ("<think>\nThe user wants the weather in Paris; the weather tool has it.\n</think>\n\nLet me check.\n"
        '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>')
ANSWER = "It is sunny in Paris, 21 C: a light jacket is enough."
QUESTION = "What is the weather in Paris today, and what should I wear? Please check with the tool."
WEATHER = {"type": "function", "name": "weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


async def _measure(base: str, mcp_url: str, requests: int, gateway_pid: int) -> dict:
    import resource

    import httpx
    from mcp import Client

    tool = {"type": "mcp", "server_label": "web", "server_url": mcp_url, "require_approval": "never"}
    async with httpx.AsyncClient(base_url=base, timeout=60) as http, Client(mcp_url) as mcp:
        async def create(body: dict) -> dict:
            reply = await http.post("/v1/responses", json=body)
            reply.raise_for_status()
            return reply.json()

        async def flat():
            done = await create({"model": "qwen3-flat", "input": QUESTION})
            assert done["output"][-1]["content"][0]["text"].endswith(ANSWER)

        async def tool_call():
            await mcp.call_tool("weather", {"city": "Paris"})

        async def smg_loop():
            done = await create({"model": "qwen3-loop", "input": QUESTION, "tools": [tool]})
            assert [i["type"] for i in done["output"]][-2:] == ["mcp_call", "message"], done["output"]

        async def client_loop():
            call = await create({"model": "qwen3-loop", "input": QUESTION, "tools": [WEATHER]})
            item = call["output"][-1]
            result = await mcp.call_tool(item["name"], json.loads(item["arguments"]))
            output = "\n".join(block.text for block in result.content if block.type == "text")
            done = await create({"model": "qwen3-loop", "previous_response_id": call["id"], "tools": [WEATHER],
                                 "input": [{"type": "function_call_output", "call_id": item["call_id"],
                                            "output": output}]})
            assert done["output"][-1]["content"][0]["text"] == ANSWER

        def own_cpu() -> float:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return usage.ru_utime + usage.ru_stime

        cells = {}
        for name, fn in (("flat", flat), ("tool", tool_call), ("smg loop", smg_loop), ("client loop", client_loop)):
            await fn()  # (warm: sessions, caches)
            times = []
            gateway0, client0 = cpu_seconds(gateway_pid), own_cpu()
            for _ in range(requests):
                start = time.perf_counter()
                await fn()
                times.append(time.perf_counter() - start)
            cells[name] = {"ms": statistics.median(times) * 1e3,
                           "gateway_cpu_ms": (cpu_seconds(gateway_pid) - gateway0) / requests * 1e3,
                           "client_cpu_ms": (own_cpu() - client0) / requests * 1e3}
        return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pin_self(1)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("call", CALL), ("answer", ANSWER), ("flat", f"{CALL}\n{ANSWER}")):
            (Path(tmp) / f"{name}.txt").write_text(text, encoding="utf-8")
        loop_port, flat_port, port, mcp_port = free_port(), free_port(), free_port(), free_port()
        engine = [sys.executable, "-m", "smg", "engine", "--reference", "--mode", "script"]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "preexec_fn": pin(1)}
        processes = [
            subprocess.Popen([*engine, "--port", str(loop_port), "--script", f"{tmp}/call.txt", "--script",
                              f"{tmp}/answer.txt", "--script-by-turn"], **quiet),
            subprocess.Popen([*engine, "--port", str(flat_port), "--script", f"{tmp}/flat.txt"], **quiet),
            subprocess.Popen([sys.executable, str(TOOL_SERVER), "http", str(mcp_port), "--label", "web"], **quiet)]
        try:
            for waited in (loop_port, flat_port, mcp_port):
                wait_for_port(waited, 60)
            models = [{"name": name, "workers": [f"grpc://127.0.0.1:{engine_port}"], "tokenizer": "llama3.2",
                       "chat_template": "chatml_qwen3"}
                      for name, engine_port in (("qwen3-loop", loop_port), ("qwen3-flat", flat_port))]
            config = Path(tmp) / "gateway.json"
            config.write_text(json.dumps({"models": models, "port": port, "url_allow_list": ["127.0.0.1"],
                                          "storage": {"url": f"sqlite:///{tmp}/smg.sqlite3"}}))
            gateway = subprocess.Popen([sys.executable, "-m", "smg", "serve", "--config", str(config)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin(0))
            processes.append(gateway)
            wait_ready(f"http://127.0.0.1:{port}/v1/models", gateway)
            for _ in range(args.rounds):
                rounds.append(asyncio.run(_measure(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mcp_port}/mcp",
                                                   args.requests, gateway.pid)))
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
    keys = ("ms", "gateway_cpu_ms", "client_cpu_ms")
    cell = {name: {key: statistics.median(r[name][key] for r in rounds) for key in keys} for name in rounds[0]}
    base = cell["flat"]["ms"] + cell["tool"]["ms"]
    for name, values in cell.items():
        row = {"condition": name, **{key: round(value, 2) for key, value in values.items()}}
        if name.endswith("loop"):
            row["overhead_ms"] = round(values["ms"] - base, 2)
        print(json.dumps(row), flush=True)
    smg, client = (cell[name]["ms"] - base for name in ("smg loop", "client loop"))
    cpu = [cell[name]["gateway_cpu_ms"] + cell[name]["client_cpu_ms"] for name in ("smg loop", "client loop")]
    print(json.dumps({"overhead_smg_vs_client": round(smg / client, 2) if client > 0 else None,
                      "loop_ms_smg_vs_client": round(cell["smg loop"]["ms"] / cell["client loop"]["ms"], 2),
                      "cpu_smg_vs_client": round(cpu[0] / cpu[1], 2)}))


if __name__ == "__main__":
    main()
