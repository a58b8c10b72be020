"""Embed the Gateway in a FastAPI app (``pip install fastapi``), next to your own routes.

    GATEWAY_WORKER=grpc://127.0.0.1:50051 GATEWAY_TOKENIZER=/path/to/model uvicorn examples.fastapi_app:app

(Start a worker with ``python -m smg engine --reference --port 50051`` to try it without a GPU.)
Your route gets typed replies; the OpenAI-compatible routes are smg's own ASGI app, mounted.
"""
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from smg import Gateway
from smg.asgi import create_app
from smg.tokenizer.templates import template_path

gateway = Gateway([os.environ.get("GATEWAY_WORKER", "grpc://127.0.0.1:50051")],
                  tokenizer=os.environ.get("GATEWAY_TOKENIZER"),
                  chat_template=os.environ.get("GATEWAY_CHAT_TEMPLATE", str(template_path("llama3"))))


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with gateway:
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/openai", create_app(gateway))  # /openai/v1/chat/completions etc.


@app.get("/summarise")
async def summarise(text: str, stream: bool = False):
    request = {"model": gateway.model, "max_tokens": 64, "stream": stream,
               "messages": [{"role": "system", "content": "Summarise in one sentence."},
                            {"role": "user", "content": text}]}
    if not stream:
        reply = await gateway.chat(request)
        return {"summary": reply.choices[0].message.content, "usage": reply.usage.total_tokens}
    return StreamingResponse(gateway.chat_sse(request), media_type="text/event-stream")
