"""Why msgspec for the API models: decode a chat request and encode a streaming chunk, msgspec
(smg's models) against pydantic v2 models of the same shape, same data, one run.

    python -m benchmarks.bench_protocol
"""
from __future__ import annotations

import json
import time

from smg.protocols import openai as oa

REQUEST = json.dumps({
    "model": "m", "stream": True, "max_tokens": 256, "temperature": 0.7, "top_p": 0.9, "stop": ["</s>"],
    "messages": [{"role": "system", "content": "You are helpful." * 20},
                 {"role": "user", "content": "What is the weather in Paris today?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                "parameters": {"type": "object", "properties": {
                                                    "city": {"type": "string"}}}}}],
}).encode()


def per_call(fn, n=20000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    from typing import Any, Optional, Union

    import pydantic

    class PFunction(pydantic.BaseModel):
        name: str
        description: Optional[str] = None
        parameters: Optional[dict[str, Any]] = None

    class PTool(pydantic.BaseModel):
        type: str = "function"
        function: PFunction

    class PRequest(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        model: str = ""
        messages: list[dict[str, Any]]
        stream: bool = False
        max_tokens: Optional[int] = None
        temperature: Optional[float] = None
        top_p: Optional[float] = None
        stop: Union[str, list[str], None] = None
        tools: Optional[list[PTool]] = None

    class PDelta(pydantic.BaseModel):
        role: Optional[str] = None
        content: Optional[str] = None

    class PChoice(pydantic.BaseModel):
        index: int
        delta: PDelta
        finish_reason: Optional[str] = None

    class PChunk(pydantic.BaseModel):
        id: str
        object: str = "chat.completion.chunk"
        created: int
        model: str
        choices: list[PChoice]

    chunk = oa.ChatCompletionChunk(id="chatcmpl-1", created=1, model="m",
                                   choices=[oa.ChunkChoice(index=0, delta=oa.Delta(content=" token"))])
    pchunk = PChunk(id="chatcmpl-1", created=1, model="m", choices=[PChoice(index=0, delta=PDelta(content=" token"))])
    rows = [
        ("decode chat request", per_call(lambda: oa.decode_request(REQUEST, oa.ChatCompletionRequest)),
         per_call(lambda: PRequest.model_validate_json(REQUEST))),
        ("build + encode chunk", per_call(lambda: oa.encode(oa.ChatCompletionChunk(
            id="chatcmpl-1", created=1, model="m", choices=[oa.ChunkChoice(index=0, delta=oa.Delta(content=" token"))]))),
         per_call(lambda: PChunk(id="chatcmpl-1", created=1, model="m", choices=[
             PChoice(index=0, delta=PDelta(content=" token"))]).model_dump_json(exclude_none=True))),
        ("encode chunk only", per_call(lambda: oa.encode(chunk)),
         per_call(lambda: pchunk.model_dump_json(exclude_none=True))),
    ]
    print(f"pydantic {pydantic.VERSION}\n{'operation':22} | {'msgspec µs':>10} | {'pydantic µs':>11} | {'ratio':>6}")
    for name, ours, theirs in rows:
        print(f"{name:22} | {ours:>10.2f} | {theirs:>11.2f} | {theirs / ours:>5.1f}x")


if __name__ == "__main__":
    main()
