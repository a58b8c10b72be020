"""Use the Gateway without HTTP: start the reference CPU engine, then chat with it in-process.

    python examples/plain_script.py

Point ``workers=`` at real SGLang/vLLM gRPC workers (and ``tokenizer=`` at the model's tokenizer
directory) to do the same against GPUs.
"""
import asyncio

from smg import Gateway
from smg.engine import ReferenceEngine
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path


async def main() -> None:
    directory = bundled_tokenizer_dir("llama3.2")
    engine = ReferenceEngine(Tokenizer.from_dir(directory), model_id="demo", tokenizer_dir=directory).server()
    port = await engine.start()
    try:
        async with Gateway([f"grpc://127.0.0.1:{port}"], chat_template=str(template_path("llama3"))) as gw:
            messages = [{"role": "user", "content": "Why put tokenization in the gateway?"}]
            reply = await gw.chat({"model": "demo", "messages": messages, "max_tokens": 24})
            print("reply:", reply.choices[0].message.content)
            print("usage:", reply.usage)
            print("streamed:", end="")
            async for chunk in gw.chat_stream({"model": "demo", "messages": messages, "max_tokens": 24,
                                               "stream": True, "stop": ["arithmetic"]}):
                for choice in chunk.choices:
                    print(choice.delta.content or "", end="", flush=True)
            print()
    finally:
        await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
